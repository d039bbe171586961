"""The fast, calibrated proposal: a linear head over dense + sparse features, mixed with a kNN vote.

Sparse word and character n-grams carry what a small English embedding model misses (German, Spanish,
French, Portuguese tickets; product names); the dense vector carries paraphrase. The head is trained on
the labelled store, so a human correction changes it at the next retrain, and the kNN vote changes at once.

`propose_distribution` is the one place where head and vote are mixed: the `propose` node and the evals'
cross-validation (which fits the auto-apply thresholds) both call it, so the thresholds are fitted on the
very numbers the graph produces. The choices below (features, C, kNN weight) are measured in evals/README.md.
"""

from __future__ import annotations

import os
import pickle
import warnings
from collections import defaultdict
from collections.abc import Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from scipy import sparse
from sklearn.exceptions import ConvergenceWarning
from sklearn.feature_extraction.text import CountVectorizer, TfidfVectorizer
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import train_test_split
from sklearn.neural_network import MLPClassifier
from sklearn.pipeline import FeatureUnion
from sklearn.svm import LinearSVC

from agent.contracts import AXES, EvidenceTicket, Taxonomy

Distribution = dict[str, float]

KNN_WEIGHT = 0.3


@dataclass(frozen=True)
class HeadOptions:
    """What the head is built from; the defaults are the measured winner (evals/README.md)."""

    word: bool = True
    char: bool = True
    dense: bool = True
    dense_weight: float = 1.0
    C: float = 1.0
    class_weight: str | None = "balanced"
    knn_weight: float = KNN_WEIGHT
    # "lr": logistic regression; "svm": linear SVM with a softmax scale fitted on a train holdout;
    # "ensemble": the mean of both (measured in evals/README.md)
    classifier: str = "svm"
    # near-duplicate trust: when the best neighbour's similarity s1 is above dup_low, the kNN weight rises
    # linearly to 1 at dup_high (a near-copy of a labelled ticket is better evidence than the head); None = off
    dup_low: float | None = None
    dup_high: float = 0.98
    # the taxonomy teaches too: each label's description and examples join train as pseudo-tickets of that
    # label with this sample weight (sparse features only); 0 = off
    taxonomy_weight: float = 0.0
    # a small MLP on the dense vector alone, its probabilities mixed into the linear head's with this weight
    # (a non-linear view of the embedding the sparse-heavy SVM does not take); 0 = off
    mlp_weight: float = 0.4
    mlp_hidden: int = 512


def taxonomy_documents(taxonomy: Taxonomy) -> list[tuple[str, str, str]]:
    """(axis, label id, text) for every label description and example of the taxonomy."""
    docs = []
    for axis, spec in taxonomy.axes.items():
        for label in spec.labels:
            for text in [label.description, *label.examples]:
                if text and text.strip():
                    docs.append((axis, label.id, text.strip()))
    return docs


