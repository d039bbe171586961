"""classify: ask the LLM for labels constrained to the taxonomy, with the proposal and evidence in the prompt."""

from __future__ import annotations

import json

from langgraph.runtime import Runtime

from agent.llm import LLMContextOverflow, LLMSkipped, LLMUnavailable
from agent.prompts import CUT_MARKER, MIN_TICKET_TOKENS, estimate_messages_tokens, fence, fit_tokens, render
from agent.state import TriageContext, TriageState
from agent.taxonomy import answer_model, label_glossary

_SNIPPET = 160


def _top(dist: dict[str, float], n: int = 3) -> str:
    ranked = sorted(dist.items(), key=lambda kv: kv[1], reverse=True)[:n]
    return ", ".join(f"{label} ({p:.2f})" for label, p in ranked) or "nothing"


def _one_line(text: str | None) -> str:
    return " ".join((text or "").split())[:_SNIPPET]


def build_messages(state: TriageState, ctx: TriageContext) -> list[dict[str, str]]:
    return _messages(state, ctx, prompt_ticket(state, ctx)[0])


def prompt_ticket(state: TriageState, ctx: TriageContext) -> tuple[str, bool]:
    """The ticket text for the prompt, cut so prompt + answer fit the LLM's context (a character cap alone does
    not: 6,000 Chinese characters are ~12,000 tokens), and whether it was cut."""
    fixed = estimate_messages_tokens(_messages(state, ctx, ""))
    return fit_tokens(state["text"], max(ctx.settings.llm_ctx - ctx.settings.llm_max_tokens - fixed, MIN_TICKET_TOKENS))


def _messages(state: TriageState, ctx: TriageContext, ticket: str) -> list[dict[str, str]]:
    taxonomy = ctx.taxonomy
    chars = ctx.settings.llm_label_chars or None
    with_channel = state["ticket"].channel is None
    proposal = state.get("proposal", {})
    suggestion = "; ".join(f"{axis}: {_top(proposal.get(axis, {}))}" for axis in ("service", "tier"))
    channel_section = ""
    if with_channel:
        channel_section = f"\nChannels (field \"channel\"; where the ticket came from):\n{label_glossary(taxonomy, 'channel', max_chars=chars)}\n"
    # past tickets are customer text too (a reviewed ticket is stored as its customer wrote it): fenced like the ticket
    similar = "\n".join(
        f"- [{n.id}] service={n.labels.get('service')} tier={n.labels.get('tier')}:\n{fence(_one_line(n.text))}"
        for n in state.get("neighbours", [])[:3]
    ) or "- none"
    articles = "\n".join(f"- [{a.id}] {a.title}" for a in state.get("articles", [])) or "- none"
    shape = {"service": "<service id>", "tier": "<L1|L2|L3>", "confidence": 0.0, "rationale": "<one or two sentences citing [ids]>"}
    if with_channel:
        shape = {"service": "<service id>", "channel": "<channel id>", "tier": "<L1|L2|L3>", "confidence": 0.0, "rationale": shape["rationale"]}
    feedback = ""
    if state.get("validation_error"):
        feedback = f"\nYour previous answer was rejected: {state['validation_error']}\nUse only the ids listed above.\n"
    user = render(
        ctx.settings.prompts_dir,
        "classify",
        service_labels=label_glossary(taxonomy, "service", max_chars=chars),
        tier_labels=label_glossary(taxonomy, "tier", max_chars=chars * 2 if chars else None),
        channel_section=channel_section,
        proposal=suggestion,
        similar_tickets=similar,
        articles=articles,
        ticket=fence(ticket),
        feedback=feedback,
        answer_shape=json.dumps(shape),
    )
    system = render(ctx.settings.prompts_dir, "system")
    return [{"role": "system", "content": system}, {"role": "user", "content": user}]


def classify(state: TriageState, runtime: Runtime[TriageContext]) -> TriageState:
    ctx = runtime.context
    assert ctx.llm is not None, "route_after_propose sends here only with an LLM"
    model = answer_model(ctx.taxonomy, with_channel=state["ticket"].channel is None)
    ticket, cut = prompt_ticket(state, ctx)
    warnings = []
    if cut and not state.get("attempts"):  # once, not again on each re-ask
        warnings.append(f"ticket text cut to {len(ticket) - len(CUT_MARKER)} characters for the LLM's {ctx.settings.llm_ctx}-token context")
    try:
        reply = ctx.llm.chat(
            _messages(state, ctx, ticket),
            schema=model.model_json_schema(),
            max_tokens=ctx.settings.llm_max_tokens,
        )
    except LLMUnavailable as exc:
        return {"llm_failed": True, "llm_answer": None, "warnings": [*warnings, failure_warning(exc)]}
    result: TriageState = {"llm_reply": reply.text, "usage": reply.usage, "model": reply.model, "llm_failed": False}
    if warnings:
        result["warnings"] = warnings
    return result


def failure_warning(exc: LLMUnavailable) -> str:
    """Says which failure it was, so an operator checks the network only when the network is the problem."""
    if isinstance(exc, LLMContextOverflow):
        sizes = f"{exc.requested} tokens > {exc.limit}" if exc.requested and exc.limit else str(exc)
        return f"ticket too long for the LLM's context ({sizes}); labels come from the proposal"
    if isinstance(exc, LLMSkipped):
        return f"{exc}; labels come from the proposal"
    return f"LLM failed, labels come from the proposal: {exc}"
