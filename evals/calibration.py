"""Fit the auto-apply thresholds and the out-of-scope threshold by cross-validation on the TRAIN file only.

1. Out-of-fold proposals: K folds of train; on each, the proposal head is fitted on the other folds and the
   kNN vote uses only their tickets, then `agent.proposal.propose_distribution` (the graph's own code) gives the
   held-out rows their per-axis distribution. So each train row gets the confidence the graph would have given
   it had it been a new ticket.
2. Per axis, the global threshold "*" is the lowest confidence at which the out-of-fold precision of the rows
   at or above it still reaches the target; each class with enough out-of-fold predictions gets its own
   threshold the same way, with a Laplace-smoothed precision ((hits + 1) / (n + 2)) so a class with few rows
   needs a clearer margin. A class that never reaches the target gets 1.001: never auto-applied.
3. Out of scope: whole train classes are held out in turn (as unknown intents), and the in-scope score `decide`
   compares (nearest stored ticket similarity + proposal confidence, `agent.proposal.in_scope_score`) is
   measured for held-out in-scope rows and for those unknown-class rows against a store and head without
   them; the threshold is the score quantile that flags at most `max_false_flag` of the in-scope rows, the
   budget that keeps in-scope accuracy within a few points of the plain accuracy.
"""

from __future__ import annotations

import json
import logging
import random
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

import numpy as np
from sklearn.model_selection import KFold, StratifiedKFold

from agent.confidence import ConfidenceModel, confidence_features
from agent.contracts import EvidenceTicket, Taxonomy
from agent.machine import usable_cores
from agent.out_of_scope import MEMBERS, InScopeModel, in_scope_features
from agent.proposal import (
    Distribution,
    HeadOptions,
    ProposalHead,
    SoftmaxSVC,
    axis_distributions,
    in_scope_score,
    propose_distribution,
)
from agent.state import Calibration

NEVER = 1.001
log = logging.getLogger(__name__)


@dataclass
class OutOfFold:
    """Out-of-fold proposal per train row and axis, plus the nearest-neighbour similarity of each row."""

    proposals: list[dict[str, Distribution]]
    nearest: np.ndarray
    neighbours: list[list[EvidenceTicket]] = field(default_factory=list)  # what retrieval gave each row
    svm_scales: dict[str, float] = field(default_factory=dict)  # per axis, fitted on the pooled folds


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


MANY_ROWS = 6000


def default_folds(n: int) -> int:
    """Cross-validation folds for n train rows: 5, or 3 from 6,000 rows on. Every row gets one out-of-fold
    proposal either way; with thousands of rows a model fitted on two thirds of them proposes as one fitted on four
    fifths does (Banking77, 8,005 rows: the same test thresholds' coverage and precision within 0.3 points), at
    6 fits instead of 10: the Banking77 protocol's cold command takes 0.86 of the time. Under that, each fold's model misses more
    (Tobi-Bueck, 3,339 rows: 3 folds routed 1.6 points fewer test tickets): evals/README.md, "How the thresholds
    are fitted"."""
    return 3 if n >= MANY_ROWS else 5


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
    jobs: int | None = None,
) -> OutOfFold:
    """Each fold's linear model and MLP are fitted as two jobs in parallel processes (one per core; each fit is
    single-threaded), so ten similar jobs keep two cores busy to the end. The SVM's softmax scale is fitted once
    on the pooled out-of-fold decision values, not on a holdout inside every fold (one SVM fit a fold saved)."""
    from joblib import Parallel, delayed
    from tqdm import tqdm

    n = len(texts)
    folds = max(2, min(folds, n))
    first_axis = next(iter(labels))
    strata = [str(y) for y in labels[first_axis]]
    row_labels = [{axis: ys[i] for axis, ys in labels.items() if ys[i]} for i in range(n)]
    opts = options or HeadOptions()
    splits = _folds(n, strata, folds, seed)
    kinds = ["linear", "mlp"] if opts.mlp_weight > 0 else ["linear"]
    jobs = jobs or min(len(splits) * len(kinds), usable_cores())
    tasks = [
        delayed(_fold_part)(kind, k, texts, vectors, labels, row_labels, train_idx, held_idx, taxonomy, opts, top_k)
        for kind in kinds  # the longer linear jobs first
        for k, (train_idx, held_idx) in enumerate(splits)
    ]
    results = Parallel(n_jobs=jobs, return_as="generator_unordered")(tasks) if jobs > 1 else (task[0](*task[1], **task[2]) for task in tasks)
    parts: dict[tuple[str, int], FoldPart] = {}
    for part in tqdm(results, total=len(tasks), desc="cross-validating thresholds", unit="fit", disable=not progress):
        parts[(part.kind, part.fold)] = part
    scales = pooled_svm_scales([parts[("linear", k)] for k in range(len(splits))], labels) if opts.classifier == "svm" else {}

    proposals: list[dict[str, Distribution]] = [{} for _ in range(n)]
    found: list[list[EvidenceTicket]] = [[] for _ in range(n)]
    nearest = np.zeros(n, dtype=np.float32)
    for k, (_, held_idx) in enumerate(splits):
        linear = parts[("linear", k)]
        mlp = parts.get(("mlp", k))
        head_probs = _head_probs(len(held_idx), linear.scores, mlp.scores if mlp else {}, scales, opts.mlp_weight)
        for j, i in enumerate(held_idx):
            found[i] = linear.neighbours[j]
            nearest[i] = found[i][0].score if found[i] else 0.0
            proposals[i] = propose_distribution(head_probs[j], found[i], taxonomy, knn_weight=opts.knn_weight, dup_low=opts.dup_low, dup_high=opts.dup_high)
    return OutOfFold(proposals=proposals, nearest=nearest, neighbours=found, svm_scales=scales)


