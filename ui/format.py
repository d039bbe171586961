"""Pure helpers for the pages (no Streamlit): citations, anchors, ages, label changes, the review to send, the
warnings shown."""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any, NamedTuple

from agent.email_text import strip_html

CITATION = re.compile(r"\[([A-Za-z0-9_\-:.]+)\]")
_MD_SPECIAL = re.compile(r"([\\`*_{}\[\]()#+\-.!|<>$~:=&])")  # `=`: setext headings, `&`: HTML entities
_EMBEDDINGS, _ISOLATES = "\u202a\u202b\u202d\u202e", "\u2066\u2067\u2068"  # LRE RLE LRO RLO, LRI RLI FSI
_BIDI_OPENERS = re.compile(f"[{_EMBEDDINGS}{_ISOLATES}]")
AXES = ("service", "channel", "tier")
DECISION_BADGE = {
    "needs_review": ":red-badge[needs review]",
    "suggest": ":orange-badge[suggest]",
    "auto_apply": ":green-badge[auto-applied]",
}
REASON_TEXT = {
    "new_ticket": "classified the new ticket",
    "new_message": "re-classified after a new message",
    "escalation": "escalated",
    "human_review": "reviewed",
    "taxonomy_migration": "migrated to a new taxonomy",
    "reclassify": "re-classified",
}
REVIEWED_BADGE = ":blue-badge[reviewed by a lead]"
THREAD_SHOWN_CHARS = 3000  # a pasted log of 100,000 characters pushed the labels' evidence and timeline off the page
AGE_FILTERS: dict[str, tuple[timedelta | None, timedelta | None]] = {
    "any age": (None, None),
    "last hour": (None, timedelta(hours=1)),
    "last 24 hours": (None, timedelta(days=1)),
    "last 7 days": (None, timedelta(days=7)),
    "older than 1 day": (timedelta(days=1), None),
    "older than 7 days": (timedelta(days=7), None),
}


def escape_md(text: str) -> str:
    """Ticket text shown as text: markdown and Streamlit directives in it are not interpreted, and the direction
    overrides it opens (U+202E...) end with it instead of reversing what the page writes after it."""
    return _MD_SPECIAL.sub(r"\\\1", text) + close_bidi(text)


def decision_badge(decision: str | None, reason: str | None) -> str:
    """A revision's decision as a badge. A lead's review is stored as `auto_apply` (its labels apply without another
    look), which read "auto-applied" on a ticket a lead had just edited: a review reads as one. A reject marker
    carries no decision and gets no badge."""
    if not decision:
        return ""
    if reason == "human_review":
        return REVIEWED_BADGE
    return DECISION_BADGE.get(decision, escape_md(decision))


class MessageText(NamedTuple):
    """One thread message as markdown: what is shown, the rest (for an expander; "" when none), and its size."""

    shown: str
    rest: str
    rest_chars: int
    was_html: bool


def message_text(text: str, shown: int = THREAD_SHOWN_CHARS) -> MessageText:
    """A message as the lead reads it: an HTML e-mail as its text (as the agent reads it; the markup was shown
    as tags), its line breaks kept (markdown joined the lines of a log or an address into one paragraph), cut
    after `shown` characters at a line break where there is one in the second half."""
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    plain = strip_html(text, keep_links=True)
    was_html = plain != text
    plain = plain.strip()
    cut = len(plain)
    if len(plain) > shown:
        line_end = plain.rfind("\n", 0, shown)
        cut = line_end if line_end >= shown // 2 else shown
    head, rest = plain[:cut], plain[cut:].lstrip("\n")

    def md(part: str) -> str:
        return escape_md(part).replace("\n", "  \n")

    return MessageText(md(head), md(rest) if rest else "", len(rest), was_html)


def close_bidi(text: str) -> str:
    """The closers of the bidi embeddings, overrides (PDF) and isolates (PDI) that `text` leaves open, innermost
    first, following Unicode's pairing rules (a PDI also ends the embeddings opened inside its isolate)."""
    if not _BIDI_OPENERS.search(text):
        return ""
    open_: list[str] = []
    for char in text:
        if char in _EMBEDDINGS or char in _ISOLATES:
            open_.append(char)
        elif char == "\u202c" and open_ and open_[-1] in _EMBEDDINGS:
            open_.pop()
        elif char == "\u2069" and any(c in _ISOLATES for c in open_):
            while open_.pop() not in _ISOLATES:
                pass
    return "".join("\u2069" if c in _ISOLATES else "\u202c" for c in reversed(open_))


