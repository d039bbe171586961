"""The rules of a ticket's revision history, as pure functions (no database, no model), so each is tested alone.

- The current labels are the latest revision that a human has not rejected.
- A human's label wins over the agent's until a later human changes it: when the agent re-classifies, a
  human-held axis keeps the human's label and the agent's differing label is kept as a *suggestion*.
- The agent never lowers the tier; an escalation raises it (to the given tier, else one step); only a human
  lowers it (an edit review).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Protocol

from agent.contracts import AXES, AxisLabel, Classification, Decision, Evidence, Route, Taxonomy, Usage

HELD_SOURCES = frozenset({"human", "intake"})


class LabelRuleError(ValueError):
    """A label or tier change the rules do not allow; the message says what to do instead."""


class RevisionLike(Protocol):
    seq: int
    classification: dict | None
    rejects: int | None


def current_seq(revisions: Sequence[RevisionLike], *, rejected: set[int] | frozenset[int] = frozenset()) -> int | None:
    """The latest revision with labels that no reject marker points at (None: every labelled one was rejected).

    `rejected` adds seqs about to be rejected (the marker is not written yet)."""
    rejected = {r.rejects for r in revisions if r.rejects is not None} | set(rejected)
    for revision in sorted(revisions, key=lambda r: r.seq, reverse=True):
        if revision.classification is not None and revision.seq not in rejected:
            return revision.seq
    return None


def rejected_by(revisions: Sequence[RevisionLike]) -> dict[int, int]:
    """{rejected seq: seq of the reject marker}."""
    return {r.rejects: r.seq for r in revisions if r.rejects is not None}


def changed_axes(before: Mapping[str, str] | None, after: Mapping[str, str] | None) -> list[str]:
    before, after = before or {}, after or {}
    return [axis for axis in AXES if before.get(axis) != after.get(axis)]


def flat_labels(classification: Classification | None) -> dict[str, str] | None:
    return {axis: label.label for axis, label in classification.labels.items()} if classification else None


def tier_rank(taxonomy: Taxonomy, tier: str) -> int:
    """The tier's position in the taxonomy (L1 < L2 < L3: tiers are listed from lowest to highest)."""
    ids = taxonomy.axes["tier"].ids
    if tier not in ids:
        raise LabelRuleError(f"unknown tier {tier!r}; taxonomy {taxonomy.ref} has {ids}")
    return ids.index(tier)


def canonical_label(taxonomy: Taxonomy, axis: str, requested: str) -> str:
    """The taxonomy's id for a label an integration wrote in its own case (`l3` is `L3`, `Hardware` is `hardware`,
    as a channel is matched; ids never differ by case alone); anything else unchanged, for the error to name."""
    ids = taxonomy.axes[axis].ids if axis in taxonomy.axes else []  # type: ignore[index]
    return next((i for i in ids if i.casefold() == requested.strip().casefold()), requested)


def escalation_target(taxonomy: Taxonomy, current_tier: str | None, requested: str | None) -> str:
    """The tier an escalation moves to: the requested one (never lower than now), else one step up."""
    ids = taxonomy.axes["tier"].ids
    if requested is not None:
        if current_tier is not None and tier_rank(taxonomy, requested) < tier_rank(taxonomy, current_tier):
            raise LabelRuleError(
                f"an escalation cannot lower the tier from {current_tier} to {requested}; "
                "a lead lowers it with an edit review (POST /v1/tickets/{id}/reviews)"
            )
        tier_rank(taxonomy, requested)
        return requested
    if current_tier is None:
        return ids[min(1, len(ids) - 1)]
    return ids[min(tier_rank(taxonomy, current_tier) + 1, len(ids) - 1)]


def route_for(taxonomy: Taxonomy, service: str) -> Route:
    label = taxonomy.axes["service"].get(service)
    routing = label.routing if label and label.routing else None
    return Route(team=routing.team if routing else "triage", queue=routing.queue if routing else None)


