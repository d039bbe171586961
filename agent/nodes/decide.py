"""decide: combine the proposal and the LLM vote into calibrated confidences, then auto-apply/suggest/review.

The confidence reported for a top label is P(it is right) from the calibration's confidence model when the
calibration file has one for the axis (agent/confidence.py), else the combined distribution's probability.
Alternatives are reported on that scale and never above the chosen label (`axis_label` says how).

The LLM's vote weight is measured by the evals per axis (the embedded 135M model: none on service, a small one on
tier; a capable endpoint earns more), so the LLM can break near-ties but cannot override strong evidence.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from langgraph.runtime import Runtime

from agent.contracts import AXES, AxisLabel, Decision, LabelAlternative
from agent.proposal import Distribution
from agent.settings import vote_weight_for
from agent.state import TriageContext, TriageState

LLM_WORDS_MAX = 200
# the classify prompt's answer shape writes placeholders in angle brackets: "<one or two sentences citing [ids]>"
_ANGLE_PLACEHOLDER = re.compile(r"<[^<>\n]+>")


def combine(proposal: Distribution, llm_label: str | None, llm_confidence: float, weight: float) -> Distribution:
    """(1 - w) * proposal + w * LLM vote, the vote putting its stated confidence on its label."""
    if llm_label is None or weight <= 0:
        return dict(proposal)
    labels = set(proposal) | {llm_label}
    vote = {label: (llm_confidence if label == llm_label else 0.0) for label in labels}
    spread = (1.0 - llm_confidence) / max(len(labels) - 1, 1)
    vote = {label: v if label == llm_label else spread for label, v in vote.items()}
    if not proposal:
        return vote
    return {label: (1 - weight) * proposal.get(label, 0.0) + weight * vote[label] for label in labels}


def axis_label(dist: Distribution, *, llm_label: str | None, fallback: str, shown: Distribution | None = None) -> AxisLabel:
    """The top label of `dist` (what routing follows), with the confidences of `shown` (the calibrated ones) when given.

    `shown` puts the calibrated P(top label is right) on the top label and shares the rest in the proposal's
    proportions, so on a vague ticket (P(right) 0.21) an alternative's share of the rest could read 0.47, above
    the label that is routed. The rule, so that one scale orders everything: the chosen label carries the highest
    reported confidence; an alternative reports its share of 1 - P(top), capped at P(top) (a capped alternative
    reads "as likely as the chosen label, not more": what the system cannot rank above the label it routes), and
    alternatives are listed by that number (ties by `dist`). Which label is chosen never changes.
    """
    if not dist:
        return AxisLabel(label=fallback, confidence=0.0, source="fallback")
    shown = shown or dist
    label = max(dist, key=lambda k: dist[k])
    top = _reported(shown.get(label, 0.0))
    others = {k: min(_reported(shown.get(k, 0.0)), top) for k in dist if k != label}
    ranked = sorted(others, key=lambda k: (others[k], dist[k]), reverse=True)
    return AxisLabel(
        label=label,
        confidence=top,
        source="llm" if label == llm_label else "proposal",
        alternatives=[LabelAlternative(label=k, confidence=others[k]) for k in ranked[:3] if others[k] > 0.0],
    )


def _reported(probability: float) -> float:
    return round(min(max(probability, 0.0), 1.0), 4)


def decide(state: TriageState, runtime: Runtime[TriageContext]) -> TriageState:
    ctx = runtime.context
    settings, taxonomy, calibration = ctx.settings, ctx.taxonomy, ctx.calibration
    answer = state.get("llm_answer") or {}
    labels: dict[str, AxisLabel] = {}
    intake = state["ticket"].channel
    neighbours = state.get("neighbours", [])
    for axis in AXES:
        if axis == "channel" and intake is not None:
            labels[axis] = AxisLabel(label=intake, confidence=1.0, source="intake")
            continue
        llm_label = answer.get(axis)
        # per axis: the calibration's weight, else the setting's, else the measured default; the LLM alone: 1
        weight = 1.0 if settings.mode == "llm" else vote_weight_for(axis, calibration.llm_vote_weight, settings.llm_vote_weight)
        dist = combine(state.get("proposal", {}).get(axis, {}), llm_label, float(answer.get("confidence", 0.5)), weight)
        model = calibration.confidence_model(axis)
        shown = model.rescale(dist, neighbours, axis) if model is not None else None
        labels[axis] = axis_label(dist, llm_label=llm_label if weight > 0 else None, fallback=taxonomy.axes[axis].fallback, shown=shown)

    oos_threshold = calibration.out_of_scope_threshold or settings.out_of_scope_threshold
    calibrated = bool(calibration.out_of_scope_threshold)
    rule = calibration.out_of_scope_score if calibrated else "similarity"
    if not neighbours:
        in_scope = 0.0
    else:  # uncalibrated: the setting's threshold on the nearest ticket's similarity
        in_scope = calibration.in_scope(neighbours, state.get("proposal", {})) if calibrated else neighbours[0].score
    out_of_scope = bool(neighbours) and in_scope < oos_threshold
    llm_expected = settings.mode != "proposal" and ctx.llm is not None
    llm_missing = llm_expected and not answer
    warnings = []
    if settings.mode != "proposal" and ctx.llm is None:
        warnings.append("no LLM configured; labels come from the proposal")
    if out_of_scope:
        what = {
            "similarity": "nearest past ticket similarity",
            "similarity+confidence": "nearest past ticket similarity + proposal confidence",
            "learned": "P(in scope) from the retrieved tickets and the proposal",
        }.get(rule, rule)
        warnings.append(f"out of scope: {what} {in_scope:.2f} < {oos_threshold:.2f}")

    judged = {axis: label for axis, label in labels.items() if label.source != "intake"}
    # an inferred channel is a hint (intake metadata was missing), so it can block auto-apply but not force review
    routed = {axis: label for axis, label in judged.items() if axis != "channel"}
    weak = any(lab.source == "fallback" or lab.confidence < settings.review_threshold for lab in routed.values())
    if out_of_scope or llm_missing or weak:
        decision = Decision.NEEDS_REVIEW
    elif all(lab.confidence >= calibration.threshold(axis, lab.label) for axis, lab in judged.items()):
        decision = Decision.AUTO_APPLY
    else:
        decision = Decision.SUGGEST
    return {
        "labels": labels,
        "out_of_scope": out_of_scope,
        "decision": decision,
        "rationale": build_rationale(state, labels),
        "warnings": warnings,
    }


def build_rationale(state: TriageState, labels: dict[str, AxisLabel]) -> str:
    """A rationale that always cites evidence ids, with the LLM's own words quoted when they may stand beside them."""
    service, tier = labels["service"].label, labels["tier"].label
    supporting = [n for n in state.get("neighbours", []) if n.labels.get("service") == service][:3]
    cited = supporting or state.get("neighbours", [])[:2]
    parts = [f"service {service} ({labels['service'].confidence:.2f}), tier {tier} ({labels['tier'].confidence:.2f})"]
    if cited:
        parts.append(
            "nearest past tickets: "
            + ", ".join(f"[{n.id}] {n.labels.get('service')}/{n.labels.get('tier')} sim {n.score:.2f}" for n in cited)
        )
    articles = state.get("articles", [])[:2]
    if articles:
        parts.append("KB: " + ", ".join(f"[{a.id}] {a.title}" for a in articles))
    words = llm_words(state.get("llm_answer"), labels)
    if words:
        parts.append(f'LLM said: "{words}"')
        return "; ".join(parts)  # the quote ends it: no full stop after the LLM's own
    return "; ".join(parts) + "."


def llm_words(answer: Mapping[str, Any] | None, labels: Mapping[str, AxisLabel]) -> str | None:
    """The LLM's rationale, cut to LLM_WORDS_MAX, or None where it is no explanation of this result.

    Leads read the rationale as the system's explanation, and the LLM's words are ticket-steerable model text:
    they are dropped when they echo the prompt's answer-shape placeholder (any <...>), and when none of the LLM's
    labels was chosen on any axis (its answer was outvoted, so its words argue for labels that lost).
    """
    if not answer:
        return None
    words = " ".join(str(answer.get("rationale") or "").split())
    if not words or _ANGLE_PLACEHOLDER.search(words) or not _llm_label_won(answer, labels):
        return None
    words = words.replace('"', "'")
    return words if len(words) <= LLM_WORDS_MAX else words[: LLM_WORDS_MAX - 1].rstrip() + "…"


def _llm_label_won(answer: Mapping[str, Any], labels: Mapping[str, AxisLabel]) -> bool:
    return any(
        answer.get(axis) == label.label for axis, label in labels.items() if label.source != "intake" and answer.get(axis)
    )