def bold_line(text: str, limit: int = 80) -> str:
    """`text` as one bold markdown line of at most `limit` characters (… where cut). Markdown closes `**` only after
    a non-space character, so a cut that ended on a space (or a preview that began with a newline) showed the
    asterisks themselves instead of bold."""
    line = " ".join(text.split())
    if len(line) > limit:
        line = line[: limit - 1].rstrip() + "…"
    return f"**{escape_md(line)}**" if line else ""


def code_span(text: str) -> str:
    """`text` as inline code, exactly: escapes do not work inside code (escape_md's backslashes would show), so the
    fence is one backtick longer than any run of them in the text instead."""
    text = " ".join(text.split())  # a code span is one line
    fence = "`" * (max((len(run) for run in re.findall(r"`+", text)), default=0) + 1)
    pad = " " if text.startswith("`") or text.endswith("`") else ""
    return f"{fence}{pad}{text}{pad}{fence}" + close_bidi(text)


def cited_ids(text: str) -> list[str]:
    """Evidence ids cited as `[id]`, in order of first mention."""
    return list(dict.fromkeys(CITATION.findall(text or "")))


def is_draft_warning(warning: str) -> bool:
    """A warning that says why there is no draft (shown under the drafted answer, so not again with the labels)."""
    return warning.startswith("no draft: ") or "no customer-facing article" in warning


def shown_warnings(classification: Mapping[str, Any]) -> list[str]:
    """A classification's warnings as the labels show them, escaped: a warning can quote an LLM endpoint's reply
    (or a proxy's error page), whose markdown, links, images and Streamlit directives would otherwise render as
    the UI's own. Without a draft, the one saying why is shown under the drafted answer instead, not again here."""
    warnings = [str(w) for w in classification.get("warnings") or []]
    return [escape_md(w) for w in warnings if classification.get("draft") or not is_draft_warning(w)]


def no_draft_reason(classification: Mapping[str, Any], agent: Mapping[str, Any] | None = None) -> str:
    """Why a classification carries no draft, in the agent's words where it gave them (its "no draft: ..."
    warnings, or the draft warning that also says "no customer-facing article"), else the out-of-scope flag; a
    fixed "no article was close enough" told leads the wrong reason for a ticket out of scope or in another
    language. `agent`: the agent's classification a lead's review was made from (a review clears the warnings and
    the flag, and keeps the draft it had: none, for the agent's reason)."""
    warnings = [str(w) for w in classification.get("warnings") or []]
    said = [w.removeprefix("no draft: ") for w in warnings if is_draft_warning(w)]
    if said:
        reason = said[0]
    elif classification.get("out_of_scope"):
        reason = "the ticket is out of scope"
    elif agent is not None and agent is not classification:
        return no_draft_reason(agent)
    else:
        reason = "no KB article was close enough to ground an answer"
    return f"No draft: {reason.rstrip('.')}."


def agent_classification(revisions: Sequence[Mapping[str, Any]], seq: int | None) -> Mapping[str, Any] | None:
    """The latest agent classification at or before revision `seq` that no lead rejected: what a review at `seq`
    was made from (a review copies it, warnings cleared); None when there is none."""
    return next((r["classification"] for r in live_revisions(revisions, seq) if r.get("reason") != "human_review"), None)


def live_revisions(revisions: Sequence[Mapping[str, Any]], seq: int | None) -> list[Mapping[str, Any]]:
    """Revisions at or before `seq` (all when None) that carry a classification no lead rejected, newest first."""
    rejected = {r.get("rejects") for r in revisions if r.get("rejects") is not None}
    return [
        r for r in sorted(revisions, key=lambda r: -r["seq"])
        if (seq is None or r["seq"] <= seq) and r.get("classification") and r["seq"] not in rejected
    ]


class Escalation(NamedTuple):
    """The escalation that set the tier in force: the tier, who asked for it, and the note they gave."""

    tier: str
    by: str
    note: str


def tier_escalation(revisions: Sequence[Mapping[str, Any]], seq: int | None) -> Escalation | None:
    """The escalation whose tier is still in force at revision `seq`, or None. An escalated tier is stored with
    source `intake` (the contract's sources have no `escalation`), so the page read "intake" for a tier a lead had
    raised; this finds who raised it: going back from `seq` while the tier stays the same with source `intake`
    (re-runs keep it), the earliest escalation among them. Rejected revisions are skipped."""
    chain = live_revisions(revisions, seq)
    if not chain:
        return None
    tier = ((chain[0]["classification"].get("labels") or {}).get("tier") or {}).get("label")
    found: Mapping[str, Any] | None = None
    for revision in chain:
        held = (revision["classification"].get("labels") or {}).get("tier") or {}
        if held.get("label") != tier or held.get("source") != "intake":
            break
        if revision.get("reason") == "escalation":
            found = revision
    if found is None or tier is None:
        return None
    who = found.get("requested_by") or found.get("actor") or "an API caller"
    return Escalation(tier, str(who), str(found.get("note") or ""))