class SoftmaxSVC:
    """A linear SVM whose decision values become probabilities through softmax(scale * decision).

    The scale is the one that minimises the log-loss on a 20 % holdout of the training rows (then the SVM is
    refitted on all rows): a one-parameter, multi-class Platt scaling. Cross-validation passes the scale it
    fitted on the pooled out-of-fold decision values instead (`best_scale`), which saves the holdout fit.
    """

    SCALES = np.geomspace(0.5, 64.0, 22)

    def __init__(self, C: float = 1.0, class_weight: str | None = None) -> None:
        self.C = C
        self.class_weight = class_weight
        self.scale = 1.0
        self.svc: LinearSVC | None = None

    @property
    def classes_(self) -> np.ndarray:
        assert self.svc is not None
        return self.svc.classes_

    def _new(self) -> LinearSVC:
        # seeded: liblinear shuffles the rows it visits, so an unseeded fit moves probabilities by ~1e-5 run to run
        # (one Tobi-Bueck ticket of 835 flipped between two bench runs); the bench must reproduce its reports
        return LinearSVC(C=self.C, class_weight=self.class_weight, max_iter=5000, random_state=0)

    @staticmethod
    def _decision(svc: LinearSVC, x: sparse.spmatrix) -> np.ndarray:
        d = svc.decision_function(x)
        return np.column_stack([-d, d]) if d.ndim == 1 else d

    @staticmethod
    def softmax(z: np.ndarray) -> np.ndarray:
        z = z - z.max(axis=1, keepdims=True)
        e = np.exp(z)
        return e / e.sum(axis=1, keepdims=True)

    @classmethod
    def best_scale(cls, scored: Sequence[tuple[np.ndarray, np.ndarray]]) -> float:
        """The grid scale with the least log-loss over (decision values, index of the true class) pairs."""
        losses = np.zeros(len(cls.SCALES))
        for decision, truth in scored:
            rows = np.arange(len(truth))
            losses += [-np.log(cls.softmax(s * decision)[rows, truth] + 1e-12).sum() for s in cls.SCALES]
        return float(cls.SCALES[int(np.argmin(losses))])

    def fit(
        self, x: sparse.spmatrix, y: Sequence[str], sample_weight: np.ndarray | None = None, *, scale: float | None = None
    ) -> SoftmaxSVC:
        """`scale` given: fit once and use it; None: fit it on a holdout of these rows."""
        y = np.asarray(y)
        if scale is not None:
            self.scale = scale
            self.svc = self._new().fit(x, y, sample_weight=sample_weight)
            return self
        counts = defaultdict(int)
        for label in y:
            counts[label] += 1
        # the final fit runs in a thread beside the holdout fit (liblinear releases the GIL): on 2 cores the head
        # costs one fit's wall time, not two
        with ThreadPoolExecutor(max_workers=1) as pool:
            final = pool.submit(self._new().fit, x, y, sample_weight=sample_weight)
            if len(y) >= 40 and min(counts.values()) >= 2 and round(0.2 * len(y)) >= len(counts):
                idx = np.arange(len(y))
                fit_idx, hold_idx = train_test_split(idx, test_size=0.2, random_state=0, stratify=y)
                if len(set(y[fit_idx])) == len(counts):
                    svc = self._new().fit(x[fit_idx], y[fit_idx], sample_weight=None if sample_weight is None else sample_weight[fit_idx])
                    self.scale = self.best_scale([(self._decision(svc, x[hold_idx]), np.searchsorted(svc.classes_, y[hold_idx]))])
            self.svc = final.result()
        return self

    def decision(self, x: sparse.spmatrix) -> np.ndarray:
        assert self.svc is not None
        return self._decision(self.svc, x)

    def predict_proba(self, x: sparse.spmatrix) -> np.ndarray:
        return self.softmax(self.scale * self.decision(x))


class MeanEnsemble:
    """The mean of the probabilities of a logistic regression and a SoftmaxSVC (same classes, same features)."""

    def __init__(self, C: float = 1.0, class_weight: str | None = None, lr_C: float = 10.0) -> None:
        self.svm = SoftmaxSVC(C=C, class_weight=class_weight)
        self.lr = LogisticRegression(C=lr_C, max_iter=3000, class_weight=class_weight)

    @property
    def classes_(self) -> np.ndarray:
        return self.svm.classes_

    def fit(self, x: sparse.spmatrix, y: Sequence[str], sample_weight: np.ndarray | None = None) -> MeanEnsemble:
        self.svm.fit(x, y, sample_weight=sample_weight)
        self.lr.fit(x, y, sample_weight=sample_weight)
        return self

    def predict_proba(self, x: sparse.spmatrix) -> np.ndarray:
        return (self.svm.predict_proba(x) + self.lr.predict_proba(x)) / 2


# below this many training texts a character n-gram need not recur (min_df 1): with min_df 2 a handful of short
# texts can leave no n-gram at all, and the fit fails ("After pruning, no terms remain")
FEW_TEXTS = 20


