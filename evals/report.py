"""Turn prediction records into metrics.json (fixed keys), details.json, report.md and the PNG plots."""

from __future__ import annotations

import json
import shlex
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from evals import metrics as m
from evals import plots
from evals.calibration import NEVER, FittedCalibration
from evals.datasets import LabelCodec, fold_label

if TYPE_CHECKING:
    from evals.runner import EvalConfig

OUT_OF_TAXONOMY = "<out of taxonomy>"
ERROR = "<error>"


def _axis_view(records: list[dict[str, Any]], axis: str, codec: LabelCodec) -> dict[str, list[Any]]:
    """Per scored row of an axis: gold id, predicted id, confidence, flags (raw names for display)."""
    view: dict[str, list[Any]] = {k: [] for k in ("gold", "pred", "conf", "flagged", "oos", "gold_name", "pred_name", "threshold")}
    for r in records:
        if not r["oos_gold"] and not r["gold"].get(axis):
            continue  # no gold label for this axis in this row
        pred = r.get("prediction")
        label = pred["labels"][axis] if pred else None
        view["gold"].append(r["gold_id"].get(axis))
        view["pred"].append(label["label"] if label else ERROR)
        view["conf"].append(float(label["confidence"]) if label else 0.0)
        view["flagged"].append(bool(pred and pred.get("out_of_scope")))
        view["oos"].append(bool(r["oos_gold"]))
        gid = r["gold_id"].get(axis)
        view["gold_name"].append(codec.decode(axis, gid) if gid else (r["gold"].get(axis) if r["oos_gold"] else out_of_taxonomy(r["gold"][axis])))
        view["pred_name"].append(codec.decode(axis, label["label"]) if label else ERROR)
        view["threshold"].append((r.get("threshold") or {}).get(axis))
    return view


def out_of_taxonomy(raw: str) -> str:
    """A gold label the taxonomy lacks, as a class of its own: each such label is one more class in macro-F1, as in
    sklearn's `average="macro"` over the raw labels (one pooled class scored two unknown labels as one zero)."""
    return f"{OUT_OF_TAXONOMY} {fold_label(raw)}"


