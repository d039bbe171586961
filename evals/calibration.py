"""Fit the auto-apply thresholds and the out-of-scope threshold by cross-validation on the TRAIN file only.

1. Out-of-fold proposals: K folds of train; on each, the proposal head is fitted on the other folds and the
   kNN vote uses only their tickets, then `agent.proposal.propose_distribution` (the graph's own code) gives the
   held-out rows their per-axis distribution. So each train row gets the confidence the graph would have given
   it had it been a new ticket.
2. Per axis, the global threshold "*" is the lowest confidence at which the out-of-fold precision of the rows
   at or above it still reaches the target; each class with enough out-of-fold predictions gets its own
   threshold the same way, with a Laplace-smoothed precision ((hits + 1) / (n + 2)) so a class with few rows
   needs a clearer margin. A class that never reaches the target gets 1.001: never auto-applied.
3. Out of scope: whole train classes are held out in turn (as unknown intents), and the similarity of the
   nearest stored ticket (what `decide` compares) is measured for held-out in-scope rows and for those
   unknown-class rows; the threshold is the score quantile that flags at most `max_false_flag` of the
   in-scope rows, the budget that keeps in-scope accuracy within a few points of the plain accuracy.
"""

from __future__ import annotations

import json
import random
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
from sklearn.model_selection import KFold, StratifiedKFold

from agent.contracts import EvidenceTicket, Taxonomy
from agent.proposal import Distribution, HeadOptions, ProposalHead, propose_distribution
from agent.state import Calibration

NEVER = 1.001


@dataclass
class OutOfFold:
    """Out-of-fold proposal per train row and axis, plus the nearest-neighbour similarity of each row."""

    proposals: list[dict[str, Distribution]]
    nearest: np.ndarray


def nearest_neighbours(
    query: np.ndarray, base: np.ndarray, base_labels: Sequence[Mapping[str, str]], base_ids: Sequence[str], k: int
) -> list[list[EvidenceTicket]]:
    """Exact cosine top-k (vectors are L2-normalised), as EvidenceTicket rows like the store returns."""
    if len(base) == 0 or len(query) == 0:
        return [[] for _ in range(len(query))]
    k = min(k, len(base))
    out: list[list[EvidenceTicket]] = []
    for start in range(0, len(query), 1024):
        sims = query[start : start + 1024] @ base.T
        top = np.argpartition(-sims, k - 1, axis=1)[:, :k]
        for row, idx in zip(sims, top, strict=True):
            idx = idx[np.argsort(-row[idx], kind="stable")]
            out.append(
                [
                    EvidenceTicket.model_construct(
                        id=base_ids[j], score=round(float(row[j]), 4), labels=dict(base_labels[j]), text=None, answer=None, verified=False
                    )
                    for j in idx
                ]
            )
    return out


def _folds(n: int, strata: Sequence[str], folds: int, seed: int) -> list[tuple[np.ndarray, np.ndarray]]:
    counts = Counter(strata)
    if counts and min(counts.values()) >= folds:
        splitter = StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed)
        return list(splitter.split(np.zeros(n), list(strata)))
    return list(KFold(n_splits=folds, shuffle=True, random_state=seed).split(np.zeros(n)))


def out_of_fold(
    texts: Sequence[str],
    vectors: np.ndarray,
    labels: Mapping[str, Sequence[str | None]],
    taxonomy: Taxonomy,
    *,
    folds: int = 5,
    seed: int = 0,
    top_k: int = 8,
    options: HeadOptions | None = None,
    progress: bool = False,
) -> OutOfFold:
    from tqdm import tqdm

    n = len(texts)
    folds = max(2, min(folds, n))
    first_axis = next(iter(labels))
    strata = [str(y) for y in labels[first_axis]]
    row_labels = [{axis: ys[i] for axis, ys in labels.items() if ys[i]} for i in range(n)]
    ids = [f"train-{i}" for i in range(n)]
    proposals: list[dict[str, Distribution]] = [{} for _ in range(n)]
    nearest = np.zeros(n, dtype=np.float32)
    opts = options or HeadOptions()
    for train_idx, held_idx in tqdm(_folds(n, strata, folds, seed), desc="cross-validating thresholds", unit="fold", disable=not progress):
        head = ProposalHead.fit(
            [texts[i] for i in train_idx], vectors[train_idx], {a: [ys[i] for i in train_idx] for a, ys in labels.items()}, taxonomy, options=opts
        )
        neighbours = nearest_neighbours(vectors[held_idx], vectors[train_idx], [row_labels[i] for i in train_idx], [ids[i] for i in train_idx], top_k)
        head_probs = head.predict([texts[i] for i in held_idx], vectors[held_idx])
        for j, i in enumerate(held_idx):
            proposals[i] = propose_distribution(head_probs[j], neighbours[j], taxonomy, knn_weight=opts.knn_weight, dup_low=opts.dup_low, dup_high=opts.dup_high)
            nearest[i] = neighbours[j][0].score if neighbours[j] else 0.0
    return OutOfFold(proposals=proposals, nearest=nearest)


# ---------------------------------------------------------------- thresholds