def make_vectorizer(*, word: bool = True, char: bool = True, n_texts: int | None = None) -> FeatureUnion | None:
    parts = []
    char_min_df = 1 if n_texts is not None and n_texts < FEW_TEXTS else 2
    if word:
        parts.append(("word", TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True, min_df=1, max_features=100_000)))
    if char:
        parts.append(
            ("char", TfidfVectorizer(analyzer="char_wb", ngram_range=(2, 5), sublinear_tf=True, min_df=char_min_df, max_features=150_000))
        )
    return FeatureUnion(parts) if parts else None


def tfidf_transform(union: FeatureUnion, texts: Sequence[str]) -> sparse.csr_matrix:
    """`union.transform(texts)` for the vectorizers `make_vectorizer` builds, without sklearn's per-call input
    validation and joblib dispatch, which cost twice the n-gram counting on one ticket (the `propose` node's hot
    path; tests/unit/test_proposal_head.py checks it gives the same matrix). Anything else: sklearn's own."""
    blocks = []
    for _, vectorizer in union.transformer_list:
        if not (isinstance(vectorizer, TfidfVectorizer) and vectorizer.norm == "l2" and vectorizer.use_idf):
            return union.transform(texts)
        counts = CountVectorizer.transform(vectorizer, texts).astype(np.float64)
        if vectorizer.sublinear_tf:
            np.log(counts.data, out=counts.data)
            counts.data += 1.0
        counts.data *= vectorizer.idf_[counts.indices]
        rows = np.repeat(np.arange(counts.shape[0]), np.diff(counts.indptr))
        norms = np.sqrt(np.bincount(rows, weights=counts.data**2, minlength=counts.shape[0]))
        counts.data /= norms[rows]  # a row with entries has a positive norm; empty rows have none to divide
        blocks.append(counts)
    return sparse.hstack(blocks, format="csr")


