"""`make bench` = `python -m evals.bench`: the shipped eval configs (evals/configs/*.yaml) on ../shared/datasets.

Each config names a split (a function of evals.splits that writes train/test files under the git-ignored
evals/runs/splits/), the columns, the taxonomy, and its runs (proposal mode at full size, hybrid and the LLM alone
on the same --limit sample). Each run goes through the same code as `triage eval` (evals.runner.run_eval) into evals/runs/<name>/<mode>/
(resumable); the committed reference report (metrics.json, report.md, details.json, calibration.json, plots; no
predictions, no ticket text) is copied to evals/reports/<name>/<mode>/, and evals/reports/SUMMARY.md gets a table
with each target and whether it holds.

    python -m evals.bench                       # everything
    python -m evals.bench --only banking77 tier # some configs
    python -m evals.bench --no-hybrid           # proposal mode only (no LLM)
    python -m evals.bench --fresh               # ignore earlier runs (re-classify)
    python -m evals.bench --modes hybrid --fresh # re-run only the hybrid rows (a new vote weight, say)
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path
from typing import Any

import yaml

from agent.settings import REPO_ROOT, Settings
from evals import splits
from evals.calibration import FittedCalibration
from evals.datasets import LabelCodec
from evals.report import write_outputs
from evals.runner import EvalConfig, clear_run, read_predictions, run_eval, run_fingerprint, run_predictions

CONFIGS = REPO_ROOT / "evals" / "configs"
REPORTS = REPO_ROOT / "evals" / "reports"
COPY = ("metrics.json", "report.md", "details.json", "calibration.json")
# The LLM vote weight written into the shipped calibration (None = the setting's: agent.settings.MEASURED_VOTE_WEIGHTS,
# per axis). Measured by the hybrid runs below against proposal on the same rows: evals/README.md, "Hybrid and the LLM's vote".
LLM_VOTE_WEIGHT: float | dict[str, float] | None = None


def load_configs(names: list[str] | None) -> list[dict[str, Any]]:
    configs = []
    for path in sorted(CONFIGS.glob("*.yaml")):
        cfg = yaml.safe_load(path.read_text(encoding="utf-8"))
        if names and cfg["name"] not in names:
            continue
        configs.append(cfg)
    if names and len(configs) != len(names):
        known = [yaml.safe_load(p.read_text())["name"] for p in CONFIGS.glob("*.yaml")]
        raise SystemExit(f"unknown config in {names}; known: {known}")
    return configs


def _taxonomy(spec: str | None) -> str | None:
    if spec in (None, "default"):
        return None
    return spec


def copy_report(run_dir: Path, dest: Path) -> None:
    if dest.exists():
        shutil.rmtree(dest)
    dest.mkdir(parents=True)
    for name in COPY:
        if (run_dir / name).is_file():
            shutil.copy2(run_dir / name, dest / name)
    for png in run_dir.glob("*.png"):
        shutil.copy2(png, dest / png.name)


def outdated_cleared(cfg: EvalConfig) -> EvalConfig:
    """The bench owns its run directories: one left by other code or options is cleared, not refused."""
    run_file = cfg.out / "run.json"
    if run_file.is_file():
        stored = json.loads(run_file.read_text(encoding="utf-8")).get("fingerprint")
        if stored != run_fingerprint(cfg, Settings()):
            clear_run(cfg.out)
    return cfg


def run_config(cfg: dict[str, Any], *, hybrid: bool, fresh: bool, modes: set[str] | None = None) -> list[dict[str, Any]]:
    name = cfg["name"]
    split_dir = splits.RUNS / "splits" / name
    rows = []
    for run in cfg["runs"]:
        mode = run["mode"]
        if (mode != "proposal" and not hybrid) or (modes is not None and mode not in modes):
            continue
        out = splits.RUNS / name / mode
        if fresh:
            for run_dir in [out, *sorted(out.glob("fold*"))]:  # cross-validated configs keep a run per fold
                clear_run(run_dir)
        started = time.perf_counter()
        base = dict(
            text=cfg["text"], labels=cfg["labels"], taxonomy=_taxonomy(cfg.get("taxonomy")), mode=mode, limit=run.get("limit"),
            seed=run.get("seed", 0), target_precision=cfg.get("target_precision", 0.9), oos_label=cfg.get("oos_label"),
            cache_dir=splits.RUNS / ".cache",
        )
        print(f"== {name} / {mode}" + (f" (limit {run['limit']})" if run.get("limit") else ""), flush=True)
        if cfg["prepare"] == "tier_folds":
            metrics = run_folds(cfg, split_dir, out, base)
        else:
            train, test = getattr(splits, cfg["prepare"])(split_dir)
            metrics = run_eval(outdated_cleared(EvalConfig(train=train, test=test, out=out, **base)), progress=True)
        copy_report(out, REPORTS / name / mode)
        wall = round(time.perf_counter() - started, 1)
        # a resumed run reports the run(s) that did the work (cross-validated configs: the sum of their folds)
        did_work = sum(float(json.loads(f.read_text()).get("timings", {}).get("total_s", 0.0)) for f in [*out.glob("run.json"), *out.glob("fold*/run.json")])
        wall = round(max(wall, did_work), 1)
        row = {"name": name, "mode": mode, "limit": run.get("limit"), "metrics": metrics, "targets": cfg.get("targets", {}), "wall_s": wall}
        if mode != "proposal":
            row["paired_proposal"] = paired_accuracy(splits.RUNS / name / "proposal", out, list(cfg["labels"]))
        rows.append(row)
        print(json.dumps(metrics["axes"]), flush=True)
    return rows


def run_folds(cfg: dict[str, Any], split_dir: Path, out: Path, base: dict[str, Any]) -> dict[str, Any]:
    """K-fold cross-validation: one run per fold, predictions pooled into one report in `out`."""
    pairs = splits.tier_folds(split_dir, folds=cfg.get("folds", 5), extra_train=splits.seed_tier_rows())
    records: list[dict[str, Any]] = []
    fold_cfg = None
    for k, (train, test) in enumerate(pairs):
        fold_cfg = EvalConfig(train=train, test=test, out=out / f"fold{k}", **base)
        run_eval(outdated_cleared(fold_cfg), progress=True)
        records += list(read_predictions(out / f"fold{k}" / "predictions.jsonl").values())
    assert fold_cfg is not None
    from agent.taxonomy import load_taxonomy

    taxonomy = load_taxonomy(out / "fold0" / "taxonomy.yaml")
    codec = LabelCodec.for_taxonomy(taxonomy, list(cfg["labels"]))
    fitted = FittedCalibration.read(out / "fold0" / "calibration.json")
    folds_n = len(pairs)
    context = json.loads((out / "fold0" / "details.json").read_text())["context"]
    context.update(test=f"{context['test']} (+ {folds_n - 1} other folds, pooled)", n_train=f"{context['n_train']} per fold")
    combined = EvalConfig(**{**fold_cfg.__dict__, "out": out})
    shutil.copy2(out / "fold0" / "calibration.json", out / "calibration.json")
    return write_outputs(out, records, axes=list(cfg["labels"]), codec=codec, fitted=fitted, cfg=combined, context=context)


def paired_accuracy(proposal_dir: Path, other_dir: Path, axes: list[str]) -> dict[str, dict[str, float]] | None:
    """Accuracy of the proposal run and of another run on the same test rows (a --limit sample of the same split;
    cross-validated configs keep their predictions per fold)."""
    base, other = run_predictions(proposal_dir), run_predictions(other_dir)
    ids = [i for i in other if i in base]
    if not ids:
        return None

    def acc(records: dict[str, Any], axis: str) -> float:
        hits = [
            bool(records[i].get("prediction")) and records[i]["gold_id"].get(axis) is not None
            and records[i]["prediction"]["labels"][axis]["label"] == records[i]["gold_id"][axis]
            for i in ids
        ]
        return round(sum(hits) / len(hits), 4)

    return {axis: {"n": len(ids), "proposal": acc(base, axis), "other": acc(other, axis)} for axis in axes}


def _get(metrics: dict[str, Any], key: str) -> float | None:
    parts = key.split(".")
    node: Any = metrics["axes"] if parts[0] in metrics["axes"] else metrics
    for part in parts:
        if not isinstance(node, dict) or part not in node:
            return None
        node = node[part]
    return float(node)


def within_bar(mode: str, delta: float) -> str:
    """The 1-point bar is the hybrid's (the graph as shipped); the LLM alone is shown for what it knows, unbarred."""
    if mode != "hybrid":
        return "n/a"
    return "yes" if delta >= -0.01 else "**no**"


