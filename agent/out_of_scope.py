"""The learned in-scope score: P(a ticket belongs to a known class), from what `decide` already sees.

A fixed sum (nearest similarity + proposal confidence) plateaus when unknown classes are paraphrases of known ones;
a small network over a dozen signals of the retrieved tickets and the proposal separates them better. It is
trained by `triage eval` on train only: whole classes are held out in groups (`evals.calibration.fit_oos_threshold`),
so the held-out rows of known classes are the in-scope examples and the held-out classes the unknown ones.
Measured in evals/README.md ("Out of scope"): on Banking77 with 19 intents held out, recall 0.599 → 0.628 at the
same share of in-scope tickets flagged (in-scope accuracy 0.912 → 0.914), and 0.661 → 0.72-0.73 at the best
threshold; three networks averaged hold the seed-to-seed spread of one (1-3 points) down.

The model is a plain JSON object in the calibration file (scaler, then per network one hidden ReLU layer and a
logistic output) so `decide` needs neither scikit-learn nor a pickle to use it.
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
class InScopeNet:
    """One hidden ReLU layer and a logistic output over standardised features."""

    hidden_weights: tuple[tuple[float, ...], ...]  # features x hidden
    hidden_bias: tuple[float, ...]
    output_weights: tuple[float, ...]
    output_bias: float

    def probability(self, x: np.ndarray) -> float:
        hidden = np.maximum(x @ np.asarray(self.hidden_weights) + np.asarray(self.hidden_bias), 0.0)
        z = float(hidden @ np.asarray(self.output_weights) + self.output_bias)
        return 1.0 / (1.0 + math.exp(-z)) if z > -500 else 0.0

    def to_json(self) -> dict[str, object]:
        return {
            "hidden_weights": [_rounded(row) for row in self.hidden_weights], "hidden_bias": _rounded(self.hidden_bias),
            "output_weights": _rounded(self.output_weights), "output_bias": round(self.output_bias, 6),
        }  # fmt: skip

    @classmethod
    def from_json(cls, raw: Mapping[str, object]) -> InScopeNet:
        return cls(
            hidden_weights=tuple(_numbers(row, None) for row in _list(raw["hidden_weights"])),
            hidden_bias=_numbers(raw["hidden_bias"], None), output_weights=_numbers(raw["output_weights"], None),
            output_bias=float(raw["output_bias"]),  # type: ignore[arg-type]
        )  # fmt: skip

    def fits(self, features: int) -> bool:
        width = len(self.hidden_bias)
        return len(self.hidden_weights) == features and all(len(r) == width for r in self.hidden_weights) and len(self.output_weights) == width


# networks averaged: one network's recall at the shipped flag share moves by 2 points with its seed (0.624-0.645 over
# seeds 0-4), the mean of three by 0.6 (evals/README.md, "Out of scope")
MEMBERS = 3


@dataclass(frozen=True)
class InScopeModel:
    """Standardise, then the mean P(in scope) of a few small networks fitted with different seeds."""

    mean: tuple[float, ...]
    scale: tuple[float, ...]
    nets: tuple[InScopeNet, ...]

    def probability(self, features: Sequence[float]) -> float:
        x = (np.asarray(features, dtype=float) - np.asarray(self.mean)) / np.asarray(self.scale)
        return sum(net.probability(x) for net in self.nets) / len(self.nets)

    @classmethod
    def fit(cls, features: np.ndarray, in_scope: np.ndarray, *, hidden: int = 16, seed: int = 0, members: int = MEMBERS) -> InScopeModel:
        """scikit-learn's MLPClassifier (alpha 1e-3, the measured setting), seeds `seed` on, weights kept as plain numbers."""
        from sklearn.neural_network import MLPClassifier

        mean = features.mean(axis=0)
        scale = np.where(features.std(axis=0) > 1e-9, features.std(axis=0), 1.0)
        if len(set(in_scope.astype(int).tolist())) != 2:
            raise ValueError("an in-scope model needs both in-scope and out-of-scope rows")
        nets = []
        for k in range(members):
            net = MLPClassifier(hidden_layer_sizes=(hidden,), alpha=1e-3, max_iter=2000, random_state=seed + k)
            net.fit((features - mean) / scale, in_scope.astype(int))
            (w1, w2), (b1, b2) = net.coefs_, net.intercepts_
            nets.append(InScopeNet(
                hidden_weights=tuple(tuple(map(float, row)) for row in w1), hidden_bias=tuple(map(float, b1)),
                output_weights=tuple(float(w) for w in w2[:, 0]), output_bias=float(b2[0]),
            ))  # fmt: skip
        return cls(mean=tuple(map(float, mean)), scale=tuple(map(float, scale)), nets=tuple(nets))

    def to_json(self) -> dict[str, object]:
        return {"features": list(FEATURES), "mean": _rounded(self.mean), "scale": _rounded(self.scale), "networks": [n.to_json() for n in self.nets]}

    @classmethod
    def from_json(cls, raw: object) -> InScopeModel:
        """Refuse a model fitted on other features or of the wrong shape, when the calibration file is loaded. A
        file written before the networks were averaged holds one network's weights at the top level."""
        if not isinstance(raw, Mapping) or list(raw.get("features", [])) != list(FEATURES):
            raise ValueError(f"an in-scope model names the features {list(FEATURES)}: re-fit it with `triage eval --oos-label`")
        n = len(FEATURES)
        try:
            nets = tuple(InScopeNet.from_json(net) for net in _list(raw["networks"] if "networks" in raw else [raw]))  # type: ignore[arg-type]
            model = cls(mean=_numbers(raw["mean"], n), scale=_numbers(raw["scale"], n), nets=nets)
        except (KeyError, TypeError, ValueError) as exc:
            raise ValueError(f"the in-scope model is malformed ({exc}): re-fit it with `triage eval --oos-label`") from exc
        if not model.nets or not all(net.fits(n) for net in model.nets) or any(s <= 0 for s in model.scale):
            raise ValueError("the in-scope model's weights do not fit its features: re-fit it with `triage eval --oos-label`")
        return model


def _list(value: object) -> list[object]:
    if not isinstance(value, list) or not all(isinstance(v, list | Mapping) for v in value):
        raise ValueError("expected a list")
    return value


def _rounded(values: Sequence[float]) -> list[float]:
    return [round(v, 6) for v in values]


def _numbers(values: object, length: int | None) -> tuple[float, ...]:
    if not isinstance(values, list) or (length is not None and len(values) != length):
        raise ValueError(f"expected a list of {length or 'some'} numbers")
    numbers = tuple(float(v) for v in values)
    if not all(math.isfinite(v) for v in numbers):
        raise ValueError("not every number is finite")
    return numbers
