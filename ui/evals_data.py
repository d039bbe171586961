"""Eval reports (`triage eval --out DIR`) read from disk, and the numbers behind their pictures (no Streamlit).

A report directory has metrics.json, usually details.json, predictions.jsonl, report.md and PNGs. The curves
are recomputed from predictions.jsonl (gold id, predicted id, confidence per row) so two runs can be drawn on
one chart; a report without predictions still shows its metrics, per-class F1 (details.json) and its PNGs.
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


@dataclass
class Report:
    name: str
    path: Path
    metrics: dict[str, Any]
    details: dict[str, Any] = field(default_factory=dict)
    rows: list[dict[str, Any]] = field(default_factory=list)  # per axis flattened below
    pngs: list[Path] = field(default_factory=list)
    markdown: str = ""

    @property
    def axes(self) -> list[str]:
        return list(self.metrics.get("axes", {}))


def find_reports(root: Path) -> dict[str, Path]:
    """Report directories under `root` (any depth up to 3), by name relative to `root`, newest first."""
    if not root.is_dir():
        return {}
    found = [p.parent for pattern in ("*/metrics.json", "*/*/metrics.json", "*/*/*/metrics.json") for p in root.glob(pattern)]
    found.sort(key=lambda p: (p / "metrics.json").stat().st_mtime, reverse=True)
    return {str(p.relative_to(root)): p for p in found}


def load_report(path: Path, name: str | None = None) -> Report:
    """Read a report directory; a malformed file raises ValueError naming it."""

    def read_json(file: Path) -> dict[str, Any]:
        try:
            return json.loads(file.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as exc:
            raise ValueError(f"{file} cannot be read as JSON: {exc}") from exc

    metrics = _checked_metrics(path / "metrics.json", read_json(path / "metrics.json"))
    details = read_json(path / "details.json") if (path / "details.json").is_file() else {}
    if not isinstance(details, dict) or not _object_of_objects(details.get("axes", {})):
        raise ValueError(f"{path / 'details.json'} is not a `triage eval` details.json (a JSON object, `axes` an object per axis)")
    rows: list[dict[str, Any]] = []
    predictions = path / "predictions.jsonl"
    if predictions.is_file():
        with predictions.open(encoding="utf-8") as fh:
            for line_no, line in enumerate(fh, 1):
                if not line.strip():
                    continue
                try:
                    record = json.loads(line)
                except json.JSONDecodeError as exc:
                    raise ValueError(f"{predictions}:{line_no} is not valid JSON: {exc}") from exc
                if not isinstance(record, dict):
                    raise ValueError(f"{predictions}:{line_no} is not a JSON object")
                rows.extend(_flatten(record))
    markdown = (path / "report.md").read_text(encoding="utf-8") if (path / "report.md").is_file() else ""
    return Report(name or path.name, path, metrics, details, rows, sorted(path.glob("*.png")), markdown)


def _object_of_objects(value: Any) -> bool:
    return isinstance(value, dict) and all(isinstance(v, dict) for v in value.values())


def _checked_metrics(file: Path, metrics: Any) -> dict[str, Any]:
    """The shape the page reads, checked when the report is loaded: a hand-edited, truncated or foreign metrics.json
    is then one message naming the file, not a traceback halfway down the page."""
    if not isinstance(metrics, dict):
        raise ValueError(f"{file} holds a JSON {type(metrics).__name__}, not the object `triage eval` writes")
    axes = metrics.get("axes", {})
    if not _object_of_objects(axes) or not all(isinstance(m.get("auto_apply") or {}, dict) for m in axes.values()):
        raise ValueError(f"{file}: `axes` should hold one object of metrics per axis (accuracy, macro_f1, auto_apply, ...)")
    if not isinstance(metrics.get("latency_ms") or {}, dict):
        raise ValueError(f"{file}: `latency_ms` should be an object (p50, p95, ...)")
    return metrics


def _flatten(record: dict[str, Any]) -> list[dict[str, Any]]:
    """One row per scored axis of a prediction record: axis, gold, pred, confidence, correct."""
    if record.get("oos_gold"):
        return []
    labels = ((record.get("prediction") or {}).get("labels")) or {}
    out = []
    for axis, gold in (record.get("gold_id") or {}).items():
        if gold is None:
            continue
        pred = (labels.get(axis) or {}).get("label") or (record.get("predicted") or {}).get(axis) or "<error>"
        confidence = float((labels.get(axis) or {}).get("confidence") or 0.0)
        out.append({"axis": axis, "gold": gold, "pred": pred, "confidence": confidence, "correct": gold == pred})
    return out


def axis_rows(report: Report, axis: str) -> list[dict[str, Any]]:
    return [r for r in report.rows if r["axis"] == axis]


def confusion(rows: list[dict[str, Any]], max_labels: int = 40) -> list[dict[str, Any]]:
    """Long-form confusion matrix (gold, pred, count, share of the gold row); the most frequent labels only."""
    top = [label for label, _ in Counter(r["gold"] for r in rows).most_common(max_labels)]
    keep = set(top)
    counts = Counter((r["gold"], r["pred"] if r["pred"] in keep else "(other)") for r in rows if r["gold"] in keep)
    per_gold = Counter(r["gold"] for r in rows if r["gold"] in keep)
    return [{"gold": g, "pred": p, "count": n, "share": round(n / per_gold[g], 4)} for (g, p), n in counts.items()]


def coverage_precision(rows: list[dict[str, Any]], points: int = 50) -> list[dict[str, float]]:
    """Auto-apply everything above a confidence threshold: the coverage and the precision at each threshold."""
    ordered = sorted(rows, key=lambda r: -r["confidence"])
    n = len(ordered)
    if not n:
        return []
    out, correct = [], 0
    step = max(n // points, 1)
    for i, row in enumerate(ordered, 1):
        correct += row["correct"]
        if i % step == 0 or i == n:
            out.append({"coverage": round(i / n, 4), "precision": round(correct / i, 4), "threshold": round(row["confidence"], 4)})
    return out


def reliability(rows: list[dict[str, Any]], bins: int = 10) -> list[dict[str, float]]:
    """Per confidence bin: mean confidence, accuracy, count (a calibrated model sits on the diagonal)."""
    buckets: dict[int, list[dict[str, Any]]] = {}
    for row in rows:
        buckets.setdefault(min(int(row["confidence"] * bins), bins - 1), []).append(row)
    return [
        {
            "bin": (b + 0.5) / bins,
            "confidence": round(sum(r["confidence"] for r in items) / len(items), 4),
            "accuracy": round(sum(r["correct"] for r in items) / len(items), 4),
            "count": len(items),
        }
        for b, items in sorted(buckets.items())
    ]


def per_class_f1(report: Report, axis: str) -> list[dict[str, Any]]:
    """Per-class precision, recall, F1 and support: from details.json, else computed from the predictions."""
    given = ((report.details.get("axes") or {}).get(axis) or {}).get("per_class")
    if given:
        return [{k: c[k] for k in ("label", "precision", "recall", "f1", "support")} for c in given]
    rows = axis_rows(report, axis)
    labels = sorted({r["gold"] for r in rows} | {r["pred"] for r in rows})
    out = []
    for label in labels:
        tp = sum(1 for r in rows if r["gold"] == label and r["pred"] == label)
        predicted = sum(1 for r in rows if r["pred"] == label)
        support = sum(1 for r in rows if r["gold"] == label)
        precision = tp / predicted if predicted else 0.0
        recall = tp / support if support else 0.0
        f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
        if support:
            out.append({"label": label, "precision": round(precision, 4), "recall": round(recall, 4), "f1": round(f1, 4), "support": support})
    return out


METRICS: dict[str, tuple[str, str]] = {
    "accuracy": ("accuracy", "Share of in-scope test tickets given the right label on this axis."),
    "macro_f1": (
        "macro-F1",
        "F1 (harmonic mean of precision and recall) per label, averaged with every label counting the same: "
        "low when rare labels are missed, even if accuracy is high.",
    ),
    "ece": (
        "calibration error",
        "Expected calibration error: the gap between the confidence shown and how often the label was right "
        "(15 bins, weighted by size). 0 = a confidence of 0.8 is right 80% of the time; lower is better.",
    ),
    "coverage": ("auto-apply coverage", "Share of test tickets whose label the agent would auto-apply (no lead looks at them)."),
    "precision": ("auto-apply precision", "Of the auto-applied labels, the share that were right."),
    "target_precision": (
        "precision target",
        "The precision the per-label auto-apply thresholds were fitted to reach on the training tickets "
        "(`triage eval --target-precision`).",
    ),
}


def summary(report: Report) -> list[dict[str, Any]]:
    """metrics.json as one row per axis (accuracy, macro-F1, ECE, auto-apply coverage and precision)."""
    out = []
    for axis, m in report.metrics.get("axes", {}).items():
        auto = m.get("auto_apply") or {}
        out.append(
            {
                "run": report.name,
                "axis": axis,
                "accuracy": m.get("accuracy"),
                "macro_f1": m.get("macro_f1"),
                "ece": m.get("ece"),
                "coverage": auto.get("coverage"),
                "precision": auto.get("precision"),
                "target_precision": auto.get("target_precision"),
            }
        )
    return out


def compare(a: Report, b: Report) -> list[dict[str, Any]]:
    """Per axis both runs share: each metric of A and B and the change B − A."""
    rows = []
    sa = {r["axis"]: r for r in summary(a)}
    sb = {r["axis"]: r for r in summary(b)}
    for axis in [x for x in sa if x in sb]:
        for metric in ("accuracy", "macro_f1", "ece", "coverage", "precision"):
            va, vb = sa[axis][metric], sb[axis][metric]
            delta = round(vb - va, 4) if isinstance(va, int | float) and isinstance(vb, int | float) else None
            rows.append({"axis": axis, "metric": metric, "A": va, "B": vb, "B − A": delta})
    for key in ("throughput_per_s",):
        va, vb = a.metrics.get(key), b.metrics.get(key)
        if va is not None and vb is not None:
            rows.append({"axis": "(all)", "metric": key, "A": va, "B": vb, "B − A": round(vb - va, 4)})
    for q in ("p50", "p95"):
        va, vb = (a.metrics.get("latency_ms") or {}).get(q), (b.metrics.get("latency_ms") or {}).get(q)
        if va is not None and vb is not None:
            rows.append({"axis": "(all)", "metric": f"latency {q} ms", "A": va, "B": vb, "B − A": round(vb - va, 2)})
    return rows


def embeds_ahead(report: Report) -> bool | None:
    """Whether the run embedded its test file ahead in batches (`embed_test_s` in its timings): its latency is then
    the graph with the vector ready, not embedding + graph. None when the report does not say (no details.json)."""
    context = report.details.get("context")
    if not isinstance(context, dict):
        return None
    return "embed_test_s" in (context.get("timings") or {})


def latency_caveat(a: Report, b: Report) -> str | None:
    """Why two runs' latencies are not comparable, or None: since the test file is embedded ahead, a run's latency
    leaves the embedding out, so an older run set against a newer one shows a drop no single request sees."""
    ahead = [(report.name, embeds_ahead(report)) for report in (a, b)]  # a list: two runs may share a name
    if ahead[0][1] == ahead[1][1]:
        return None
    if any(value is None for _, value in ahead):
        unknown = next(name for name, value in ahead if value is None)
        return f"`{unknown}` does not say how its latency was measured (no details.json timings): compare latencies with care."
    older = next(name for name, value in ahead if value is False)
    return (
        f"Latency is not measured the same way: `{older}` counts embedding each test ticket inside the graph, the other "
        "run embedded its test file ahead in batches and counts the graph alone. Rerun the first with the current "
        "version to compare latencies (one API request's latency, embedding included, is measured by evals/bench_api.py)."
    )


def _detail(report: Report, axis: str, key: str) -> list[dict[str, Any]]:
    return list(((report.details.get("axes") or {}).get(axis) or {}).get(key) or [])


def confusion_of(report: Report, axis: str) -> list[dict[str, Any]]:
    """From the predictions, else from `details.json` → axes.<axis>.confusion ([{gold, pred, count}])."""
    rows = axis_rows(report, axis)
    if rows:
        return confusion(rows)
    given = _detail(report, axis, "confusion")
    per_gold: Counter[str] = Counter()
    for cell in given:
        per_gold[cell["gold"]] += cell["count"]
    return [{**cell, "share": round(cell["count"] / per_gold[cell["gold"]], 4)} for cell in given if per_gold[cell["gold"]]]


def coverage_of(report: Report, axis: str) -> list[dict[str, Any]]:
    rows = axis_rows(report, axis)
    return coverage_precision(rows) if rows else _detail(report, axis, "coverage_curve")


def reliability_of(report: Report, axis: str) -> list[dict[str, Any]]:
    rows = axis_rows(report, axis)
    return reliability(rows) if rows else _detail(report, axis, "reliability")
