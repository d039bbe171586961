"""PNG plots of an eval run (matplotlib, Agg backend: no display needed)."""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from evals import metrics as m  # noqa: E402


def _save(fig: plt.Figure, path: Path) -> Path:
    with warnings.catch_warnings():
        # labels in scripts the bundled fonts lack (CJK, Thai...) draw as boxes, one console warning per glyph per plot;
        # report.md has them as text
        warnings.filterwarnings("ignore", message=r"Glyph \d+ .* missing from font", category=UserWarning)
        fig.tight_layout()
        fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def confusion_matrix(gold: Sequence[str], pred: Sequence[str], path: Path, *, title: str, max_labels: int = 40) -> Path:
    """Row-normalised confusion (recall per gold row); with many labels, the most frequent `max_labels`."""
    counts: dict[str, int] = {}
    for g in gold:
        counts[g] = counts.get(g, 0) + 1
    for p in pred:
        counts.setdefault(p, 0)
    labels = sorted(counts, key=lambda k: (-counts[k], k))[:max_labels]
    labels = sorted(labels)
    index = {label: i for i, label in enumerate(labels)}
    matrix = np.zeros((len(labels), len(labels)))
    for g, p in zip(gold, pred, strict=True):
        if g in index and p in index:
            matrix[index[g], index[p]] += 1
    row_sums = matrix.sum(axis=1, keepdims=True)
    norm = np.divide(matrix, row_sums, out=np.zeros_like(matrix), where=row_sums > 0)
    size = max(5.0, min(0.28 * len(labels) + 3, 22))
    fig, ax = plt.subplots(figsize=(size, size))
    if not labels:  # every test row out of scope: no in-scope row to draw (imshow warned on an empty matrix)
        ax.text(0.5, 0.5, "no in-scope rows scored", ha="center", va="center")
        ax.set_axis_off()
        ax.set_title(title)
        return _save(fig, path)
    im = ax.imshow(norm, cmap="Blues", vmin=0, vmax=1)
    ax.set_xticks(range(len(labels)), labels, rotation=90, fontsize=7 if len(labels) > 15 else 9)
    ax.set_yticks(range(len(labels)), labels, fontsize=7 if len(labels) > 15 else 9)
    ax.set_xlabel("predicted")
    ax.set_ylabel("gold")
    if len(labels) <= 15:
        for i in range(len(labels)):
            for j in range(len(labels)):
                if matrix[i, j]:
                    ax.text(j, i, int(matrix[i, j]), ha="center", va="center", fontsize=8, color="white" if norm[i, j] > 0.5 else "black")
    suffix = f" (top {max_labels} labels)" if len(counts) > max_labels else ""
    ax.set_title(title + suffix)
    fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04, label="share of gold row")
    return _save(fig, path)


def coverage_precision(
    confidence: Sequence[float], correct: Sequence[bool], path: Path, *, title: str, target: float, operating_point: tuple[float, float] | None
) -> Path:
    curve = m.coverage_precision_curve(confidence, correct)
    fig, ax = plt.subplots(figsize=(6, 4.5))
    if curve:
        ax.plot([c for _, c, _ in curve], [p for _, _, p in curve], label="one global threshold (swept on test)")
    ax.axhline(target, color="grey", linestyle="--", label=f"target precision {target:.2f}")
    if operating_point is not None:
        ax.scatter([operating_point[0]], [operating_point[1]], color="red", zorder=3, label="per-class thresholds fitted on train")
    ax.set_xlabel("coverage (share of tickets auto-applied)")
    ax.set_ylabel("precision of auto-applied")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1.02)
    ax.grid(alpha=0.3)
    ax.legend(loc="lower left", fontsize=8)
    ax.set_title(title)
    return _save(fig, path)


def reliability(confidence: Sequence[float], correct: Sequence[bool], path: Path, *, title: str) -> Path:
    bins = m.reliability_bins(confidence, correct)
    ece = m.expected_calibration_error(confidence, correct)
    fig, (ax, hx) = plt.subplots(2, 1, figsize=(6, 6), gridspec_kw={"height_ratios": [3, 1]}, sharex=True)
    centers = [(b["lo"] + b["hi"]) / 2 for b in bins]
    width = bins[0]["hi"] - bins[0]["lo"] if bins else 0.1
    ax.bar(centers, [b["accuracy"] if b["count"] else 0 for b in bins], width=width * 0.9, alpha=0.7, label="accuracy in bin")
    ax.plot([0, 1], [0, 1], color="grey", linestyle="--", label="perfect calibration")
    ax.set_ylabel("accuracy")
    ax.set_ylim(0, 1)
    ax.legend(loc="upper left", fontsize=8)
    ax.set_title(f"{title} (ECE {ece:.3f})")
    hx.bar(centers, [b["count"] for b in bins], width=width * 0.9, color="tab:gray")
    hx.set_xlabel("confidence")
    hx.set_ylabel("rows")
    hx.set_xlim(0, 1)
    return _save(fig, path)


def per_class_f1(scores: Sequence[m.ClassScore], path: Path, *, title: str) -> Path:
    ordered = sorted(scores, key=lambda s: s.f1)
    height = max(3.0, min(0.22 * len(ordered) + 1.5, 24))
    fig, ax = plt.subplots(figsize=(7, height))
    ax.barh(range(len(ordered)), [s.f1 for s in ordered], color="tab:blue")
    ax.set_yticks(range(len(ordered)), [f"{s.label} ({s.support})" for s in ordered], fontsize=7 if len(ordered) > 20 else 9)
    ax.set_xlim(0, 1)
    ax.set_xlabel("F1 (gold support in brackets)")
    ax.grid(axis="x", alpha=0.3)
    ax.set_title(title)
    return _save(fig, path)


def latency_histogram(latency_ms: Sequence[float], path: Path, *, title: str) -> Path:
    fig, ax = plt.subplots(figsize=(6, 4))
    values = np.asarray(latency_ms, dtype=float)
    if len(values):
        ax.hist(values, bins=min(50, max(5, len(values) // 5)), color="tab:green")
        for q, style in ((50, "-"), (95, "--")):
            v = float(np.percentile(values, q))
            ax.axvline(v, color="black", linestyle=style, label=f"p{q} {v:.0f} ms")
        ax.legend(fontsize=8)
    ax.set_xlabel("latency per ticket (ms)")
    ax.set_ylabel("tickets")
    ax.set_title(title)
    return _save(fig, path)