def anchor(evidence_id: str) -> str:
    """An HTML id for an evidence card (ids like `train:b77-1` are not valid in a URL fragment as they are)."""
    return "ev-" + re.sub(r"[^a-z0-9]+", "-", evidence_id.lower()).strip("-")


def link_citations(text: str, known: set[str]) -> str:
    """Markdown of a rationale or draft: each cited id that is in the evidence is highlighted and links to its card."""

    def repl(match: re.Match[str]) -> str:
        evidence_id = match.group(1)
        if evidence_id not in known:
            return escape_md(match.group(0))
        return f":orange-background[[{escape_md(evidence_id)}](#{anchor(evidence_id)})]"

    out, last = [], 0
    for match in CITATION.finditer(text or ""):
        out.append(escape_md(text[last : match.start()]))
        out.append(repl(match))
        last = match.end()
    out.append(escape_md((text or "")[last:]))
    return "".join(out)


def parse_time(value: str | datetime | None) -> datetime | None:
    if value is None or isinstance(value, datetime):
        return value
    moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def age_text(created: str | datetime | None, now: datetime | None = None) -> str:
    moment = parse_time(created)
    if moment is None:
        return ""
    seconds = max(((now or datetime.now(UTC)) - moment).total_seconds(), 0)
    for unit, size in (("d", 86400), ("h", 3600), ("min", 60)):
        if seconds >= size:
            return f"{int(seconds // size)} {unit}"
    return "just now"


def ago(created: str | datetime | None, now: datetime | None = None) -> str:
    """`3 h ago`, or `just now`."""
    text = age_text(created, now)
    return text if text in ("", "just now") else f"{text} ago"


def within_age(created: str | datetime | None, age_filter: str, now: datetime | None = None) -> bool:
    """Whether a ticket of that creation time passes an `AGE_FILTERS` choice."""
    older_than, newer_than = AGE_FILTERS[age_filter]
    moment = parse_time(created)
    if moment is None:
        return older_than is None and newer_than is None
    age = (now or datetime.now(UTC)) - moment
    return (older_than is None or age >= older_than) and (newer_than is None or age <= newer_than)


def age_params(age_filter: str, now: datetime | None = None) -> dict[str, str]:
    """The queue's `created_before` / `created_after` for an age choice (ISO 8601, UTC)."""
    older_than, newer_than = AGE_FILTERS[age_filter]
    now = now or datetime.now(UTC)
    params = {}
    if older_than is not None:
        params["created_before"] = (now - older_than).isoformat()
    if newer_than is not None:
        params["created_after"] = (now - newer_than).isoformat()
    return params


def review_request(
    current: Mapping[str, str], chosen: Mapping[str, str], suggested: Mapping[str, str] | None = None
) -> tuple[str, dict[str, str] | None]:
    """What to send so that the labels in force afterwards are exactly `chosen`.

    The API's `accept` keeps the current labels and takes the agent's `suggested` ones where a lead's label had
    held; so `accept` only when that gives `chosen`, else an `edit` of the axes that differ from the current ones.
    """
    expected = {**current, **(suggested or {})}
    if current and all(expected.get(axis) == label for axis, label in chosen.items()):
        return "accept", None
    changed = {axis: label for axis, label in chosen.items() if current.get(axis) != label}
    return "edit", changed or dict(chosen)


def bulk_accept_request(item: Mapping[str, Any]) -> tuple[str, dict[str, str] | None] | None:
    """The review that leaves a queue row's labels exactly as the row shows them (`review_request` with the labels
    in force chosen as they are), or None for a row with no labels in force (every labelled revision rejected: a
    lead must pick them on the ticket page)."""
    labels = item.get("labels") or {}
    if not labels:
        return None
    suggested = {axis: s["label"] for axis, s in (((item.get("current") or {}).get("suggestion")) or {}).items()}
    return review_request(labels, labels, suggested)


def label_changes(before: Mapping[str, str] | None, after: Mapping[str, str] | None) -> list[str]:
    """`service: billing_payments → returns_refunds`, one line per axis that changed."""
    before, after = before or {}, after or {}
    return [
        f"{axis}: {before.get(axis) or '–'} → {after.get(axis) or '–'}"
        for axis in AXES
        if before.get(axis) != after.get(axis)
    ]


def tiers_above(tier_ids: Sequence[str], current: str | None) -> list[str]:
    """The tiers an escalation may move to: those ranked above `current` (a tier's rank is its place in the
    taxonomy's list), every tier when none is in force or the current one left the taxonomy."""
    if current not in tier_ids:
        return list(tier_ids)
    return list(tier_ids[tier_ids.index(current) + 1 :])


