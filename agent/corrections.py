"""Corrections teach at once: a human-verified past ticket that is nearly the same text decides the label.

A lead's accepted or edited review is upserted into the ticket store as verified. The trained head only
learns it at the next retrain, and a similarity-weighted vote can still be outvoted by many seed neighbours,
so a near-duplicate of a corrected ticket would repeat the old mistake. This rule closes that gap.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from agent.contracts import EvidenceTicket, Taxonomy

Distribution = dict[str, float]

# channel is intake metadata of the reviewed ticket, not something its text says about a look-alike
FOLLOWED_AXES: tuple[str, ...] = ("service", "tier")


def follow_verified_neighbours(
    proposal: Mapping[str, Distribution],
    neighbours: Sequence[EvidenceTicket],
    taxonomy: Taxonomy,
    *,
    min_score: float,
    axes: Sequence[str] = FOLLOWED_AXES,
) -> dict[str, Distribution]:
    """Per axis: when the most similar verified neighbour scores at least `min_score`, its label gets
    probability = that similarity and the other labels share the rest in their proposed proportions."""
    out = {axis: dict(dist) for axis, dist in proposal.items()}
    verified = [n for n in neighbours if n.verified and n.score >= min_score]
    if not verified:
        return out
    best = max(verified, key=lambda n: n.score)
    for axis in axes:
        label = best.labels.get(axis)
        if not label or label not in taxonomy.axes[axis].ids:  # type: ignore[index]
            continue
        weight = min(best.score, 1.0)
        rest = {k: v for k, v in out.get(axis, {}).items() if k != label}
        total = sum(rest.values())
        dist = {k: (1.0 - weight) * v / total for k, v in rest.items()} if total > 0 else {}
        dist[label] = weight if dist else 1.0
        out[axis] = dist
    return out
