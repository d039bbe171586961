"""The learned in-scope score: P(a ticket belongs to a known class), from what `decide` already sees.

A fixed sum (nearest similarity + proposal confidence) plateaus when unknown classes are paraphrases of known ones;
a small network over a dozen signals of the retrieved tickets and the proposal separates them better. It is
trained by `triage eval` on train only: whole classes are held out in groups (`evals.calibration.fit_oos_threshold`),
so the held-out rows of known classes are the in-scope examples and the held-out classes the unknown ones.
Measured in evals/README.md ("Out of scope"): on Banking77 with 19 intents held out, recall 0.599 → 0.622 at the
same share of in-scope tickets flagged (in-scope accuracy 0.912 → 0.910), and 0.661 → 0.69-0.70 at the best
threshold.

The model is a plain JSON object in the calibration file (scaler, one hidden ReLU layer, logistic output) so
`decide` needs neither scikit-learn nor a pickle to use it.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from agent.contracts import AXES, EvidenceTicket
from agent.proposal import Distribution

# the neighbours a feature looks at: retrieval's default top_k_tickets, which the model was trained with
TOP_K = 8
FEATURES = (
    "nearest", "mean_top3", "mean_top8", "nearest_same_label", "share_same_label", "top", "margin", "entropy",
    "nearest_plus_top", "distinct_labels", "nearest_other_label", "top3_mass", "spread",
)  # fmt: skip


def first_axis(proposal: Mapping[str, Distribution]) -> str | None:
    """The axis the in-scope score reads, as `agent.proposal.in_scope_score` does: service, then channel, then tier."""
    return next((axis for axis in AXES if proposal.get(axis)), None)


def in_scope_features(neighbours: Sequence[EvidenceTicket], proposal: Mapping[str, Distribution]) -> list[float]:
    """FEATURES for one ticket: how close and how unanimous the retrieved tickets are, and how sure the proposal is."""
    axis = first_axis(proposal)
    dist = proposal.get(axis, {}) if axis else {}
    probs = sorted(dist.values(), reverse=True) or [0.0]
    label = max(dist, key=lambda k: dist[k]) if dist else None
    found = list(neighbours[:TOP_K])
    sims = [n.score for n in found] + [0.0] * (TOP_K - len(found))
    labels = [n.labels.get(axis) if axis else None for n in found]
    same = [n.score for n, lab in zip(found, labels, strict=True) if lab == label]
    other = [n.score for n, lab in zip(found, labels, strict=True) if lab != label]
    entropy = -sum(p * math.log(p) for p in probs if p > 0)
    return [
        sims[0], float(np.mean(sims[:3])), float(np.mean(sims)), max(same, default=0.0), len(same) / TOP_K,
        probs[0], probs[0] - (probs[1] if len(probs) > 1 else 0.0), entropy, sims[0] + probs[0],
        float(len(set(labels))), max(other, default=0.0), float(sum(probs[:3])), sims[0] - sims[-1],
    ]  # fmt: skip


@dataclass(frozen=True)
class InScopeModel:
    """Standardise, one hidden ReLU layer, logistic output: P(in scope)."""

    mean: tuple[float, ...]
    scale: tuple[float, ...]
    hidden_weights: tuple[tuple[float, ...], ...]  # features x hidden
    hidden_bias: tuple[float, ...]
    output_weights: tuple[float, ...]
    output_bias: float

    def probability(self, features: Sequence[float]) -> float:
        x = (np.asarray(features, dtype=float) - np.asarray(self.mean)) / np.asarray(self.scale)
        hidden = np.maximum(x @ np.asarray(self.hidden_weights) + np.asarray(self.hidden_bias), 0.0)
        z = float(hidden @ np.asarray(self.output_weights) + self.output_bias)
        return 1.0 / (1.0 + math.exp(-z)) if z > -500 else 0.0

    @classmethod
    def fit(cls, features: np.ndarray, in_scope: np.ndarray, *, hidden: int = 16, seed: int = 0) -> InScopeModel:
        """scikit-learn's MLPClassifier (alpha 1e-3, the measured setting), its weights kept as plain numbers."""
        from sklearn.neural_network import MLPClassifier

        mean = features.mean(axis=0)
        scale = np.where(features.std(axis=0) > 1e-9, features.std(axis=0), 1.0)
        net = MLPClassifier(hidden_layer_sizes=(hidden,), alpha=1e-3, max_iter=2000, random_state=seed)
        net.fit((features - mean) / scale, in_scope.astype(int))
        if list(net.classes_) != [0, 1]:
            raise ValueError("an in-scope model needs both in-scope and out-of-scope rows")
        (w1, w2), (b1, b2) = net.coefs_, net.intercepts_
        return cls(
            mean=tuple(map(float, mean)), scale=tuple(map(float, scale)),
            hidden_weights=tuple(tuple(map(float, row)) for row in w1), hidden_bias=tuple(map(float, b1)),
            output_weights=tuple(float(w) for w in w2[:, 0]), output_bias=float(b2[0]),
        )  # fmt: skip

    def to_json(self) -> dict[str, object]:
        return {
            "features": list(FEATURES), "mean": _rounded(self.mean), "scale": _rounded(self.scale),
            "hidden_weights": [_rounded(row) for row in self.hidden_weights], "hidden_bias": _rounded(self.hidden_bias),
            "output_weights": _rounded(self.output_weights), "output_bias": round(self.output_bias, 6),
        }  # fmt: skip

    @classmethod
    def from_json(cls, raw: object) -> InScopeModel:
        """Refuse a model fitted on other features or of the wrong shape, when the calibration file is loaded."""
        if not isinstance(raw, Mapping) or list(raw.get("features", [])) != list(FEATURES):
            raise ValueError(f"an in-scope model names the features {list(FEATURES)}: re-fit it with `triage eval --oos-label`")
        try:
            n = len(FEATURES)
            model = cls(
                mean=_numbers(raw["mean"], n), scale=_numbers(raw["scale"], n),
                hidden_weights=tuple(_numbers(row, None) for row in raw["hidden_weights"]),
                hidden_bias=_numbers(raw["hidden_bias"], None), output_weights=_numbers(raw["output_weights"], None),
                output_bias=float(raw["output_bias"]),
            )  # fmt: skip
        except (KeyError, TypeError, ValueError) as exc:
            raise ValueError(f"the in-scope model is malformed ({exc}): re-fit it with `triage eval --oos-label`") from exc
        width = len(model.hidden_bias)
        shapes_agree = len(model.hidden_weights) == n and all(len(r) == width for r in model.hidden_weights) and len(model.output_weights) == width
        if not shapes_agree or any(s <= 0 for s in model.scale):
            raise ValueError("the in-scope model's weights do not fit its features: re-fit it with `triage eval --oos-label`")
        return model


def _rounded(values: Sequence[float]) -> list[float]:
    return [round(v, 6) for v in values]


def _numbers(values: object, length: int | None) -> tuple[float, ...]:
    if not isinstance(values, list) or (length is not None and len(values) != length):
        raise ValueError(f"expected a list of {length or 'some'} numbers")
    numbers = tuple(float(v) for v in values)
    if not all(math.isfinite(v) for v in numbers):
        raise ValueError("not every number is finite")
    return numbers
