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

# function words (plus the greetings and sign-offs of support mail) per language; a word in several lists splits its
# vote between them ("a": en/pt, "de": es/fr/pt, "in": en/de), so only words that tell the languages apart decide
_STOPWORDS = {
    "en": set(
        "the and is are was were be been am my to i you your we our us me please with not have has had for this that "
        "these those it its of in on at from by an a or but can could would will should do does did what when where "
        "why how which there their they he she him her if so as any all about into after before hello hi thanks thank "
        "dear help regards cannot still since also because while just get got some no yet".split()
    ),
    "de": set(
        "der die das den dem des und ist sind war ich nicht mit bitte wir ein eine einen einem einer für auf von zu "
        "zum zur im in bei aus nach auch sich es sie er ihr ihre ihren ihnen mein meine meinen meinem unser unsere "
        "kann können konnte habe haben hat wird werden wurde wurden oder aber wenn dass noch nur schon sehr geehrte "
        "geehrtes geehrter hallo danke vielen grüße freundlichen mir mich uns kein keine wie was wo warum über seit "
        "leider diese dieser dieses um an so also will".split()
    ),
    "es": set(
        "el la los las de del que y no por mi mis con para una un es son está están estoy hola gracias su sus se lo "
        "le les al en como pero muy ya también tengo tiene puedo puede este esta estos estas sobre cuando porque "
        "nuestro nuestra usted ustedes favor saludos estimado estimados estimada hay sin ha han ni".split()
    ),
    "fr": set(
        "le la les et est je pas pour avec une un des vous votre vos nous notre bonjour merci du de en au aux ce cette "
        "ces qui que dans sur par mon ma mes il elle ils sont ai avons avez peux pouvez mais ou très cordialement "
        "madame monsieur cher chère ne se sa son leur à été être avoir fait aussi depuis".split()
    ),
    "pt": set(
        "o a os as de do da dos das que não para com uma um meu minha meus minhas olá obrigado obrigada no na nos nas "
        "em é são está estão estou por pelo pela se seu sua ao à mas muito também já como tenho tem posso pode este "
        "esta isso essa esse você vocês prezado prezada prezados caro cara atenciosamente sobre quando porque nosso "
        "nossa foi ser ou mais e".split()
    ),
}
_WORD_WEIGHTS: dict[str, dict[str, float]] = {}
for _lang, _words in _STOPWORDS.items():
    for _word in _words:
        _WORD_WEIGHTS.setdefault(_word, {})[_lang] = 1.0
for _word, _votes in _WORD_WEIGHTS.items():
    for _lang in _votes:  # a one-letter word is half a word: "a", "o", "e" are also initials and cut-off words
        _votes[_lang] = (0.5 if len(_word) == 1 else 1.0) / len(_votes)
# letters that only some of the languages write: a word that has one adds half a vote to them (split the same way);
# what names a short ticket that has few function words ("Rückerstattung für Bestellung")
_LETTERS = {
    **dict.fromkeys("äöüß", ("de",)),
    "ñ": ("es",),
    **dict.fromkeys("ãõ", ("pt",)),
    **dict.fromkeys("èêëîïôûœù", ("fr",)),
    **dict.fromkeys("çàâ", ("fr", "pt")),
    **dict.fromkeys("áíóú", ("es", "pt")),
    "é": ("es", "fr", "pt"),
}
LETTER_VOTE = 0.5
# word endings that only some of the languages write, the same half vote: the titles of short tickets are mostly
# nouns ("Solicitud de verificación", "Dringende Unterstützung")
_SUFFIXES = {
    **dict.fromkeys(("ung", "ungen", "keit", "heit", "lich", "isch"), ("de",)),
    **dict.fromkeys(("ción", "ciones", "idad"), ("es",)),
    **dict.fromkeys(("ção", "ções", "idade"), ("pt",)),
    "idades": ("es", "pt"),  # posibilidades / possibilidades
    **dict.fromkeys(("ing", "ings", "ness"), ("en",)),
    **dict.fromkeys(("tion", "tions"), ("en", "fr")),
    **dict.fromkeys(("eux", "euse"), ("fr",)),
}
_SUFFIX = re.compile(rf"(?:{'|'.join(sorted(_SUFFIXES, key=len, reverse=True))})$")
# machine text, whose tokens are no language's words: URLs, e-mail addresses, dotted names and paths
# (com.acme.api.Order, o.a.c.c.C, /var/log/app), key=value pairs, <placeholders>
_MACHINE_TOKEN = re.compile(r"\S+://\S+|\S+@\S+|<[^<>\s]{1,40}>|\w+(?:[./\\_=:#]+\w+)+|[./\\]\w+(?:[./\\]\w*)*")
# a language is named when its score reaches MIN_SCORE and beats the runner-up by MARGIN times
MIN_SCORE = 1.0
MARGIN = 1.5


def detect_language(text: str) -> str:
    """The ticket's language (en, de, es, fr, pt) or `unknown` when the text does not say.

    A vote of function words, language-specific letters and word endings, with machine tokens (stack frames, paths, URLs) left
    out: `com.acme` once read as Portuguese "com". A word shared by languages splits its vote, and the winner must
    lead the runner-up by MARGIN, so a text whose only evidence is shared words ("a", "no", "de") stays `unknown`
    rather than naming the wrong language (which withholds a draft downstream). Measured by
    `python -m evals.language_check` (evals/README.md, "Language detection")."""
    scores = dict.fromkeys(_STOPWORDS, 0.0)
    for word in re.findall(r"[^\W\d_]+", _MACHINE_TOKEN.sub(" ", text).lower()):
        for lang, vote in _WORD_WEIGHTS.get(word, {}).items():
            scores[lang] += vote
        langs = {lang for ch in set(word) & _LETTERS.keys() for lang in _LETTERS[ch]}
        for ch in set(word) & _LETTERS.keys():
            langs &= set(_LETTERS[ch])
        for lang in langs:
            scores[lang] += LETTER_VOTE / len(langs)
        ending = _SUFFIX.search(word) if len(word) > 5 else None
        for lang in _SUFFIXES[ending.group()] if ending else ():
            scores[lang] += LETTER_VOTE / len(_SUFFIXES[ending.group()])
    ranked = sorted(scores.items(), key=lambda kv: kv[1], reverse=True)
    (best, top), (_, second) = ranked[0], ranked[1]
    return best if top >= MIN_SCORE and top >= MARGIN * second else "unknown"


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