def precision_threshold(confidence: Sequence[float], correct: Sequence[bool], target: float, *, smoothing: float = 0.0) -> float:
    """The lowest confidence t such that the rows with confidence >= t reach `target` precision (NEVER if none).

    With `smoothing` s, precision is (hits + s) / (n + 2 s): small groups must show a clearer margin.
    """
    if not len(confidence):
        return NEVER
    conf = np.asarray(confidence, dtype=float)
    ok = np.asarray(correct, dtype=float)
    order = np.argsort(-conf, kind="stable")
    conf, ok = conf[order], ok[order]
    hits = np.cumsum(ok)
    k = np.arange(1, len(conf) + 1)
    precision = (hits + smoothing) / (k + 2 * smoothing)
    best = NEVER
    for i in range(len(conf)):
        if i + 1 < len(conf) and conf[i + 1] == conf[i]:
            continue  # a threshold takes all tied rows
        if precision[i] >= target:
            best = float(conf[i])
    return best


def fit_thresholds(
    predicted: Sequence[str],
    confidence: Sequence[float],
    correct: Sequence[bool],
    target: float,
    *,
    min_support: int = 15,
) -> dict[str, float]:
    """{'*': global threshold, label: per-class threshold for classes with >= min_support predictions}."""
    thresholds = {"*": round(precision_threshold(confidence, correct, target), 4)}
    by_class: dict[str, list[int]] = {}
    for i, label in enumerate(predicted):
        by_class.setdefault(label, []).append(i)
    for label, rows in sorted(by_class.items()):
        if len(rows) < min_support:
            continue
        t = precision_threshold([confidence[i] for i in rows], [correct[i] for i in rows], target, smoothing=1.0)
        thresholds[label] = round(t, 4)
    return thresholds


def fit_axis_thresholds(
    oof: OutOfFold, labels: dict[str, list[str | None]], axes: Sequence[str], target: float
) -> tuple[dict[str, dict[str, float]], dict[str, float]]:
    """Per-axis thresholds from out-of-fold proposals, and each axis's cross-validated accuracy."""
    thresholds: dict[str, dict[str, float]] = {}
    accuracy: dict[str, float] = {}
    for axis in axes:
        preds, confs, correct = [], [], []
        for i, gold in enumerate(labels[axis]):
            if not gold:
                continue
            label, conf = top(oof.proposals[i].get(axis, {}))
            preds.append(label or "")
            confs.append(conf)
            correct.append(label == gold)
        thresholds[axis] = fit_thresholds(preds, confs, correct, target)
        accuracy[axis] = round(sum(correct) / len(correct), 4) if correct else 0.0
    return thresholds, accuracy


def top(dist: Distribution) -> tuple[str | None, float]:
    if not dist:
        return None, 0.0
    label = max(dist, key=lambda k: dist[k])
    return label, float(dist[label])


# ---------------------------------------------------------------- out of scope


def fit_oos_threshold(
    vectors: np.ndarray,
    classes: Sequence[str],
    *,
    groups: int = 5,
    max_false_flag: float = 0.08,
    seed: int = 0,
) -> tuple[float, dict[str, float]]:
    """Hold out whole classes in turn; pick the nearest-neighbour similarity below which a ticket is flagged.

    Returns the threshold and what it did on train (in-scope false-flag rate, unknown-class recall).
    """
    rng = random.Random(seed)
    labels = sorted(set(classes))
    rng.shuffle(labels)
    groups = max(2, min(groups, len(labels)))
    in_scores: list[np.ndarray] = []
    out_scores: list[np.ndarray] = []
    idx_by_class: dict[str, list[int]] = {}
    for i, c in enumerate(classes):
        idx_by_class.setdefault(c, []).append(i)
    for g in range(groups):
        unknown = set(labels[g::groups])
        known_rows = [i for i, c in enumerate(classes) if c not in unknown]
        unknown_rows = [i for i, c in enumerate(classes) if c in unknown]
        rng.shuffle(known_rows)
        cut = max(1, len(known_rows) // 5)
        held, base = known_rows[:cut], known_rows[cut:]
        if not base or not unknown_rows:
            continue
        base_v = vectors[base]
        in_scores.append((vectors[held] @ base_v.T).max(axis=1))
        out_scores.append((vectors[unknown_rows] @ base_v.T).max(axis=1))
    if not in_scores:
        return 0.0, {}
    ins, outs = np.concatenate(in_scores), np.concatenate(out_scores)
    threshold = float(np.quantile(ins, max_false_flag))
    return round(threshold, 4), {
        "train_false_flag_rate": float((ins < threshold).mean()),
        "train_oos_recall": float((outs < threshold).mean()),
    }


# ---------------------------------------------------------------- file


@dataclass
class FittedCalibration:
    thresholds: dict[str, dict[str, float]] = field(default_factory=dict)
    default: float = 0.9
    out_of_scope_threshold: float | None = None
    llm_vote_weight: float | None = None
    fitted_on: dict[str, object] = field(default_factory=dict)

    def to_calibration(self) -> Calibration:
        return Calibration(
            thresholds=self.thresholds,
            default=self.default,
            out_of_scope_threshold=self.out_of_scope_threshold,
            llm_vote_weight=self.llm_vote_weight,
        )

    def write(self, path: Path) -> None:
        """The format `agent.service.load_calibration` reads (extra keys are ignored by it)."""
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(asdict(self), indent=2, sort_keys=False) + "\n", encoding="utf-8")

    @classmethod
    def read(cls, path: Path) -> FittedCalibration:
        raw = json.loads(path.read_text(encoding="utf-8"))
        return cls(
            thresholds=raw.get("thresholds", {}),
            default=raw.get("default", 0.9),
            out_of_scope_threshold=raw.get("out_of_scope_threshold"),
            llm_vote_weight=raw.get("llm_vote_weight"),
            fitted_on=raw.get("fitted_on", {}),
        )
