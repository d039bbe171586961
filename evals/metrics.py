"""Metrics on predictions: pure functions of lists, so each is tested on hand-made numbers.

Conventions (also in evals/README.md):
- accuracy / macro-F1 of an axis are over the scored in-scope rows; a gold label the taxonomy lacks
  (`None` here) counts as an error, never a crash.
- ECE: top-label confidence against correctness, 15 equal-width bins, weighted by bin size.
- auto-apply: a row is auto-applied on an axis when its confidence reaches the per-class threshold fitted on
  train and the agent did not flag it out of scope; coverage is over all scored rows (out-of-scope gold rows
  included, counted wrong if auto-applied), precision is over the auto-applied rows.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

ECE_BINS = 15


def accuracy(gold: Sequence[str | None], pred: Sequence[str]) -> float:
    if not gold:
        return 0.0
    return sum(g is not None and g == p for g, p in zip(gold, pred, strict=True)) / len(gold)


@dataclass(frozen=True)
class ClassScore:
    label: str
    precision: float
    recall: float
    f1: float
    support: int
    predicted: int


def per_class(gold: Sequence[str | None], pred: Sequence[str]) -> list[ClassScore]:
    """Precision / recall / F1 per label, over the labels that occur in gold or predictions.

    A gold label outside the taxonomy is kept under the name `<out of taxonomy>` so it lowers recall.
    """
    gold_named = [g if g is not None else "<out of taxonomy>" for g in gold]
    labels = sorted(set(gold_named) | set(pred))
    tp: Counter[str] = Counter()
    n_gold = Counter(gold_named)
    n_pred = Counter(pred)
    for g, p in zip(gold_named, pred, strict=True):
        if g == p:
            tp[g] += 1
    out = []
    for label in labels:
        precision = tp[label] / n_pred[label] if n_pred[label] else 0.0
        recall = tp[label] / n_gold[label] if n_gold[label] else 0.0
        f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
        out.append(ClassScore(label, precision, recall, f1, n_gold[label], n_pred[label]))
    return out


def macro_f1(gold: Sequence[str | None], pred: Sequence[str]) -> float:
    """Unweighted mean F1 over labels present in gold or predictions (sklearn's `average='macro'`)."""
    scores = per_class(gold, pred)
    return float(np.mean([s.f1 for s in scores])) if scores else 0.0


def reliability_bins(confidence: Sequence[float], correct: Sequence[bool], bins: int = ECE_BINS) -> list[dict[str, float]]:
    """Per confidence bin: its bounds, row count, mean confidence and accuracy (empty bins kept, count 0)."""
    conf = np.clip(np.asarray(confidence, dtype=float), 0.0, 1.0)
    ok = np.asarray(correct, dtype=float)
    edges = np.linspace(0.0, 1.0, bins + 1)
    index = np.clip(np.digitize(conf, edges[1:-1], right=True), 0, bins - 1)
    out = []
    for b in range(bins):
        mask = index == b
        n = int(mask.sum())
        out.append(
            {
                "lo": float(edges[b]),
                "hi": float(edges[b + 1]),
                "count": n,
                "confidence": float(conf[mask].mean()) if n else 0.0,
                "accuracy": float(ok[mask].mean()) if n else 0.0,
            }
        )
    return out


def expected_calibration_error(confidence: Sequence[float], correct: Sequence[bool], bins: int = ECE_BINS) -> float:
    total = len(confidence)
    if not total:
        return 0.0
    return float(sum(b["count"] / total * abs(b["accuracy"] - b["confidence"]) for b in reliability_bins(confidence, correct, bins)))


def auto_apply(
    pred: Sequence[str],
    confidence: Sequence[float],
    correct: Sequence[bool],
    threshold: Callable[[str], float],
    *,
    blocked: Sequence[bool] | None = None,
) -> tuple[float, float, int]:
    """(coverage, precision, n auto-applied) at per-class thresholds; `blocked` rows are never auto-applied."""
    n = len(pred)
    if not n:
        return 0.0, 0.0, 0
    blocked = blocked or [False] * n
    applied = [not b and c >= threshold(p) for p, c, b in zip(pred, confidence, blocked, strict=True)]
    k = sum(applied)
    hits = sum(a and ok for a, ok in zip(applied, correct, strict=True))
    return k / n, (hits / k if k else 0.0), k


def coverage_precision_curve(confidence: Sequence[float], correct: Sequence[bool]) -> list[tuple[float, float, float]]:
    """(threshold, coverage, precision) for one global threshold at each distinct confidence, high to low."""
    order = np.argsort(-np.asarray(confidence, dtype=float), kind="stable")
    conf = np.asarray(confidence, dtype=float)[order]
    ok = np.asarray(correct, dtype=float)[order]
    n = len(conf)
    if not n:
        return []
    hits = np.cumsum(ok)
    out = []
    for k in range(1, n + 1):
        if k < n and conf[k] == conf[k - 1]:
            continue  # ties: take the whole group at once
        out.append((float(conf[k - 1]), k / n, float(hits[k - 1] / k)))
    return out


def thinned_curve(confidence: Sequence[float], correct: Sequence[bool], points: int = 50) -> list[dict[str, float]]:
    """The coverage/precision curve at no more than `points` thresholds (always keeping the last), for reports."""
    curve = coverage_precision_curve(confidence, correct)
    step = max(-(-len(curve) // points), 1)
    kept = [c for i, c in enumerate(curve) if i % step == step - 1 or i == len(curve) - 1]
    return [{"coverage": round(cov, 4), "precision": round(prec, 4), "threshold": round(t, 4)} for t, cov, prec in kept]


def confusion_cells(gold: Sequence[str], pred: Sequence[str]) -> list[dict[str, Any]]:
    """The confusion matrix as its non-empty cells (gold, pred, count), most frequent first."""
    return [{"gold": g, "pred": p, "count": n} for (g, p), n in Counter(zip(gold, pred, strict=True)).most_common()]


def percentile(values: Sequence[float], q: float) -> float:
    return float(np.percentile(np.asarray(values, dtype=float), q)) if len(values) else 0.0


def oos_metrics(gold_oos: Sequence[bool], flagged: Sequence[bool], in_scope_correct: Sequence[bool]) -> dict[str, float]:
    """Out-of-scope recall, and in-scope accuracy: an in-scope row counts only if not flagged and labelled right."""
    oos_rows = [f for g, f in zip(gold_oos, flagged, strict=True) if g]
    in_rows = [(not f) and ok for g, f, ok in zip(gold_oos, flagged, in_scope_correct, strict=True) if not g]
    return {
        "recall": sum(oos_rows) / len(oos_rows) if oos_rows else 0.0,
        "in_scope_accuracy": sum(in_rows) / len(in_rows) if in_rows else 0.0,
        "false_flag_rate": sum(f for g, f in zip(gold_oos, flagged, strict=True) if not g) / len(in_rows) if in_rows else 0.0,
        "n_oos": len(oos_rows),
        "n_in_scope": len(in_rows),
    }


def top_confusions(gold: Sequence[str | None], pred: Sequence[str], k: int = 10) -> list[tuple[str, str, int]]:
    pairs = Counter((g if g is not None else "<out of taxonomy>", p) for g, p in zip(gold, pred, strict=True) if g != p)
    return [(g, p, n) for (g, p), n in pairs.most_common(k)]