def compute_metrics(records: list[dict[str, Any]], *, axes: list[str], codec: LabelCodec, fitted: FittedCalibration, mode: str, target: float, oos: bool) -> tuple[dict[str, Any], dict[str, Any]]:
    calibration = fitted.to_calibration()
    result: dict[str, Any] = {"n": len(records), "mode": mode, "axes": {}}
    details: dict[str, Any] = {"axes": {}}
    for axis in axes:
        v = _axis_view(records, axis, codec)
        ins = [i for i, o in enumerate(v["oos"]) if not o]
        gold = [v["gold"][i] for i in ins]
        pred = [v["pred"][i] for i in ins]
        conf = [v["conf"][i] for i in ins]
        correct = [g is not None and g == p for g, p in zip(gold, pred, strict=True)]
        correct_all = [(not o) and g is not None and g == p for g, p, o in zip(v["gold"], v["pred"], v["oos"], strict=True)]
        # the threshold recorded with each row (pooled cross-validation runs), else the run's calibration
        thresholds = [t if t is not None else calibration.threshold(axis, p) for t, p in zip(v["threshold"], v["pred"], strict=True)]
        coverage, precision, n_applied = m.auto_apply(
            list(range(len(thresholds))), v["conf"], correct_all, thresholds.__getitem__, blocked=v["flagged"]
        )
        result["axes"][axis] = {
            "accuracy": round(m.accuracy(gold, pred), 4),
            "macro_f1": round(m.macro_f1([v["gold_name"][i] for i in ins], [v["pred_name"][i] for i in ins]), 4),
            "ece": round(m.expected_calibration_error(conf, correct), 4),
            "out_of_taxonomy": sum(g is None for g in gold),
            "auto_apply": {"target_precision": target, "coverage": round(coverage, 4), "precision": round(precision, 4)},
        }
        gold_names = [v["gold_name"][i] for i in ins]
        pred_names = [v["pred_name"][i] for i in ins]
        details["axes"][axis] = {
            "n_scored": len(ins),
            "auto_applied": n_applied,
            "per_class": [
                {**s.__dict__, "threshold": calibration.threshold(axis, codec.encode(axis, s.label) or s.label)}
                for s in m.per_class(gold_names, pred_names)
            ],
            "top_confusions": m.top_confusions(gold_names, pred_names),
            "thresholds": fitted.thresholds.get(axis, {}),
            # the pictures' numbers without ticket text (the UI draws and overlays them for committed reports)
            "confusion": m.confusion_cells(gold_names, pred_names),
            "reliability": [
                {k: round(b[k], 4) for k in ("confidence", "accuracy")} | {"count": b["count"]}
                for b in m.reliability_bins(conf, correct)
                if b["count"]
            ],
            "coverage_curve": m.thinned_curve(v["conf"], correct_all),
            "_plot": {"gold": gold_names, "pred": pred_names, "conf": conf, "correct": correct, "conf_all": v["conf"], "correct_all": correct_all, "coverage": coverage, "precision": precision},
        }
    if oos:
        gold_oos = [bool(r["oos_gold"]) for r in records]
        flagged = [bool(r.get("prediction") and r["prediction"].get("out_of_scope")) for r in records]
        all_right = [
            bool(r.get("prediction")) and all(r["gold_id"].get(a) is not None and r["prediction"]["labels"][a]["label"] == r["gold_id"][a] for a in axes if r["gold"].get(a))
            for r in records
        ]
        stats = m.oos_metrics(gold_oos, flagged, all_right)
        result["oos"] = {"recall": round(stats["recall"], 4), "in_scope_accuracy": round(stats["in_scope_accuracy"], 4)}
        details["oos"] = stats
    else:
        result["oos"] = None
    walls = [float(r.get("wall_ms", 0.0)) for r in records]
    result["latency_ms"] = {"p50": round(m.percentile(walls, 50), 1), "p95": round(m.percentile(walls, 95), 1)}
    total_s = sum(walls) / 1000
    result["throughput_per_s"] = round(len(records) / total_s, 2) if total_s > 0 else 0.0
    usage = {"prompt_tokens": 0, "completion_tokens": 0}
    for r in records:
        u = (r.get("prediction") or {}).get("usage") or {}
        usage["prompt_tokens"] += int(u.get("prompt_tokens", 0))
        usage["completion_tokens"] += int(u.get("completion_tokens", 0))
    result["usage"] = usage
    details["latency_ms"] = walls
    details["errors"] = sum(1 for r in records if not r.get("prediction"))
    decisions: dict[str, int] = {}
    for r in records:
        d = (r.get("prediction") or {}).get("decision", "error")
        decisions[d] = decisions.get(d, 0) + 1
    details["decisions"] = decisions
    return result, details