def timeline(revisions: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """The revision history, newest first, as who / when / what changed / why rows."""
    rows, in_force = [], None  # in_force: the labels in force before each revision
    for revision in sorted(revisions, key=lambda r: r["seq"]):
        classification = revision.get("classification") or {}
        review = revision.get("review") or {}
        if revision.get("rejects") is not None:
            what = f"rejected revision {revision['rejects']}"
            restored = revision.get("labels")
            if restored is None:
                prior = _latest_unrejected(revisions, upto=revision["seq"])
                restored = prior.get("labels") if prior else None
            changes = label_changes(in_force, restored)
            in_force = restored
        else:
            labels = revision.get("labels")
            changes = label_changes(in_force, labels)
            what = REASON_TEXT.get(revision.get("reason", ""), revision.get("reason", ""))
            if review.get("action"):
                what = {"accept": "accepted the labels", "edit": "edited the labels"}.get(review["action"], what)
            in_force = labels
        why = revision.get("note") or review.get("comment") or classification.get("rationale") or ""
        rows.append(
            {
                "seq": revision["seq"],
                "when": revision.get("created_at"),
                "who": revision.get("actor", ""),
                "reason": revision.get("reason", ""),
                "what": what,
                "changes": changes,
                "decision": classification.get("decision"),
                "why": why,
                "rejected_by": revision.get("rejected_by"),
                "supersedes": revision.get("supersedes"),
            }
        )
    return list(reversed(rows))


def _latest_unrejected(revisions: Sequence[Mapping[str, Any]], *, upto: int) -> Mapping[str, Any] | None:
    rejected = {r.get("rejects") for r in revisions if r["seq"] <= upto and r.get("rejects") is not None}
    for revision in sorted(revisions, key=lambda r: -r["seq"]):
        if revision["seq"] < upto and revision.get("classification") and revision["seq"] not in rejected:
            return revision
    return None


def min_confidence(labels: Mapping[str, Any] | None) -> float | None:
    """The lowest confidence over service and tier (what the queue sorts by; intake channel is certain)."""
    values = [labels[a]["confidence"] for a in ("service", "tier") if labels and a in labels]
    return min(values) if values else None


def volume_rows(volumes: Sequence[Mapping[str, Any]], bucket: str = "day") -> tuple[list[str], list[dict[str, Any]]]:
    """`GET /v1/stats` volumes as table rows: per group its total and its count in every period from the first to
    the last (quiet days count 0), the all-groups row first, then the groups by size. Returns (periods, rows)."""
    seen = sorted({v["period"] for v in volumes})
    periods = []
    if seen:
        step = timedelta(days=7 if bucket == "week" else 1)
        day, last = datetime.fromisoformat(seen[0]), datetime.fromisoformat(seen[-1])
        while day <= last:
            periods.append(day.date().isoformat())
            day += step
    index = {p: i for i, p in enumerate(periods)}
    series: dict[str, list[int]] = {}
    for v in volumes:
        counts = series.setdefault(v["group"], [0] * len(periods))
        counts[index[v["period"]]] += v["count"]
    total = [sum(c[i] for c in series.values()) for i in range(len(periods))]
    rows = [{"per": "(all)", "tickets": sum(total), "trend": total}]
    rows += sorted(({"per": g, "tickets": sum(c), "trend": c} for g, c in series.items()), key=lambda r: (-r["tickets"], r["per"]))
    return periods, rows


def trend_scale(rows: Sequence[Mapping[str, Any]]) -> int:
    """The top of every row's volume bars: the largest count of any row in any period. Each bar chart scaled to its
    own row drew one full bar per row on a single day of data, whatever the row's count (4 looked like 21)."""
    return max((count for row in rows for count in row["trend"]), default=0) or 1


def health_notes(problems: Sequence[str], llm: Mapping[str, Any] | None) -> list[str]:
    """What a lead should know while the API is degraded, in a lead's words: a part that is down (as /healthz names
    it), and an LLM that is being skipped, which means suggestions from retrieval and the classifier head only."""
    notes = [escape_md(problem) for problem in problems]
    if llm and llm.get("state") == "open":
        retry = llm.get("retry_in_s")
        when = f" for {retry:.0f} s" if isinstance(retry, int | float) and retry > 0 else ""
        cause = f" ({llm['last_error']})" if llm.get("last_error") else ""
        notes.append(escape_md(f"LLM skipped{when} after failures{cause}: suggestions come from similar tickets and "
                               "the classifier head only, without a rationale from the LLM"))
    return notes

