"""The calibrated confidence of a top label: P(it is right), from what `decide` sees about the ticket.

The proposal's top probability ranks tickets well in the middle and poorly at the top: on noisy queues a
ticket whose nearest stored neighbour is a near-duplicate with the same label is right far more often than its
probability says, and one whose neighbours disagree with the head less often. A logistic model over a few such
signals, fitted by `triage eval` on the out-of-fold proposals of the train file (never the test file), turns
them into one probability; the per-class auto-apply thresholds are then fitted on that probability. Measured in
evals/README.md ("Confidence model"): Tobi-Bueck auto-apply at a 90 % target 9.2 % → 10.9 % of tickets (precision
0.923), Banking77 ECE 0.028 → 0.017; on a train set unlike the tickets (the tier gold set against seed chat) it
sharpens confidences too much (ECE 0.045 → 0.123): re-fit the calibration on the deployment's own tickets.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from agent.contracts import EvidenceTicket
from agent.proposal import Distribution

# the order of a model's coefficients; a calibration file names them, so a file fitted on another set is refused.
# Chosen by nested cross-validation on train only (evals/README.md, "Confidence model"): margin, the neighbours'
# weighted share and log(top) added nothing there.
FEATURES = ("top", "nearest", "nearest_agrees", "nearest_if_agrees")


def confidence_features(dist: Mapping[str, float], neighbours: Sequence[EvidenceTicket], axis: str) -> list[float]:
    """The signals of FEATURES for the top label of `dist` (an axis's distribution) given the retrieved tickets:
    its probability, the nearest stored ticket's similarity, whether that ticket has the same label, and both."""
    label = max(dist, key=lambda k: dist[k]) if dist else None
    top = dist[label] if label is not None else 0.0
    nearest = neighbours[0].score if neighbours else 0.0
    agrees = float(bool(neighbours) and label is not None and neighbours[0].labels.get(axis) == label)
    return [top, nearest, agrees, nearest * agrees]


@dataclass(frozen=True)
class ConfidenceModel:
    """Logistic regression over FEATURES: P(top label is right)."""

    coef: tuple[float, ...]
    intercept: float

    @classmethod
    def from_json(cls, raw: object) -> ConfidenceModel:
        if not isinstance(raw, Mapping):
            raise ValueError("a confidence model is {'features': [...], 'coef': [...], 'intercept': x}")
        if list(raw.get("features", [])) != list(FEATURES):
            raise ValueError(f"confidence model features {raw.get('features')!r} are not {list(FEATURES)}: re-fit it with `triage eval`")
        coef, intercept = raw.get("coef"), raw.get("intercept")
        numbers = isinstance(coef, list) and len(coef) == len(FEATURES) and all(_is_number(c) for c in coef)
        if not numbers or not _is_number(intercept):
            raise ValueError(f"confidence model needs {len(FEATURES)} numeric 'coef' and a numeric 'intercept'")
        return cls(coef=tuple(float(c) for c in coef), intercept=float(intercept))  # type: ignore[union-attr, arg-type]

    def to_json(self) -> dict[str, object]:
        return {"features": list(FEATURES), "coef": [round(c, 6) for c in self.coef], "intercept": round(self.intercept, 6)}

    def probability(self, features: Sequence[float]) -> float:
        z = self.intercept + sum(c * x for c, x in zip(self.coef, features, strict=True))
        return 1.0 / (1.0 + math.exp(-z)) if z > -60 else 0.0

    def rescale(self, dist: Mapping[str, float], neighbours: Sequence[EvidenceTicket], axis: str) -> Distribution:
        """`dist` with its top label's probability replaced by the model's, and the rest of the mass shared among
        the other labels in proportion to their probabilities (the order of the alternatives is kept)."""
        if not dist:
            return {}
        label = max(dist, key=lambda k: dist[k])
        right = self.probability(confidence_features(dist, neighbours, axis))
        rest = sum(v for k, v in dist.items() if k != label)
        scale = (1.0 - right) / rest if rest > 0 else 0.0
        return {k: (right if k == label else v * scale) for k, v in dist.items()}


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)