@dataclass
class FoldPart:
    """What one cross-validation job returns for its fold's held-out rows: per axis, classes and scores."""

    kind: str  # "linear" (with the rows' neighbours) or "mlp"
    fold: int
    held: np.ndarray
    scores: dict[str, tuple[np.ndarray, np.ndarray]]
    neighbours: list[list[EvidenceTicket]] = field(default_factory=list)


def _fold_part(
    kind: str,
    fold: int,
    texts: Sequence[str],
    vectors: np.ndarray,
    labels: Mapping[str, Sequence[str | None]],
    row_labels: Sequence[Mapping[str, str]],
    train_idx: np.ndarray,
    held_idx: np.ndarray,
    taxonomy: Taxonomy,
    opts: HeadOptions,
    top_k: int,
) -> FoldPart:
    """Fit one part of the head on the other folds and score the held-out rows (the SVM's scores unscaled)."""
    base_labels = {a: [ys[i] for i in train_idx] for a, ys in labels.items()}
    scale_later = dict.fromkeys(labels, 1.0)  # placeholders: the pooled scale is applied to the raw scores
    head = ProposalHead.fit([texts[i] for i in train_idx], vectors[train_idx], base_labels, taxonomy, options=opts, svm_scales=scale_later, parts=kind)
    if kind == "mlp":
        return FoldPart(kind, fold, held_idx, head.mlp_scores(vectors[held_idx]))
    neighbours = _neighbours(vectors, row_labels, train_idx, held_idx, top_k)
    return FoldPart(kind, fold, held_idx, head.linear_scores([texts[i] for i in held_idx], vectors[held_idx]), neighbours)


def pooled_svm_scales(linear: Sequence[FoldPart], labels: Mapping[str, Sequence[str | None]]) -> dict[str, float]:
    """Per axis, the softmax scale with the least log-loss over every fold's held-out rows (their true class
    known to that fold's SVM): the holdout fit of `SoftmaxSVC`, done once on all of train instead of per fold."""
    scales: dict[str, float] = {}
    for axis in {axis for part in linear for axis in part.scores}:
        scored = []
        for part in linear:
            if axis not in part.scores:
                continue
            classes, decision = part.scores[axis]
            index = {str(c): i for i, c in enumerate(classes)}
            rows = [(j, index[str(labels[axis][i])]) for j, i in enumerate(part.held) if str(labels[axis][i]) in index]
            if rows:
                scored.append((decision[[j for j, _ in rows]], np.array([c for _, c in rows])))
        scales[axis] = SoftmaxSVC.best_scale(scored) if sum(len(t) for _, t in scored) >= 20 else 1.0
    return scales


