"""draft: a self-service answer grounded in the retrieved KB articles, with citations, shaped for the channel.

Only when the evidence supports it (an article above the similarity floor); otherwise no draft. The LLM writes
it only after its classify answer validated: an LLM that failed validation (or is down) gets no second say, and
the draft is extractive, built from the best customer-facing article, so the citations stay honest. An LLM
draft that is data rather than prose (JSON, the prompt's placeholders) is refused the same way.

Customer-facing means not an agent guideline. The ABCD articles (ids `abcd-*`, `source: abcd` in
knowledge_base/articles/articles.jsonl, the id range knowledge_base/articles/ATTRIBUTION.md documents) are the
dataset's procedures for agents: every one of the 55 speaks to the agent about "the customer" and lists dashboard
steps ("Get Full Name or Account ID for [Pull up Account]"), so none has a sentence to send as it is. Extractive
drafts skip them whole (no sentence filter to get wrong). The evidence reaching the graph (EvidenceArticle)
carries the id but not the stored `source` field, hence the id prefix. The LLM still reads them, marked as
guidelines, for their facts.
"""

from __future__ import annotations

import html
import json
import re

from langgraph.runtime import Runtime

from agent.contracts import ARTICLE_ID, DRAFT_MAX_CHARS, Draft, EvidenceArticle, Usage
from agent.embeddings import MINILM, USE_MULTILINGUAL
from agent.llm import LLMUnavailable
from agent.prompts import (
    FENCE_CLOSE,
    FENCE_OPEN,
    MIN_TICKET_TOKENS,
    estimate_messages_tokens,
    fence,
    fit_tokens,
    render,
)
from agent.state import TriageContext, TriageState

SHORT_CHANNELS = {"chat", "social", "phone"}
ENGLISH_ONLY_EMBEDDERS = {MINILM}
DRAFT_MAX_TOKENS = 220
AGENT_GUIDELINE_PREFIXES = ("abcd-",)
_CITATION = re.compile(rf"\[({ARTICLE_ID.pattern})\]")
# real HTML elements and comments only: Arduino articles also write path placeholders such as <username>
_HTML_TAG = re.compile(
    r"<!--.*?-->|</?(?:a|abbr|b|blockquote|br|center|code|dd|details|div|dl|dt|em|figcaption|figure|font|h[1-6]|hr|i|"
    r"iframe|img|kbd|li|ol|p|pre|s|section|small|span|strong|sub|summary|sup|table|tbody|td|tfoot|th|thead|tr|u|ul|"
    r"video)(?:\s[^<>]*)?/?>",
    re.IGNORECASE | re.DOTALL,
)
_JSON_START = re.compile(r'\s*(?:\{|\[\s*[\[{"])')
_JSON_KEY = re.compile(r'[{,]\s*"[^"\n]{1,60}"\s*:')
# the templates' own placeholders: {{name}} and <service id>, <L1|L2|L3>, <one or two sentences citing [ids]>
# (not any <...>: articles write <COM port>, <platform name>, which a draft may quote)
_TEMPLATE_PLACEHOLDER = re.compile(r"\{\{.*?\}\}|<[^<>\n]*(?:\bids?\b|\|)[^<>\n]*>")
# the prompts' sentences and lines, for a draft that repeats them
_INSTRUCTION_BREAK = re.compile(r"(?<=[.!?:])\s+|\n+")
ECHO_MIN_CHARS = 30
# what makes a bracketed token an id rather than a button name: a digit or an id separator (kb-refund, t-bill-1, 4410)
_ID_LIKE = re.compile(r"[\d_\-:.]")
# ABCD's agent-dashboard buttons, e.g. [Pull up Account]; a Markdown link [text](url) is not one
_AGENT_BUTTON = re.compile(r"\[[A-Z][a-z]+(?: [A-Za-z]+)+\](?!\()")
# the Markdown the KB articles write (knowledge_base/articles: the Arduino Help Center), for markdown_blocks
_MD_RULE = re.compile(r"(?:[-*_]\s*){3,}")
_MD_TABLE_RULE = re.compile(r"\|?\s*:?-+:?\s*(?:\|\s*:?-+:?\s*)*\|?")
_MD_HEADING = re.compile(r"#{1,6}\s+(.*?)\s*#*$")
_MD_ITEM = re.compile(r"([*+-]|\d{1,3}[.)])\s+(.*)")
_MD_QUOTE = re.compile(r"^\s*(?:>\s?)+")
_MD_IMAGE = re.compile(r"!\[([^\]]*)\]\([^)\s]*(?:\s+\"[^\"]*\")?\)")
_MD_LINK = re.compile(r"\[([^\]]*)\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)")
_MD_AUTOLINK = re.compile(r"<((?:https?|mailto):[^<>\s]+)>")
_MD_ATTRIBUTES = re.compile(r"\s*\{[#.][^{}\n]*\}")  # {#request-a-return}, {.link-external}
# bold before italic; `_x_` only between non-word characters, so snake_case_names keep their underscores
_MD_EMPHASIS = (
    re.compile(r"\*\*(.+?)\*\*"),
    re.compile(r"(?<!\w)__(.+?)__(?!\w)"),
    re.compile(r"(?<![\w*])\*(?!\s)(.+?)(?<!\s)\*(?![\w*])"),
    re.compile(r"(?<!\w)_(?!\s)(.+?)(?<!\s)_(?!\w)"),
    re.compile(r"`([^`]+)`"),
)