def merge_agent(
    current: Classification | None,
    proposed: Classification,
    taxonomy: Taxonomy,
    *,
    escalate_to: str | None = None,
) -> tuple[Classification, dict[str, AxisLabel]]:
    """The labels an agent re-classification leaves in force, and the agent's labels that did not win."""
    labels = dict(proposed.labels)
    suggestion: dict[str, AxisLabel] = {}
    warnings = list(proposed.warnings)
    if current is not None:
        for axis in AXES:
            held = current.labels[axis]
            if held.source != "human":
                continue
            if labels[axis].label != held.label:
                suggestion[axis] = labels[axis]
            labels[axis] = held
        floor = current.labels["tier"]
        if tier_rank(taxonomy, labels["tier"].label) < tier_rank(taxonomy, floor.label):
            suggestion.setdefault("tier", labels["tier"])
            warnings.append(
                f"tier kept at {floor.label}: the agent proposed {labels['tier'].label}, and only a human lowers a tier"
            )
            labels["tier"] = floor
    if escalate_to is not None and tier_rank(taxonomy, escalate_to) > tier_rank(taxonomy, labels["tier"].label):
        labels["tier"] = AxisLabel(label=escalate_to, confidence=1.0, source="intake")
        suggestion.pop("tier", None)  # the escalation settled the tier
    elif escalate_to is not None and current is not None and escalate_to == current.labels["tier"].label:
        # one step up from the top tier, or the tier it already has: say so rather than record a silent no-op
        top = escalate_to == taxonomy.axes["tier"].ids[-1]
        why = "the highest tier" if top else "the tier this escalation asks for"
        warnings.append(f"already at tier {escalate_to}, {why}: the tier stays; the note is kept")

    decision = proposed.decision
    judged = [label for axis, label in labels.items() if not (axis == "channel" and label.source == "intake")]
    if all(label.source in HELD_SOURCES for label in judged):
        decision = Decision.SUGGEST if suggestion else Decision.AUTO_APPLY
    elif suggestion and decision == Decision.AUTO_APPLY:
        decision = Decision.SUGGEST  # the agent disagrees with a human: a lead should see it
    merged = proposed.model_copy(
        update={
            "labels": labels,
            "decision": decision,
            "route": route_for(taxonomy, labels["service"].label),
            "warnings": list(dict.fromkeys(warnings)),
        }
    )
    return merged, suggestion


def validate_labels(taxonomy: Taxonomy, labels: Mapping[str, str]) -> None:
    for axis, label in labels.items():
        if axis not in taxonomy.axes:
            raise LabelRuleError(f"unknown axis {axis!r}; the axes are {list(AXES)}")
        ids = taxonomy.axes[axis].ids  # type: ignore[index]
        if label not in ids:
            raise LabelRuleError(f"unknown {axis} label {label!r}; taxonomy {taxonomy.ref} has {ids}")


def human_classification(
    base: Classification | None,
    labels: Mapping[str, str],
    taxonomy: Taxonomy,
    *,
    reviewer: str,
    comment: str | None,
) -> Classification:
    """A reviewed classification: every axis the human's (confidence 1), evidence kept from what they reviewed."""
    missing = [axis for axis in AXES if axis not in labels]
    if missing:
        raise LabelRuleError(f"labels for {missing} are missing; the ticket has no current labels to keep them from")
    validate_labels(taxonomy, labels)
    axis_labels = {axis: AxisLabel(label=labels[axis], confidence=1.0, source="human") for axis in AXES}
    rationale = f"reviewed by user:{reviewer}" + (f": {comment}" if comment else "")
    update = {
        "labels": axis_labels,
        "decision": Decision.AUTO_APPLY,
        "rationale": rationale,
        "route": route_for(taxonomy, labels["service"]),
        "out_of_scope": False,
        "taxonomy_version": taxonomy.ref,
        "model": "human",
        "latency_ms": 0.0,
        "usage": Usage(),
        "warnings": [],
    }
    if base is not None:
        return base.model_copy(update=update)
    return Classification(evidence=Evidence(), **update)  # type: ignore[arg-type]
