"""draft: a self-service answer grounded in the retrieved KB articles, with citations, shaped for the channel.

Only when the evidence supports it (an article above the similarity floor); otherwise no draft. With the
LLM down, an extractive draft is built from the best article, so the citations stay honest.
"""

from __future__ import annotations

import re

from langgraph.runtime import Runtime

from agent.contracts import Draft, EvidenceArticle
from agent.llm import LLMUnavailable
from agent.prompts import FENCE_CLOSE, FENCE_OPEN, fence, render
from agent.state import TriageContext, TriageState

SHORT_CHANNELS = {"chat", "social", "phone"}
_CITATION = re.compile(r"\[([A-Za-z0-9_\-:.]+)\]")


def style_for(channel: str) -> str:
    if channel in SHORT_CHANNELS:
        return "Style: a short chat message, at most three sentences, no greeting line or signature."
    return "Style: an e-mail with a greeting, numbered steps where the article has steps, and a short closing."


def _first_sentences(text: str, limit: int) -> str:
    sentences = re.split(r"(?<=[.!?])\s+", " ".join(text.split()))
    out = ""
    for sentence in sentences:
        if len(out) + len(sentence) > limit:
            break
        out = f"{out} {sentence}".strip()
    return out or text[:limit]


def extractive_draft(article: EvidenceArticle, channel: str) -> Draft:
    limit = 280 if channel in SHORT_CHANNELS else 700
    body = _first_sentences(article.text or article.title, limit)
    if channel in SHORT_CHANNELS:
        return Draft(text=f"{body} [{article.id}]", citations=[article.id])
    return Draft(text=f"Hello,\n\n{body} [{article.id}]\n\nSee: {article.title}.\n\nBest regards", citations=[article.id])


def usable(text: str, ticket_text: str) -> bool:
    """A draft must answer, not echo: no fence markers, some length, mostly words not taken from the ticket."""
    if len(text) < 40 or FENCE_OPEN in text or FENCE_CLOSE in text:
        return False
    words = re.findall(r"\w+", text.lower())
    ticket_words = set(re.findall(r"\w+", ticket_text.lower()))
    copied = sum(w in ticket_words for w in words) / max(len(words), 1)
    return copied < 0.6


def draft(state: TriageState, runtime: Runtime[TriageContext]) -> TriageState:
    ctx = runtime.context
    floor = ctx.settings.draft_min_article_score
    supported = [a for a in state.get("articles", []) if a.score >= floor]
    if not supported or state.get("out_of_scope"):
        return {"draft": None}
    channel = state["labels"]["channel"].label
    if ctx.llm is None or state.get("llm_failed") or ctx.settings.mode == "proposal":
        return {"draft": extractive_draft(supported[0], channel)}
    articles = "\n\n".join(f"[{a.id}] {a.title}\n{(a.text or '')[:700]}" for a in supported[:2])
    user = render(
        ctx.settings.prompts_dir,
        "draft",
        example_id=supported[0].id,
        style=style_for(channel),
        articles=articles,
        ticket=fence(state["text"]),
    )
    messages = [{"role": "system", "content": render(ctx.settings.prompts_dir, "system")}, {"role": "user", "content": user}]
    try:
        reply = ctx.llm.chat(messages, max_tokens=220, temperature=0.2)
    except LLMUnavailable as exc:
        return {"draft": extractive_draft(supported[0], channel), "warnings": [f"draft is extractive: {exc}"]}
    known = {a.id for a in supported}
    text = reply.text.strip()
    citations = [c for c in dict.fromkeys(_CITATION.findall(text)) if c in known]
    if not usable(text, state["text"]):
        return {
            "draft": extractive_draft(supported[0], channel),
            "usage": reply.usage,
            "warnings": ["the LLM's draft was empty or echoed the ticket; the draft is extractive"],
        }
    if not citations:  # keep the draft honest about where it comes from
        citations = [supported[0].id]
        text = f"{text}\n\n[{supported[0].id}]"
    return {"draft": Draft(text=text, citations=citations), "usage": reply.usage}