def style_for(channel: str) -> str:
    if channel in SHORT_CHANNELS:
        return "Style: a short chat message, at most three sentences, no greeting line or signature."
    return "Style: an e-mail with a greeting, numbered steps where the article has steps, and a short closing."


def plain_text(text: str) -> str:
    """Text without HTML markup: tags and comments dropped, entities decoded (KB articles carry anchors, tables)."""
    return html.unescape(_HTML_TAG.sub(" ", text))


def is_agent_guideline(article: EvidenceArticle) -> bool:
    """An article written for agents, not customers (see the module docstring for why the id prefix)."""
    return article.id.startswith(AGENT_GUIDELINE_PREFIXES)


def _link_text(match: re.Match[str]) -> str:
    """A Markdown link as plain text: the text, and the address after it unless it is an anchor in the article or
    the text already is the address ([arduino.cc/en/contact-us/](https://www.arduino.cc/en/contact-us/))."""
    text, url = match.group(1), match.group(2)
    if not text:  # an image link whose image had no alt text
        return ""
    bare = re.sub(r"^(?:https?://)?(?:www\.)?", "", url).rstrip("/")
    if url.startswith("#") or re.sub(r"^(?:https?://)?(?:www\.)?", "", text).rstrip("/") == bare:
        return text
    return f"{text} ({url})"


def _inline_markdown(line: str) -> str:
    """A line without inline Markdown: images by their alt text, links by their text (and the address, when it is
    one the customer can open), emphasis and code marks and attributes ({#request-a-return}) dropped."""
    line = _MD_IMAGE.sub(lambda m: m.group(1), line)
    line = _MD_LINK.sub(_link_text, line)
    line = _MD_AUTOLINK.sub(r"\1", line)
    line = _MD_ATTRIBUTES.sub("", line)
    for pattern in _MD_EMPHASIS:
        line = pattern.sub(r"\1", line)
    line = re.sub(r"\*{2,}", "", line)  # an unpaired bold mark (`**Junior account****`)
    return " ".join(line.split())


def markdown_blocks(text: str) -> list[tuple[str, bool]]:
    """KB article Markdown as the lines a plain-text reply shows, each with whether it is a heading: a paragraph
    (its wrapped lines joined) or a list item ("- " or its number) a line each, a blank line between blocks; rule
    lines, table rules, code fences and heading marks dropped, table rows as their cells. The draft is plain text
    (the UI escapes Markdown, an API caller sends it as it is), so `## About returns **...** * ...` flattened onto
    one line was what a customer would have read."""
    blocks: list[tuple[str, bool]] = []
    paragraph: list[str] = []

    def flush() -> None:
        if paragraph:
            blocks.append((_inline_markdown(" ".join(paragraph)), False))
            paragraph.clear()

    for raw in text.splitlines():
        line = _MD_QUOTE.sub("", raw).strip()
        if not line or _MD_RULE.fullmatch(line) or _MD_TABLE_RULE.fullmatch(line) or line.startswith(("```", "~~~")):
            flush()
            if blocks and blocks[-1][0]:
                blocks.append(("", False))
            continue
        heading = _MD_HEADING.match(line)
        item = _MD_ITEM.match(line)
        if heading or item or line.startswith("|"):
            flush()
        if heading:
            blocks.append((_inline_markdown(heading.group(1)), True))
        elif item:  # its wrapped lines follow it as a paragraph's do
            paragraph.append(f"{item.group(1) if item.group(1)[0].isdigit() else '-'} {item.group(2)}")
        elif line.startswith("|"):
            cells = [_inline_markdown(c) for c in line.strip("|").split("|")]
            blocks.append((", ".join(c for c in cells if c), False))
        else:
            paragraph.append(line)
    flush()
    while blocks and not blocks[-1][0]:
        blocks.pop()
    return [b for i, b in enumerate(blocks) if b[0] or (i and blocks[i - 1][0])]