@dataclass
class ProposalHead:
    """Per axis, a linear classifier over sparse + dense features, plus (mlp_weight) a small MLP on the dense vector
    mixed into its probabilities; the classes are the taxonomy ids seen in training."""

    vectorizer: FeatureUnion | None
    heads: dict[str, LogisticRegression | SoftmaxSVC | MeanEnsemble] = field(default_factory=dict)
    priors: dict[str, Distribution] = field(default_factory=dict)
    dense_weight: float = 1.0
    fingerprint: str = ""
    use_dense: bool = True
    knn_weight: float = KNN_WEIGHT
    dup_low: float | None = None
    dup_high: float = 0.98
    mlps: dict[str, MLPClassifier] = field(default_factory=dict)
    mlp_weight: float = 0.0

    @classmethod
    def fit(
        cls,
        texts: Sequence[str],
        vectors: np.ndarray,
        labels: Mapping[str, Sequence[str | None]],
        taxonomy: Taxonomy,
        *,
        sample_weight: np.ndarray | None = None,
        C: float | None = None,
        dense_weight: float | None = None,
        fingerprint: str = "",
        options: HeadOptions | None = None,
        svm_scales: Mapping[str, float] | None = None,
        parts: str = "all",
    ) -> ProposalHead:
        """`svm_scales`: per axis, the SVM's softmax scale already fitted (by cross-validation; else a holdout
        fits it). `parts`: "all", or only the "linear" models or only the "mlp"s, which cross-validation fits as
        separate jobs so that two cores stay busy."""
        if parts not in ("all", "linear", "mlp"):
            raise ValueError(f"parts must be all, linear or mlp, not {parts!r}")
        opts = options or HeadOptions()
        C = opts.C if C is None else C
        dense_weight = opts.dense_weight if dense_weight is None else dense_weight
        use_dense = opts.dense and vectors is not None and vectors.ndim == 2 and vectors.shape[0] == len(texts) and vectors.shape[1] > 0
        if opts.taxonomy_weight > 0:
            n = len(texts)
            trained = {axis for axis in AXES if any(labels.get(axis, []))}
            docs = [doc for doc in taxonomy_documents(taxonomy) if doc[0] in trained]
            texts = [*texts, *(text for _, _, text in docs)]
            labels = {axis: [*labels.get(axis, [None] * n), *(label if a == axis else None for a, label, _ in docs)] for axis in AXES}
            base = np.ones(n) if sample_weight is None else np.asarray(sample_weight, dtype=float)
            sample_weight = np.concatenate([base, np.full(len(docs), opts.taxonomy_weight)])
            if use_dense:
                vectors = np.vstack([vectors, np.zeros((len(docs), vectors.shape[1]), dtype=vectors.dtype)])
        has_sparse = bool(texts) and (opts.word or opts.char)
        head = cls(
            vectorizer=None,
            dense_weight=dense_weight,
            fingerprint=fingerprint,
            use_dense=use_dense,
            knn_weight=opts.knn_weight,
            dup_low=opts.dup_low,
            dup_high=opts.dup_high,
            mlp_weight=opts.mlp_weight,
        )
        plans = []  # per axis: its labelled rows, their labels and the label counts
        for axis in AXES:
            valid = set(taxonomy.axes[axis].ids)
            axis_labels = labels.get(axis, [])
            rows = [i for i, y in enumerate(axis_labels) if y in valid]
            if not rows:
                continue
            ys = [axis_labels[i] for i in rows]
            counts: dict[str, float] = defaultdict(float)
            for y in ys:
                counts[y] += 1
            head.priors[axis] = {k: v / len(ys) for k, v in counts.items()}
            if len(counts) >= 2 and (has_sparse or use_dense):
                plans.append((axis, rows, ys, counts))
        # the MLPs train in a thread while the vectorizer and the linear models fit (numpy's products and liblinear
        # release the GIL), unless an SVM's holdout fit already takes the second core: Banking77 head 15-17 s
        # instead of 18-19 s; with a holdout as well, 20-23 s (evals/README.md, "Speed")
        overlap = svm_scales is not None or opts.classifier != "svm"
        mlps: dict[str, Future[MLPClassifier]] = {}
        with ThreadPoolExecutor(max_workers=1) as mlp_pool:

            def start_mlps() -> None:
                for axis, rows, ys, counts in plans:
                    if opts.mlp_weight > 0 and use_dense and parts != "linear":
                        mlps[axis] = mlp_pool.submit(_fit_mlp, vectors[rows], ys, counts, opts.mlp_hidden)

            if overlap:
                start_mlps()
            if parts != "mlp":
                head.vectorizer = make_vectorizer(word=opts.word, char=opts.char, n_texts=len(texts)) if texts else None
                sparse_x = head.vectorizer.fit_transform(texts) if head.vectorizer is not None else None
                for axis, rows, ys, _ in plans:
                    x = head._features(sparse_x[rows] if sparse_x is not None else None, vectors[rows] if use_dense else None)
                    weight = sample_weight[rows] if sample_weight is not None else None
                    model: LogisticRegression | SoftmaxSVC | MeanEnsemble
                    if opts.classifier == "svm":
                        model = SoftmaxSVC(C=C, class_weight=opts.class_weight)
                        model.fit(x, ys, sample_weight=weight, scale=(svm_scales or {}).get(axis))
                    elif opts.classifier == "ensemble":
                        model = MeanEnsemble(C=C, class_weight=opts.class_weight).fit(x, ys, sample_weight=weight)
                    else:
                        model = LogisticRegression(C=C, max_iter=3000, class_weight=opts.class_weight).fit(x, ys, sample_weight=weight)
                    head.heads[axis] = model
            if not overlap:
                start_mlps()
            head.mlps = {axis: future.result() for axis, future in mlps.items()}
        return head

    def _features(self, sparse_x: sparse.spmatrix | None, dense_x: np.ndarray | None) -> sparse.csr_matrix:
        blocks = []
        if sparse_x is not None:
            blocks.append(sparse_x)
        if getattr(self, "use_dense", True) and dense_x is not None:
            blocks.append(sparse.csr_matrix(dense_x * self.dense_weight))
        return sparse.hstack(blocks, format="csr")

    def predict(self, texts: Sequence[str], vectors: np.ndarray) -> list[dict[str, Distribution]]:
        """Per text, per axis, a probability over the labels the head knows."""
        out: list[dict[str, Distribution]] = [{} for _ in texts]
        sparse_x = tfidf_transform(self.vectorizer, texts) if self.vectorizer is not None else None
        x = None
        for axis in AXES:
            model = self.heads.get(axis)
            if model is None:
                for row in out:
                    if axis in self.priors:
                        row[axis] = dict(self.priors[axis])
                continue
            if x is None:
                x = self._features(sparse_x, vectors)
            mlp = getattr(self, "mlps", {}).get(axis)
            mlp_scores = (mlp.classes_, mlp.predict_proba(vectors)) if mlp is not None and vectors is not None else None
            for row, dist in zip(out, axis_distributions(model.classes_, model.predict_proba(x), mlp_scores, self.mlp_weight), strict=True):
                row[axis] = dist
        return out

    def linear_scores(self, texts: Sequence[str], vectors: np.ndarray) -> dict[str, tuple[np.ndarray, np.ndarray]]:
        """Per axis, the linear model's classes and scores: an SVM's raw decision values (cross-validation scales
        them once every fold is in), any other model's probabilities."""
        sparse_x = tfidf_transform(self.vectorizer, texts) if self.vectorizer is not None else None
        x = self._features(sparse_x, vectors)
        return {
            axis: (model.classes_, model.decision(x) if isinstance(model, SoftmaxSVC) else model.predict_proba(x))
            for axis, model in self.heads.items()
        }

    def mlp_scores(self, vectors: np.ndarray) -> dict[str, tuple[np.ndarray, np.ndarray]]:
        """Per axis, the MLP's classes and probabilities."""
        return {axis: (mlp.classes_, mlp.predict_proba(vectors)) for axis, mlp in self.mlps.items()}

    def save(self, path: Path) -> None:
        """Plain pickle (the C pickler: 0.4 s for a Banking77 head, joblib's Python pickler took 1.7 s), written
        beside the target and renamed, so a reader never sees half a file."""
        path.parent.mkdir(parents=True, exist_ok=True)
        partial = path.with_name(f".{path.name}.{os.getpid()}.partial")
        with partial.open("wb") as fh:
            pickle.dump(self, fh, protocol=pickle.HIGHEST_PROTOCOL)
        os.replace(partial, path)

    @staticmethod
    def load(path: Path) -> ProposalHead:
        """Only files this agent wrote (the models dir, the eval cache): a pickle runs code when it is loaded."""
        with path.open("rb") as fh:
            head = pickle.load(fh)
        if not isinstance(head, ProposalHead):
            raise TypeError(f"{path} does not hold a ProposalHead")
        return head