def _head_probs(
    n: int,
    linear: Mapping[str, tuple[np.ndarray, np.ndarray]],
    mlp: Mapping[str, tuple[np.ndarray, np.ndarray]],
    scales: Mapping[str, float],
    mlp_weight: float,
) -> list[dict[str, Distribution]]:
    """What `ProposalHead.predict` gives, from the parts' scores: the SVM's decision values through the pooled
    scale, the MLP's probabilities mixed in."""
    out: list[dict[str, Distribution]] = [{} for _ in range(n)]
    for axis, (classes, scores) in linear.items():
        probs = SoftmaxSVC.softmax(scales[axis] * scores) if axis in scales else scores
        for row, dist in zip(out, axis_distributions(classes, probs, mlp.get(axis), mlp_weight), strict=True):
            row[axis] = dist
    return out


def _neighbours(
    vectors: np.ndarray, row_labels: Sequence[Mapping[str, str]], base: np.ndarray, query: np.ndarray, top_k: int
) -> list[list[EvidenceTicket]]:
    """What retrieval returns for the `query` rows from a store holding only the `base` rows."""
    return nearest_neighbours(vectors[query], vectors[base], [row_labels[i] for i in base], [f"train-{i}" for i in base], top_k)


def _propose(
    texts: Sequence[str],
    vectors: np.ndarray,
    labels: Mapping[str, Sequence[str | None]],
    base: np.ndarray,
    query: np.ndarray,
    neighbours: Sequence[Sequence[EvidenceTicket]],
    taxonomy: Taxonomy,
    opts: HeadOptions,
) -> list[dict[str, Distribution]]:
    """The `propose` node's distribution for the `query` rows, with a head fitted on the `base` rows only."""
    head = ProposalHead.fit([texts[i] for i in base], vectors[base], {a: [ys[i] for i in base] for a, ys in labels.items()}, taxonomy, options=opts)
    head_probs = head.predict([texts[i] for i in query], vectors[query])
    return [
        propose_distribution(head_probs[j], neighbours[j], taxonomy, knn_weight=opts.knn_weight, dup_low=opts.dup_low, dup_high=opts.dup_high)
        for j in range(len(query))
    ]


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


@dataclass
class AxisFit:
    """What cross-validation fitted for one axis."""

    thresholds: dict[str, float]
    accuracy: float
    confidence_model: ConfidenceModel | None


def fit_axis_thresholds(
    oof: OutOfFold, labels: dict[str, list[str | None]], axes: Sequence[str], target: float, *, confidence_model: bool = True
) -> dict[str, AxisFit]:
    """Per axis: the confidence model (P(top label right) from the out-of-fold proposals and neighbours), the
    thresholds on the confidence it gives (the one `decide` compares), and the cross-validated accuracy."""
    fits: dict[str, AxisFit] = {}
    for axis in axes:
        learned = {gold for gold in labels[axis] if gold}
        if len(learned) < 2:
            # one label to learn: every out-of-fold answer is that label and right, so any threshold looks perfect,
            # yet nothing was learned that tells it from another; auto-applying it would route every ticket blind
            log.warning(
                "the train file teaches axis %s %s: nothing on it is auto-applied (a calibration needs two labels "
                "or more to tell right from wrong)", axis, f"only the label {next(iter(learned))!r}" if learned else "no label",
            )
            fits[axis] = AxisFit(thresholds={"*": NEVER}, accuracy=1.0 if learned else 0.0, confidence_model=None)
            continue
        preds, tops, features, correct = [], [], [], []
        for i, gold in enumerate(labels[axis]):
            if not gold:
                continue
            dist = oof.proposals[i].get(axis, {})
            label, conf = top(dist)
            preds.append(label or "")
            tops.append(conf)
            features.append(confidence_features(dist, oof.neighbours[i] if oof.neighbours else [], axis))
            correct.append(label == gold)
        model = fit_confidence_model(features, correct) if confidence_model else None
        confs = [model.probability(f) for f in features] if model is not None else tops
        fits[axis] = AxisFit(
            thresholds=fit_thresholds(preds, confs, correct, target),
            accuracy=round(sum(correct) / len(correct), 4) if correct else 0.0,
            confidence_model=model,
        )
    return fits


def fit_confidence_model(features: Sequence[Sequence[float]], correct: Sequence[bool], *, min_each: int = 10) -> ConfidenceModel | None:
    """Logistic regression of right/wrong on the confidence features; None when either outcome has fewer than
    `min_each` rows (nothing to learn: the distribution's own probability is used)."""
    from sklearn.linear_model import LogisticRegression

    hits = sum(correct)
    if hits < min_each or len(correct) - hits < min_each:
        return None
    model = LogisticRegression(C=1.0, max_iter=2000).fit(np.asarray(features, dtype=float), np.asarray(correct, dtype=int))
    return ConfidenceModel(coef=tuple(float(c) for c in model.coef_[0]), intercept=float(model.intercept_[0]))