def _first_blocks(text: str, limit: int) -> str:
    """The article's opening lines that fit in `limit` characters, whole lines (the paragraph that does not fit cut
    at a sentence), without a heading or blank line left dangling at the end."""
    blocks = markdown_blocks(text)
    out: list[tuple[str, bool]] = []
    size = 0
    for line, heading in blocks:
        if size + len(line) + 1 > limit:
            if not heading and not _MD_ITEM.match(line):
                taken = ""
                for sentence in re.split(r"(?<=[.!?])\s+", line):
                    if size + len(taken) + len(sentence) + 2 > limit:
                        break
                    taken = f"{taken} {sentence}".strip()
                if taken:
                    out.append((taken, False))
            break
        out.append((line, heading))
        size += len(line) + 1
    while out and (not out[-1][0] or out[-1][1]):
        out.pop()
    if out:
        return "\n".join(line for line, _ in out)
    # not one sentence fits: the first paragraph cut at a word
    first = next((line for line, heading in blocks if line and not heading), " ".join(text.split()))
    return first if len(first) <= limit else first[: limit - 1].rsplit(" ", 1)[0] + "…"


def extractive_draft(article: EvidenceArticle, channel: str) -> Draft:
    limit = 280 if channel in SHORT_CHANNELS else 700
    title = " ".join(plain_text(article.title).split())
    body = _first_blocks(plain_text(article.text or "") or title, limit)
    if channel in SHORT_CHANNELS:  # a chat message: its lines, no blank lines between them
        body = "\n".join(line for line in body.splitlines() if line)
        return Draft(text=f"{body} [{article.id}]", citations=[article.id])
    return Draft(text=f"Hello,\n\n{body} [{article.id}]\n\nSee: {title}.\n\nBest regards", citations=[article.id])


def extractive_fallback(articles: list[EvidenceArticle], channel: str) -> Draft | None:
    """The extractive draft from the best customer-facing article; none when only agent guidelines are supported."""
    customer_facing = [a for a in articles if not is_agent_guideline(a)]
    return extractive_draft(customer_facing[0], channel) if customer_facing else None


def usable(text: str, ticket_text: str) -> bool:
    """A draft must answer, not echo: no fence markers, some length, mostly words (not a run of U+FFFD, emoji or
    punctuation, which a customer cannot read either), and mostly words not taken from the ticket."""
    if len(text) < 40 or FENCE_OPEN in text or FENCE_CLOSE in text:
        return False
    words = re.findall(r"\w+", text.lower())
    if sum(map(len, words)) * 2 < len("".join(text.split())):
        return False
    ticket_words = set(re.findall(r"\w+", ticket_text.lower()))
    copied = sum(w in ticket_words for w in words) / max(len(words), 1)
    return copied < 0.6


def echoes_instructions(text: str, instructions: str) -> bool:
    """The draft repeats a sentence of its prompt's instructions (small models do): that tells the customer how the
    reply was asked for, not what to do. Sentences under ECHO_MIN_CHARS ("Reply to the customer:") are let pass."""
    said = " ".join(text.lower().split())
    sentences = (" ".join(s.lower().split()) for s in _INSTRUCTION_BREAK.split(instructions))
    return any(len(sentence) >= ECHO_MIN_CHARS and sentence in said for sentence in sentences)


