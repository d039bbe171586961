"""The fast, calibrated proposal: a linear head over dense + sparse features, mixed with a kNN vote.

Sparse word and character n-grams carry what a small English embedding model misses (German, Spanish,
French, Portuguese tickets; product names); the dense vector carries paraphrase. The head is trained on
the labelled store, so a human correction changes it at the next retrain, and the kNN vote changes at once.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import joblib
import numpy as np
from scipy import sparse
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import FeatureUnion

from agent.contracts import AXES, EvidenceTicket, Taxonomy

Distribution = dict[str, float]


def make_vectorizer() -> FeatureUnion:
    return FeatureUnion(
        [
            ("word", TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True, min_df=1, max_features=100_000)),
            ("char", TfidfVectorizer(analyzer="char_wb", ngram_range=(2, 5), sublinear_tf=True, min_df=2, max_features=150_000)),
        ]
    )


@dataclass
class ProposalHead:
    """Per-axis logistic regression; `classes` are taxonomy ids seen in training."""

    vectorizer: FeatureUnion | None
    heads: dict[str, LogisticRegression] = field(default_factory=dict)
    priors: dict[str, Distribution] = field(default_factory=dict)
    dense_weight: float = 1.0
    fingerprint: str = ""

    @classmethod
    def fit(
        cls,
        texts: Sequence[str],
        vectors: np.ndarray,
        labels: dict[str, Sequence[str | None]],
        taxonomy: Taxonomy,
        *,
        sample_weight: np.ndarray | None = None,
        C: float = 10.0,
        dense_weight: float = 1.0,
        fingerprint: str = "",
    ) -> ProposalHead:
        vectorizer = make_vectorizer() if texts else None
        sparse_x = vectorizer.fit_transform(texts) if vectorizer is not None else None
        head = cls(vectorizer=vectorizer, dense_weight=dense_weight, fingerprint=fingerprint)
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
            if len(counts) < 2 or sparse_x is None:
                continue
            x = head._features(sparse_x[rows], vectors[rows])
            weight = sample_weight[rows] if sample_weight is not None else None
            model = LogisticRegression(C=C, max_iter=2000)
            model.fit(x, ys, sample_weight=weight)
            head.heads[axis] = model
        return head

    def _features(self, sparse_x: sparse.spmatrix, dense_x: np.ndarray) -> sparse.csr_matrix:
        return sparse.hstack([sparse_x, sparse.csr_matrix(dense_x * self.dense_weight)], format="csr")

    def predict(self, texts: Sequence[str], vectors: np.ndarray) -> list[dict[str, Distribution]]:
        """Per text, per axis, a probability over the labels the head knows."""
        out: list[dict[str, Distribution]] = [{} for _ in texts]
        sparse_x = self.vectorizer.transform(texts) if self.vectorizer is not None else None
        for axis in AXES:
            model = self.heads.get(axis)
            if model is None or sparse_x is None:
                for row in out:
                    if axis in self.priors:
                        row[axis] = dict(self.priors[axis])
                continue
            probs = model.predict_proba(self._features(sparse_x, vectors))
            for row, p in zip(out, probs, strict=True):
                row[axis] = {str(c): float(v) for c, v in zip(model.classes_, p, strict=True)}
        return out

    def save(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        joblib.dump(self, path)

    @staticmethod
    def load(path: Path) -> ProposalHead:
        head = joblib.load(path)
        if not isinstance(head, ProposalHead):
            raise TypeError(f"{path} does not hold a ProposalHead")
        return head


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