def axis_distributions(
    classes: np.ndarray, linear: np.ndarray, mlp: tuple[np.ndarray, np.ndarray] | None, mlp_weight: float
) -> list[Distribution]:
    """Per row, the linear model's probabilities with the MLP's (classes, probabilities) mixed in at `mlp_weight`:
    what `ProposalHead.predict` gives an axis, and what cross-validation rebuilds from its separate jobs."""
    if mlp is not None:
        mlp_classes, mlp_probs = mlp
        assert list(mlp_classes) == list(classes)  # both learned the same labels, sorted
        linear = (1.0 - mlp_weight) * linear + mlp_weight * mlp_probs
    return [{str(c): float(v) for c, v in zip(classes, p, strict=True)} for p in linear]


def _fit_mlp(vectors: np.ndarray, labels: Sequence[str], counts: Mapping[str, float], hidden: int) -> MLPClassifier:
    """One hidden layer on the embedding, unweighted (balanced row weights measured worse on Tobi-Bueck); early
    stopping on a stratified 10 % when every class can spare rows."""
    early = len(labels) >= 200 and min(counts.values()) >= 10
    mlp = MLPClassifier(hidden_layer_sizes=(hidden,), alpha=1e-3, max_iter=200, early_stopping=early, random_state=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)  # small train sets stop at max_iter: fine for a vote
        return mlp.fit(vectors, list(labels))