def looks_like_data(text: str) -> bool:
    """JSON (a whole object or array, or an object's key inside chatter) or the prompts' placeholders: an LLM
    that answers the classify shape, or echoes a template, has not written a reply a customer can read."""
    body = text.strip().removeprefix("```json").strip("`").strip()
    try:
        if isinstance(json.loads(body), dict | list):
            return True
    except RecursionError:  # brackets nested a thousand deep are no prose either
        return True
    except ValueError:
        pass
    return bool(_JSON_START.match(body) or _JSON_KEY.search(body) or _TEMPLATE_PLACEHOLDER.search(body))


def copies_agent_steps(text: str) -> bool:
    """The draft repeats an agent guideline's dashboard step ([Pull up Account]), which a customer cannot do."""
    return bool(_AGENT_BUTTON.search(text))


def foreign_citations(text: str, known: set[str], state: TriageState) -> list[str]:
    """Bracketed ids in an LLM draft that are not among the articles it drafted from: a past ticket's id (another
    customer's case, shown to the classify step), an article retrieved below the floor, or one the model made up.
    Left in, the customer reads a reference to nothing they can open (or to someone else's ticket), and the draft
    claims a source it does not have. A bracketed word without digits or separators ([Save], [Settings]) is a
    button name an article quotes, not an id."""
    evidence = {n.id for n in state.get("neighbours", [])} | {a.id for a in state.get("articles", [])}
    cited = dict.fromkeys(_CITATION.findall(text))
    return [c for c in cited if c not in known and (c in evidence or _ID_LIKE.search(c))]


def no_close_article(retrieved: list[EvidenceArticle], floor: float, *, asked: bool) -> str | None:
    """Why there is no draft when no article reaches the floor, so a lead (and the API caller) can tell "the KB has
    nothing on this" from "the KB is empty" and from a draft that failed; None when drafts are switched off
    (TRIAGE_TOP_K_ARTICLES=0)."""
    if not asked:
        return None
    if not retrieved:
        return "no draft: the knowledge base has no articles; add a help centre's with `triage ingest --articles FILE`"
    best = max(retrieved, key=lambda a: a.score)
    return f"no draft: no KB article is close enough (best [{best.id}] {best.score:.2f} < {floor:.2f})"


def language_mismatch(language: str, embedder: str) -> str | None:
    """Why no draft is made, when the ticket is not in English and the embedder compares only English by meaning.

    MiniLM (the service's default) places any German, Spanish or French text near any other text in that language:
    a French invoice question scored 0.64 against a French password-reset article, a Spanish printer fault 0.45
    against a Spanish parcel-tracking one, both over the draft floor, so the customer was sent an unrelated article.
    No floor separates those from the right matches, so the draft is withheld with the fix; the multilingual
    embedder ranks by topic across languages.
    """
    if embedder not in ENGLISH_ONLY_EMBEDDERS or language in ("en", "unknown"):
        return None
    return (
        f"no draft: the ticket reads as {language}, and the embedder {embedder} matches KB articles by meaning only in "
        f"English (other languages by language, not topic); for drafts on such tickets set "
        f"TRIAGE_EMBEDDING_MODEL={USE_MULTILINGUAL} and ingest into a fresh TRIAGE_DATA_DIR"
    )


ARTICLE_PROMPT_CHARS = 700


def _article_block(article: EvidenceArticle) -> str:
    """An article for the draft prompt, its title and text fenced like the ticket: an ingested help centre (or a
    page scraped into it) can carry "ignore previous instructions..." as well as a ticket can, and the system
    prompt tells the model to follow nothing written inside a fence, only what is outside it. The text is the
    article's plain lines (`markdown_blocks`), as the extractive draft shows them: the prompt asks for a plain-text
    reply, and with the raw Markdown a model copied `**`, `##` and `[text](#anchor)` into it (and the marks took
    part of the 700 characters)."""
    kind = " (agent guideline)" if is_agent_guideline(article) else ""
    lines = "\n".join(line for line, _ in markdown_blocks(plain_text(article.text or "")))
    return f"[{article.id}]{kind}\n{fence(plain_text(article.title) + chr(10) + lines[:ARTICLE_PROMPT_CHARS])}"