def write_outputs(out: Path, records: list[dict[str, Any]], *, axes: list[str], codec: LabelCodec, fitted: FittedCalibration, cfg: EvalConfig, context: dict[str, Any]) -> dict[str, Any]:
    metrics, details = compute_metrics(
        records, axes=axes, codec=codec, fitted=fitted, mode=cfg.mode, target=cfg.target_precision, oos=cfg.oos_label is not None
    )
    images: list[tuple[str, str]] = []
    for axis in axes:
        p = details["axes"][axis].pop("_plot")
        images.append((f"{axis}: confusion matrix", plots.confusion_matrix(p["gold"], p["pred"], out / f"confusion_{axis}.png", title=f"{axis} confusion ({cfg.mode})").name))
        images.append(
            (
                f"{axis}: coverage vs precision",
                plots.coverage_precision(
                    p["conf_all"], p["correct_all"], out / f"coverage_precision_{axis}.png", title=f"{axis}: auto-apply coverage vs precision",
                    target=cfg.target_precision, operating_point=(p["coverage"], p["precision"]) if p["coverage"] else None,
                ).name,
            )
        )
        images.append((f"{axis}: reliability", plots.reliability(p["conf"], p["correct"], out / f"reliability_{axis}.png", title=f"{axis} reliability").name))
        scores = [m.ClassScore(**{k: v for k, v in s.items() if k != "threshold"}) for s in details["axes"][axis]["per_class"]]
        images.append((f"{axis}: per-class F1", plots.per_class_f1(scores, out / f"per_class_f1_{axis}.png", title=f"{axis}: per-class F1").name))
    images.append(("latency", plots.latency_histogram(details["latency_ms"], out / "latency.png", title=f"latency per ticket ({cfg.mode})").name))
    details["context"] = context
    details["calibration"] = {
        "thresholds": fitted.thresholds, "out_of_scope_threshold": fitted.out_of_scope_threshold,
        "out_of_scope_score": fitted.out_of_scope_score, "fitted_on": fitted.fitted_on,
    }
    details["command"] = "triage eval " + " ".join(shlex.quote(a) for a in sys.argv[2:]) if len(sys.argv) > 1 and sys.argv[1] == "eval" else None
    (out / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n", encoding="utf-8")
    slim = {k: v for k, v in details.items() if k != "latency_ms"}
    (out / "details.json").write_text(json.dumps(slim, indent=2, default=str) + "\n", encoding="utf-8")
    (out / "report.md").write_text(render_report(metrics, details, images, cfg), encoding="utf-8")
    return metrics


def _pct(x: float) -> str:
    return f"{100 * x:.1f} %"


def _left_out(left: dict[str, Any]) -> list[str]:
    """One line per kind of row the run could not use, with the first ids, so nothing is lost silently."""
    def ids(found: list[str]) -> str:
        return ", ".join(f"`{i}`" for i in found[:10]) + (f" and {len(found) - 10} more" if len(found) > 10 else "")

    lines = []
    if left.get("train_without_text"):
        lines.append(f"- left out of train: {len(left['train_without_text'])} row(s) without text ({ids(left['train_without_text'])})")
    if left.get("train_without_label"):
        lines.append(f"- left out of train: {left['train_without_label']} row(s) with no label on any scored axis")
    for axis, values in (left.get("train_unknown_labels") or {}).items():
        if values:
            shown = ", ".join(f"{v!r} × {n}" for v, n in sorted(values.items(), key=lambda kv: -kv[1])[:10])
            lines.append(f"- train {axis} labels that are not in the taxonomy, not learned: {shown} (`--taxonomy auto` takes the train file's labels)")
    if left.get("test_without_text"):
        lines.append(f"- left out of test: {len(left['test_without_text'])} row(s) without text ({ids(left['test_without_text'])})")
    for axis, found in (left.get("test_without_label") or {}).items():
        if found:
            lines.append(f"- not scored on {axis}: {len(found)} test row(s) with an empty label ({ids(found)})")
    return lines


def _thresholds_line(calibration: dict[str, Any], cfg: EvalConfig) -> str:
    """How the thresholds were fitted: the folds the run used (evals.calibration.default_folds), or why none were."""
    fitted_on = calibration.get("fitted_on") or {}
    if "folds" not in fitted_on:
        return f"- thresholds: {fitted_on.get('note', 'none fitted')}, target precision {cfg.target_precision}"
    return f"- thresholds fitted by {fitted_on['folds']}-fold cross-validation on train only, target precision {cfg.target_precision}"


def _llm_line(llm: dict[str, Any] | None, mode: str, unanswered: list[str] | None = None, n: int = 0) -> list[str]:
    """Which LLM labelled an llm/hybrid run, (hybrid) the vote weight `decide` gave it on each axis, and the rows it
    gave no answer for (labelled without it: a run whose endpoint was down read as an LLM run)."""
    if not llm or mode == "proposal":
        return []
    weights = ", ".join(f"{axis} {w:g}" for axis, w in llm["vote_weight"].items()) if mode == "hybrid" else "1 (the LLM alone)"
    lines = [f"- LLM `{llm['model']}` at {llm['base_url']}; vote weight: {weights}"]
    if unanswered:
        without = "the proposal's alone" if mode == "hybrid" else "the taxonomy's fallbacks"
        shown = ", ".join(f"`{i}`" for i in unanswered[:10]) + (f" and {len(unanswered) - 10} more" if len(unanswered) > 10 else "")
        lines.append(f"- **the LLM gave no answer for {len(unanswered)} of {n} rows** ({shown}): their labels are {without} (the reason is in each row's warnings in predictions.jsonl)")
    return lines


def render_report(metrics: dict[str, Any], details: dict[str, Any], images: list[tuple[str, str]], cfg: EvalConfig) -> str:
    ctx = details["context"]
    lines = [
        f"# Eval report: {Path(str(cfg.test)).name} ({metrics['mode']} mode)",
        "",
        f"- train: `{Path(ctx['train']).name}` ({ctx['n_train']} labelled rows "
        + ("read for the labels, none stored: the LLM alone" if metrics["mode"] == "llm" else "stored")
        + (f", {ctx['dropped_oos_train']} out-of-scope rows dropped" if ctx["dropped_oos_train"] else "")
        + f"); test: `{Path(ctx['test']).name}` ({metrics['n']} rows" + (f", --limit {cfg.limit} seed {cfg.seed}" if cfg.limit else "") + ")",
        f"- taxonomy `{ctx['taxonomy']}`, embedder `{ctx['embedder']}`, head {ctx['head']}",
        *_llm_line(ctx.get("llm"), metrics["mode"], ctx.get("llm_unanswered"), metrics["n"]),
        _thresholds_line(details.get("calibration") or {}, cfg),
        f"- timings: {ctx['timings']}",
        *_left_out(ctx.get("left_out") or {}),
    ]
    if details.get("command"):
        lines.append(f"- command: `{details['command']}`")
    lines += ["", "## Summary", "", "| axis | accuracy | macro-F1 | ECE | out of taxonomy | auto-apply coverage | auto-apply precision |", "|---|---:|---:|---:|---:|---:|---:|"]
    for axis, a in metrics["axes"].items():
        aa = a["auto_apply"]
        lines.append(f"| {axis} | {a['accuracy']:.4f} | {a['macro_f1']:.4f} | {a['ece']:.4f} | {a['out_of_taxonomy']} | {_pct(aa['coverage'])} | {aa['precision']:.4f} |")
    lines.append("")
    if metrics["oos"] is not None:
        o = details["oos"]
        lines += [
            "## Out of scope",
            "",
            f"OOS recall {metrics['oos']['recall']:.4f} ({o['n_oos']} out-of-scope test rows); in-scope accuracy {metrics['oos']['in_scope_accuracy']:.4f} "
            f"({o['n_in_scope']} in-scope rows, {_pct(o['false_flag_rate'])} wrongly flagged). "
            f"Threshold on the in-scope score ({details['calibration'].get('out_of_scope_score', 'similarity')}) {details['calibration']['out_of_scope_threshold']}, fitted on train: {details['calibration']['fitted_on'].get('oos')}.",
            "",
        ]
    lines += [
        "## Speed and cost",
        "",
        f"latency p50 {metrics['latency_ms']['p50']} ms, p95 {metrics['latency_ms']['p95']} ms; throughput {metrics['throughput_per_s']} tickets/s (one process; "
        f"each ticket through the graph with its vector embedded beforehand in batches: `embed_test_s` in the timings); "
        f"tokens: {metrics['usage']['prompt_tokens']} prompt + {metrics['usage']['completion_tokens']} completion; decisions: {details['decisions']}; errors: {details['errors']}.",
        "",
    ]
    for axis, d in details["axes"].items():
        lines += [f"## {axis}: per class", "", "| label | support | predicted | precision | recall | F1 | threshold |", "|---|---:|---:|---:|---:|---:|---:|"]
        for s in sorted(d["per_class"], key=lambda s: (-s["support"], s["label"])):
            t = s["threshold"]
            t_text = "-" if s["label"].startswith(OUT_OF_TAXONOMY) else "never" if t >= NEVER else f"{t:.3f}"  # not a label: no threshold
            lines.append(f"| {s['label']} | {s['support']} | {s['predicted']} | {s['precision']:.3f} | {s['recall']:.3f} | {s['f1']:.3f} | {t_text} |")
        lines += ["", "Most frequent confusions (gold → predicted: rows):", ""]
        lines += [f"- {g} → {p}: {n}" for g, p, n in d["top_confusions"]] or ["- none"]
        lines.append("")
    lines += ["## Plots", ""]
    lines += [f"![{title}]({name})" for title, name in images]
    lines.append("")
    return "\n".join(lines)