def knn_vote(neighbours: Sequence[EvidenceTicket], axis: str, *, verified_boost: float = 3.0) -> Distribution:
    """Similarity-weighted vote of the retrieved neighbours; human-verified neighbours weigh more."""
    votes: dict[str, float] = defaultdict(float)
    for n in neighbours:
        label = n.labels.get(axis)
        if not label:
            continue
        weight = max(n.score, 0.0) ** 3
        if n.verified:
            weight *= verified_boost
        votes[label] += weight
    total = sum(votes.values())
    return {k: v / total for k, v in votes.items()} if total > 0 else {}


def mix(head: Distribution, knn: Distribution, knn_weight: float) -> Distribution:
    if not knn:
        return dict(head)
    if not head:
        return dict(knn)
    labels = set(head) | set(knn)
    mixed = {k: (1 - knn_weight) * head.get(k, 0.0) + knn_weight * knn.get(k, 0.0) for k in labels}
    total = sum(mixed.values()) or 1.0
    return {k: v / total for k, v in mixed.items()}


def head_mix_options(head: ProposalHead | None) -> dict[str, float | None]:
    """The mixing options a trained head carries (older pickles lack some: defaults)."""
    if head is None:
        return {"knn_weight": KNN_WEIGHT}
    return {
        "knn_weight": getattr(head, "knn_weight", KNN_WEIGHT),
        "dup_low": getattr(head, "dup_low", None),
        "dup_high": getattr(head, "dup_high", 0.98),
    }


def propose_distribution(
    head_probs: Mapping[str, Distribution],
    neighbours: Sequence[EvidenceTicket],
    taxonomy: Taxonomy,
    *,
    knn_weight: float = KNN_WEIGHT,
    dup_low: float | None = None,
    dup_high: float = 0.98,
) -> dict[str, Distribution]:
    """Per axis: the head's probabilities mixed with the neighbours' vote, restricted to the taxonomy's ids."""
    if dup_low is not None and neighbours and dup_high > dup_low:
        closeness = min(max((neighbours[0].score - dup_low) / (dup_high - dup_low), 0.0), 1.0)
        knn_weight = knn_weight + (1.0 - knn_weight) * closeness
    proposal: dict[str, Distribution] = {}
    for axis in AXES:
        valid = set(taxonomy.axes[axis].ids)
        dist = mix(head_probs.get(axis, {}), knn_vote(neighbours, axis), knn_weight)
        proposal[axis] = {label: p for label, p in dist.items() if label in valid}
    return proposal


IN_SCOPE_SCORES = ("similarity", "similarity+confidence", "learned")  # "learned": agent/out_of_scope.py


def in_scope_score(rule: str, nearest: float, proposal: Mapping[str, Distribution]) -> float:
    """How in-scope a ticket looks: the nearest stored ticket's similarity, plus (rule "similarity+confidence")
    the top probability of the proposal on the first axis that has one (service, then channel, then tier).

    `decide` flags a ticket out of scope below the calibrated threshold on this score; the evals fit that
    threshold on the very same numbers. The sum flags ~10 points more unknown intents than similarity alone at
    the same share of in-scope tickets flagged (evals/README.md, "Out of scope").
    """
    if rule == "similarity":
        return nearest
    if rule != "similarity+confidence":
        raise ValueError(f"unknown in-scope score {rule!r} here: the fixed rules are similarity and similarity+confidence ('learned' is scored by Calibration.in_scope)")
    confidence = next((max(dist.values()) for axis in AXES if (dist := proposal.get(axis))), 0.0)
    return nearest + confidence