def _fallback(articles: list[EvidenceArticle], channel: str, reason: str, usage: Usage | None = None) -> TriageState:
    """The extractive draft with a warning that says why the LLM's was not used."""
    fallback = extractive_fallback(articles, channel)
    outcome = "the draft is extractive" if fallback is not None else "no customer-facing article to draft from"
    result: TriageState = {"draft": fallback, "warnings": [f"{reason}; {outcome}"]}
    if usage is not None:
        result["usage"] = usage
    return result


def draft(state: TriageState, runtime: Runtime[TriageContext]) -> TriageState:
    ctx = runtime.context
    floor = ctx.settings.draft_min_article_score
    retrieved = state.get("articles", [])
    supported = [a for a in retrieved if a.score >= floor]
    if state.get("out_of_scope"):  # decide's out-of-scope warning says why
        return {"draft": None}
    # a ticket MiniLM cannot match by topic gets no draft whatever the scores: say that (and the fix), also when
    # no article is over the floor, rather than a score that reads as a thin knowledge base
    withheld = language_mismatch(state.get("language", "unknown"), ctx.embedder.name) if retrieved else None
    if not supported:
        reason = withheld or no_close_article(retrieved, floor, asked=ctx.settings.top_k_articles > 0)
        return {"draft": None, "warnings": [reason] if reason else []}
    if withheld:
        return {"draft": None, "warnings": [withheld]}
    channel = state["labels"]["channel"].label
    # no valid classify answer (LLM down, or invalid after its re-asks): no second free-text call to it
    if ctx.llm is None or ctx.settings.mode == "proposal" or not state.get("llm_answer"):
        return {"draft": extractive_fallback(supported, channel)}
    def messages_with(ticket: str, articles: str = "\n\n".join(_article_block(a) for a in supported[:2])) -> list[dict[str, str]]:
        user = render(
            ctx.settings.prompts_dir,
            "draft",
            example_id=supported[0].id,
            style=style_for(channel),
            articles=articles,
            ticket=fence(ticket),
        )
        return [{"role": "system", "content": render(ctx.settings.prompts_dir, "system")}, {"role": "user", "content": user}]

    # the ticket is cut, as for classify, so prompt + reply fit the context whatever the script
    budget = max(ctx.settings.llm_ctx - DRAFT_MAX_TOKENS - estimate_messages_tokens(messages_with("")), MIN_TICKET_TOKENS)
    messages = messages_with(fit_tokens(state["text"], budget)[0])
    try:
        reply = ctx.llm.chat(messages, max_tokens=DRAFT_MAX_TOKENS, temperature=0.2)
    except LLMUnavailable as exc:
        return _fallback(supported, channel, f"the LLM's draft failed: {exc}")
    text = reply.text.strip()
    if len(text) > DRAFT_MAX_CHARS:  # an endpoint that ignored max_tokens: no reply, and no lead could send it back
        return _fallback(supported, channel, f"the LLM's draft was {len(text)} characters, over {DRAFT_MAX_CHARS}", reply.usage)
    if looks_like_data(text):
        return _fallback(supported, channel, "the LLM's draft was JSON or template text, not a reply", reply.usage)
    if copies_agent_steps(text):
        return _fallback(supported, channel, "the LLM's draft copied an agent guideline's steps", reply.usage)
    if not usable(text, state["text"]):
        return _fallback(supported, channel, "the LLM's draft was empty or echoed the ticket", reply.usage)
    if echoes_instructions(text, "\n".join(m["content"] for m in messages_with("", articles=""))):
        return _fallback(supported, channel, "the LLM's draft repeated its instructions", reply.usage)
    text = plain_text(text).strip()
    known = {a.id for a in supported}
    foreign = foreign_citations(text, known, state)
    if foreign:
        return _fallback(supported, channel, f"the LLM's draft cited {', '.join(f'[{c}]' for c in foreign[:3])}, not an article it was given", reply.usage)
    citations = [c for c in dict.fromkeys(_CITATION.findall(text)) if c in known]
    if not citations:  # keep the draft honest about where it comes from
        citations = [supported[0].id]
        text = f"{text}\n\n[{supported[0].id}]"
    return {"draft": Draft(text=text, citations=citations), "usage": reply.usage}