def top(dist: Distribution) -> tuple[str | None, float]:
    if not dist:
        return None, 0.0
    label = max(dist, key=lambda k: dist[k])
    return label, float(dist[label])


# ---------------------------------------------------------------- out of scope


def fit_oos_threshold(
    texts: Sequence[str],
    vectors: np.ndarray,
    labels: Mapping[str, Sequence[str | None]],
    taxonomy: Taxonomy,
    *,
    rule: str = "similarity+confidence",
    groups: int | None = None,
    max_false_flag: float = 0.08,
    seed: int = 0,
    top_k: int = 8,
    options: HeadOptions | None = None,
    jobs: int | None = None,
) -> tuple[float, dict[str, object], dict[str, object] | None]:
    """Hold out whole classes (of the first axis) in turn; pick the in-scope score below which a ticket is flagged.

    For each group of held-out classes the store and the head see only the other classes minus 20 % of their
    rows; the held-out rows of known classes give the in-scope scores, the unknown classes the out-of-scope
    ones, scored as `decide` scores a new ticket. The threshold flags `max_false_flag` of the in-scope rows.
    Rule "learned" first trains the in-scope model (agent/out_of_scope.py) on those rows: each group is scored
    by a model fitted on the other groups (so the threshold sees honest scores), then one model on all of them
    goes into the calibration. Returns the threshold, what it did on train, and the model's JSON (or None).
    """
    from joblib import Parallel, delayed

    classes = [str(y) for y in labels[next(iter(labels))]]
    rng = random.Random(seed)
    names = sorted(set(classes))
    rng.shuffle(names)
    groups = max(2, min(groups or OOS_GROUPS, len(names)))
    row_labels = [{axis: ys[i] for axis, ys in labels.items() if ys[i]} for i in range(len(classes))]
    splits = []
    for g in range(groups):
        unknown = set(names[g::groups])
        known_rows = [i for i, c in enumerate(classes) if c not in unknown]
        unknown_rows = [i for i, c in enumerate(classes) if c in unknown]
        rng.shuffle(known_rows)
        cut = max(1, len(known_rows) // 5)
        held, base = known_rows[:cut], known_rows[cut:]
        if base and unknown_rows:
            splits.append((np.array(base), np.array(held), np.array(unknown_rows)))
    if not splits:
        return 0.0, {"score": "similarity" if rule == "similarity" else "similarity+confidence"}, None
    opts = options or HeadOptions()
    jobs = 1 if rule == "similarity" else (jobs or min(len(splits), usable_cores()))
    tasks = [delayed(_oos_group)(texts, vectors, labels, row_labels, base, held, unknown, taxonomy, opts, top_k, rule) for base, held, unknown in splits]
    results = Parallel(n_jobs=jobs)(tasks) if jobs > 1 else [task[0](*task[1], **task[2]) for task in tasks]
    model = None
    ins = np.concatenate([r[0] for r in results])
    outs = np.concatenate([r[1] for r in results])
    if rule == "learned" and min(len(ins), len(outs)) >= MIN_LEARNED_ROWS:
        ins, outs, model = _learned_scores(results, seed, jobs)
    elif rule == "learned":
        rule = "similarity+confidence"
    threshold = float(np.quantile(ins, max_false_flag))
    return round(threshold, 6 if rule == "learned" else 4), {
        "score": rule,
        "train_false_flag_rate": float((ins < threshold).mean()),
        "train_oos_recall": float((outs < threshold).mean()),
    }, model


# below this many held-out known or unknown-class rows the in-scope model is not trained: the fixed sum is used
MIN_LEARNED_ROWS = 200
# groups of whole classes held out in turn: 10 rather than 5 lifts the learned score's best recall by 2-3 points
# (the fold heads miss fewer classes, closer to the final head), at twice the head fits (evals/README.md)
OOS_GROUPS = 10


def oos_fit_spec() -> dict[str, int]:
    """What a fitted out-of-scope threshold depends on besides the options: a cached calibration fitted with other
    groups or another in-scope model is not reused."""
    return {"groups": OOS_GROUPS, "members": MEMBERS, "min_learned_rows": MIN_LEARNED_ROWS}


def _learned_scores(results: Sequence[tuple[np.ndarray, ...]], seed: int, jobs: int) -> tuple[np.ndarray, np.ndarray, dict[str, object]]:
    """Out-of-group P(in scope) for every group's rows, and the model fitted on all groups (as JSON); the
    groups' models and the final one are fitted in parallel."""
    from joblib import Parallel, delayed

    features = [(np.asarray(r[2]), np.asarray(r[3])) for r in results]
    training = [[f for k, f in enumerate(features) if k != g] for g in range(len(features))] + [features]
    models = Parallel(n_jobs=jobs)(delayed(_fit_in_scope)(groups, seed) for groups in training) if jobs > 1 else [_fit_in_scope(g, seed) for g in training]
    ins_parts, outs_parts = [], []
    for model, (held_features, unknown_features) in zip(models, features, strict=False):
        ins_parts.append(np.array([model.probability(x) for x in held_features]))
        outs_parts.append(np.array([model.probability(x) for x in unknown_features]))
    return np.concatenate(ins_parts), np.concatenate(outs_parts), models[-1].to_json()


def _fit_in_scope(groups: Sequence[tuple[np.ndarray, np.ndarray]], seed: int) -> InScopeModel:
    held = np.concatenate([h for h, _ in groups])
    unknown = np.concatenate([u for _, u in groups])
    labels = np.concatenate([np.ones(len(held)), np.zeros(len(unknown))])
    return InScopeModel.fit(np.vstack([held, unknown]), labels, seed=seed)


def _oos_group(
    texts: Sequence[str],
    vectors: np.ndarray,
    labels: Mapping[str, Sequence[str | None]],
    row_labels: Sequence[Mapping[str, str]],
    base: np.ndarray,
    held: np.ndarray,
    unknown: np.ndarray,
    taxonomy: Taxonomy,
    opts: HeadOptions,
    top_k: int,
    rule: str,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """In-scope scores of the held-out known rows and of the unknown-class rows against a store of `base`, and
    (rule "learned", whose score is the model still to be trained) their in-scope features."""
    query = np.concatenate([held, unknown])
    neighbours = _neighbours(vectors, row_labels, base, query, top_k)
    proposals = [{} for _ in query] if rule == "similarity" else _propose(texts, vectors, labels, base, query, neighbours, taxonomy, opts)
    fixed = "similarity+confidence" if rule == "learned" else rule  # what a train set too small to learn from uses
    scores = np.array([in_scope_score(fixed, found[0].score if found else 0.0, proposals[j]) for j, found in enumerate(neighbours)])
    features = np.array([in_scope_features(found, proposals[j]) for j, found in enumerate(neighbours)]) if rule == "learned" else np.zeros((len(query), 0))
    return scores[: len(held)], scores[len(held) :], features[: len(held)], features[len(held) :]


# ---------------------------------------------------------------- file


@dataclass
class FittedCalibration(Calibration):
    """The calibration `decide` reads, plus what it was fitted on (written to the same file)."""

    fitted_on: dict[str, object] = field(default_factory=dict)

    @classmethod
    def from_fits(cls, fits: Mapping[str, AxisFit], fitted_on: dict[str, object], **options: object) -> FittedCalibration:
        """The file for what `fit_axis_thresholds` fitted; `options` are other Calibration fields."""
        fitted_on = {**fitted_on, **{f"{axis}_cv_accuracy": fit.accuracy for axis, fit in fits.items()}}
        return cls(
            thresholds={axis: fit.thresholds for axis, fit in fits.items()},
            confidence_models={axis: fit.confidence_model.to_json() for axis, fit in fits.items() if fit.confidence_model is not None},
            fitted_on=fitted_on,
            **options,  # type: ignore[arg-type]
        )

    def to_calibration(self) -> Calibration:
        return Calibration(**{f.name: getattr(self, f.name) for f in fields(Calibration)})

    def write(self, path: Path) -> None:
        """The format `agent.service.load_calibration` reads (extra keys are ignored by it)."""
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(asdict(self), indent=2, sort_keys=False) + "\n", encoding="utf-8")

    @classmethod
    def read(cls, path: Path) -> FittedCalibration:
        return cls.from_json(json.loads(path.read_text(encoding="utf-8")))