def summary_table(rows: list[dict[str, Any]]) -> str:
    lines = [
        "# Bench summary",
        "",
        "Written by `python -m evals.bench` (= `make bench`) on a 2-core x86_64 CPU, no GPU. Reports per run under",
        "`evals/reports/<config>/<mode>/`. Targets: the accuracy bars of the eval issue.",
        "",
        "| config | mode | n | axis | accuracy | macro-F1 | ECE | auto-apply coverage @ precision | OOS recall / in-scope acc | p50 / p95 ms | tickets/s | tokens (prompt+completion) | wall |",
        "|---|---|---:|---|---:|---:|---:|---|---|---|---:|---:|---:|",
    ]
    checks = []
    for row in rows:
        m = row["metrics"]
        oos = f"{m['oos']['recall']:.3f} / {m['oos']['in_scope_accuracy']:.3f}" if m["oos"] else "-"
        for axis, a in m["axes"].items():
            aa = a["auto_apply"]
            lines.append(
                f"| {row['name']} | {row['mode']}{' (' + str(row['limit']) + ')' if row['limit'] else ''} | {m['n']} | {axis} | {a['accuracy']:.4f} | {a['macro_f1']:.4f} | {a['ece']:.4f} | "
                f"{100 * aa['coverage']:.1f} % @ {aa['precision']:.3f} | {oos} | {m['latency_ms']['p50']:.0f} / {m['latency_ms']['p95']:.0f} | {m['throughput_per_s']:.2f} | "
                f"{m['usage']['prompt_tokens']}+{m['usage']['completion_tokens']} | {row['wall_s']:.0f} s |"
            )
        if row["mode"] == "proposal" or not row["limit"]:
            for key, bar in row["targets"].items():
                value = _get(m, key)
                checks.append(f"| {row['name']} | {row['mode']} | {key} | >= {bar} | {value if value is None else round(value, 4)} | {'yes' if value is not None and value >= bar else '**no**'} |")
    paired = []
    for row in rows:
        for axis, p in (row.get("paired_proposal") or {}).items():
            delta = round(p["other"] - p["proposal"], 9)  # 0.42 - 0.43 must read as -0.01, not a hair below
            paired.append(
                f"| {row['name']} | {row['mode']} | {axis} | {p['n']} | {p['proposal']:.4f} | {p['other']:.4f} | {delta:+.4f} | {within_bar(row['mode'], delta)} |"
            )
    lines += ["", "## Targets", "", "| config | mode | metric | target | measured | holds |", "|---|---|---|---|---:|---|", *checks, ""]
    if paired:
        lines += [
            "## LLM modes against proposal on the same rows",
            "",
            "Target: hybrid never worse than proposal by more than 1 point (same --limit sample of the same test split).",
            "The llm mode (the LLM alone, no retrieval, no proposal) has no bar: it shows what the LLM knows by itself.",
            "",
            "| config | mode | axis | rows | proposal acc | this mode acc | difference | within 1 point |",
            "|---|---|---|---:|---:|---:|---:|---|",
            *paired,
            "",
        ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", nargs="*", help="config names (default: all in evals/configs)")
    parser.add_argument("--no-hybrid", action="store_true", help="skip llm/hybrid runs")
    parser.add_argument("--fresh", action="store_true", help="discard earlier predictions and re-run")
    parser.add_argument("--modes", nargs="+", choices=["proposal", "hybrid", "llm"], help="only these runs of each config (e.g. hybrid after a vote-weight change); the others' rows stay")
    parser.add_argument("--no-default-calibration", action="store_true", help="do not re-fit knowledge_base/taxonomies/default.calibration.json")
    args = parser.parse_args(argv)
    if not splits.DATASETS.is_dir():
        print(f"datasets not found at {splits.DATASETS}", file=sys.stderr)
        return 2
    rows: list[dict[str, Any]] = []
    for cfg in load_configs(args.only):
        rows += run_config(cfg, hybrid=not args.no_hybrid, fresh=args.fresh, modes=set(args.modes) if args.modes else None)
    # keep earlier rows of configs not re-run, so SUMMARY.md always shows everything
    state = REPORTS / "summary.json"
    previous = json.loads(state.read_text()) if state.is_file() else []
    done = {(r["name"], r["mode"]) for r in rows}
    rows = [r for r in previous if (r["name"], r["mode"]) not in done] + rows
    rows.sort(key=lambda r: (r["name"], r["mode"] != "proposal", r["mode"]))
    REPORTS.mkdir(parents=True, exist_ok=True)
    state.write_text(json.dumps(rows, indent=1) + "\n", encoding="utf-8")
    (REPORTS / "SUMMARY.md").write_text(summary_table(rows), encoding="utf-8")
    print((REPORTS / "SUMMARY.md").read_text())
    if not args.no_default_calibration and not args.only:
        from evals.default_calibration import fit_default

        fitted = fit_default(llm_vote_weight=LLM_VOTE_WEIGHT)
        print("default calibration:", json.dumps(fitted.fitted_on))
    return 0


if __name__ == "__main__":
    sys.exit(main())
