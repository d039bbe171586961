"""normalize: clean the text, redact PII before anything leaves the process, detect language, cap length."""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterable

from langgraph.runtime import Runtime

from agent.contracts import CONTROL_CHARS, INVISIBLE_CHARS, TicketIn, has_text
from agent.email_text import new_message
from agent.redaction import redact
from agent.state import TriageContext, TriageState

__all__ = ["clean", "detect_language", "normalize", "redact", "thread_text", "ticket_text"]

_STOPWORDS = {
    "en": {"the", "and", "is", "my", "to", "i", "you", "please", "with", "not", "have", "for", "this"},
    "de": {"der", "die", "und", "ist", "ich", "nicht", "mit", "bitte", "das", "wir", "ein", "eine", "für"},
    "es": {"el", "la", "de", "que", "y", "no", "por", "mi", "con", "para", "una", "los", "hola"},
    "fr": {"le", "la", "les", "et", "est", "je", "pas", "pour", "avec", "une", "des", "vous", "bonjour"},
    "pt": {"o", "a", "de", "que", "não", "para", "com", "uma", "meu", "minha", "os", "olá", "obrigado"},
}


def detect_language(text: str) -> str:
    words = re.findall(r"[^\W\d_]+", text.lower())
    scores = {lang: sum(w in stop for w in words) for lang, stop in _STOPWORDS.items()}
    best = max(scores, key=lambda lang: scores[lang])
    return best if scores[best] > 0 else "unknown"


def clean(text: str) -> str:
    """NFKC, controls as spaces, zero-width and bidi controls dropped (they carry no words and can hide or
    reorder text, e.g. U+202E), runs of spaces and blank lines collapsed."""
    text = unicodedata.normalize("NFKC", text)
    text = CONTROL_CHARS.sub(" ", text)
    text = INVISIBLE_CHARS.sub("", text)
    text = re.sub(r"[ \t]+", " ", text)
    return re.sub(r"\n{3,}", "\n\n", text).strip()


def thread_text(parts: Iterable[str]) -> str:
    """The parts of a thread (subject, body, messages), each as the customer wrote it without HTML markup, quoted
    history or disclaimer (agent/email_text.py), blank-line separated; a part that shows nothing is left out."""
    return "\n\n".join(new_message(p) for p in parts if has_text(p))


def ticket_text(ticket: TicketIn, limit: int) -> tuple[str, bool]:
    """The text the graph embeds and classifies (cleaned, redacted, cut at `limit`), and whether it was cut.
    The eval embeds test tickets in batches ahead of the graph with it, so both embed the same string."""
    text = redact(clean(thread_text([ticket.subject, ticket.body, *(m.text for m in ticket.messages)])))
    return (text[:limit], True) if len(text) > limit else (text, False)


def normalize(state: TriageState, runtime: Runtime[TriageContext]) -> TriageState:
    limit = runtime.context.settings.max_ticket_chars
    text, truncated = ticket_text(state["ticket"], limit)
    warnings = [f"ticket text truncated to {limit} characters for classification"] if truncated else []
    return {"text": text, "language": detect_language(text), "warnings": warnings}
