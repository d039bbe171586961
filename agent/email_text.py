"""The words a customer wrote in one e-mail, without the quoted history, signature disclaimer or HTML around them.

A help desk's e-mail replies carry the whole thread below the new message ("On Mon, ... wrote:", "Am ...
schrieb", "-----Original Message-----", `>` lines) and often a legal disclaimer longer than the message. The
classifier read all of it, so "the VPN still fails, error 809" above a quoted invoice e-mail was auto-applied as
billing. HTML e-mails reached it as markup: `<style>` rules, `<script>` code, `&nbsp;`.

Only what follows a reply header or a disclaimer opening is dropped, and only when words are left above it:
a forwarded e-mail or a message that is nothing but a quote keeps its text.
"""

from __future__ import annotations

import html
import re

# real HTML elements only: a plain ticket may well say `<username>` or `<email>` (a redaction placeholder)
_HTML_HINT = re.compile(r"<(?:html|head|body|p|br|div|span|table|tr|td|th|tbody|ul|ol|li|font|b|i|strong|em|a|img|style|meta|blockquote|h[1-6])\b[^>]{0,2000}>", re.IGNORECASE)
_HTML_DROP_OPEN = re.compile(r"<(style|script|head|title)\b[^>]{0,2000}>|<!--", re.IGNORECASE)
_HTML_BREAK = re.compile(r"<(?:br|/p|/div|/tr|/li|/h[1-6]|/blockquote|/table)\b[^>]{0,2000}>|<(?:p|div|li|tr|blockquote)\b[^>]{0,2000}>", re.IGNORECASE)
_HTML_CELL = re.compile(r"</t[dh]\s*>", re.IGNORECASE)
_HTML_TAG = re.compile(
    r"</?(?:html|head|body|p|br|hr|div|span|table|thead|tbody|tfoot|tr|td|th|ul|ol|li|font|b|i|u|s|strong|em|a|img|style|"
    r"meta|link|blockquote|h[1-6]|center|small|big|sub|sup|pre|code|section|article|header|footer|nav|o:p|v:[a-z]+|w:[a-z]+)"
    r"\b(?:\s[^<>]{0,2000})?/?>",
    re.IGNORECASE,
)
# a link with its address: href in either quotes or none, then the text up to its </a> (nested tags allowed)
_HTML_LINK = re.compile(
    r"<a\b[^<>]{0,2000}?\bhref\s*=\s*(?:\"([^\"]{0,2000})\"|'([^']{0,2000})'|([^\s<>\"']{1,2000}))[^<>]{0,2000}>(.{0,2000}?)</a\s*>",
    re.IGNORECASE | re.DOTALL,
)

# a line that opens the quoted history of a reply, in the languages the help desks write
_REPLY_HEADERS = [
    r"On\b.{0,200}\bwrote:",
    r"Am\b.{0,200}\bschrieb\b.{0,200}:",
    r"El\b.{0,200}\bescribió:",
    r"Le\b.{0,200}\ba écrit\s?:",
    r"Em\b.{0,200}\bescreveu:",
    r"-{2,}\s*(?:Original Message|Ursprüngliche Nachricht|Originalnachricht|Mensaje original|Message d'origine|"
    r"Mensagem original)\s*-{2,}",
    # an Outlook header block: From/Von/De then Sent/Gesendet/Enviado/Envoyé on one of the next lines
    r"(?:From|Von|De):.{0,300}\n(?:.{0,300}\n){0,2}(?:Sent|Gesendet|Enviado|Envoyé|Date|Datum|Fecha|Data):",
]
_REPLY = re.compile(r"^[ \t]*(?:" + "|".join(_REPLY_HEADERS) + ")", re.IGNORECASE | re.MULTILINE)
_QUOTED_LINE = re.compile(r"^[ \t]*>.*$\n?", re.MULTILINE)
# where a signature or disclaimer starts: the RFC 3676 delimiter "-- ", or a disclaimer's opening words
_FOOTER = re.compile(
    r"^(?:--[ \t]*$|[ \t]*(?:CONFIDENTIALITY NOTICE|DISCLAIMER|This e-?mail (?:and any attachments |message )?"
    r"(?:is|are|may be) confidential|Diese E-?Mail (?:enthält|ist) vertraulich|Este (?:mensaje|correo)\b.{0,80}confidencial|"
    r"Ce (?:message|courriel)\b.{0,80}confidentiel|Esta mensagem\b.{0,80}confidencia))",
    re.IGNORECASE | re.MULTILINE,
)


def _drop_blocks(text: str) -> str:
    """Text without style, script, head and title elements and comments; one left open runs to the end. A loop,
    not one lazy regex, so a hostile run of unclosed `<style>` tags costs one scan, not one per tag."""
    out, pos, lower = [], 0, text.lower()
    while (opening := _HTML_DROP_OPEN.search(text, pos)) is not None:
        out.append(text[pos : opening.start()])
        end = "-->" if opening.group(1) is None else f"</{opening.group(1).lower()}"
        close = lower.find(end, opening.end())
        if close < 0:
            return " ".join(out)
        pos = text.find(">", close) + 1 or len(text)
        out.append(" ")
    return "".join(out) + text[pos:]


def _link_with_address(match: re.Match[str]) -> str:
    """A link's text followed by its address in brackets, unless the text already shows that address."""
    href = html.unescape(next(g for g in match.groups()[:3] if g is not None)).strip()
    inner = match.group(4)
    shown = html.unescape(_HTML_TAG.sub("", inner))
    core = re.sub(r"^(?:https?://|mailto:)", "", href, flags=re.IGNORECASE).rstrip("/")
    if not core or href.startswith("#") or core.lower() in shown.lower():
        return inner
    return f"{inner} ({html.escape(href, quote=False)})"


def strip_html(text: str, *, keep_links: bool = False) -> str:
    """Text of an HTML e-mail: style, script and head dropped, block ends as line breaks, entities decoded.
    Text without real HTML elements is returned as it is. With `keep_links` (what a lead reads) a link's address
    follows its text when the text does not show it: 'Verify your account (http://phish.example/login)' is what a
    lead must see to judge the e-mail; the agent reads the words alone, as its models were measured."""
    if not _HTML_HINT.search(text):
        return text
    text = _drop_blocks(text)
    if keep_links:
        text = _HTML_LINK.sub(_link_with_address, text)
    text = _HTML_BREAK.sub("\n", text)
    text = _HTML_CELL.sub(" ", text)
    return html.unescape(_HTML_TAG.sub("", text)).replace("\xa0", " ")


def new_message(text: str) -> str:
    """The new words of one e-mail: cut before the first reply header or signature/disclaimer and without `>`
    lines, as long as words remain; otherwise the text as it came (a forward, a bare quote)."""
    text = strip_html(text.replace("\r\n", "\n").replace("\r", "\n"))
    cut = text
    for pattern in (_REPLY, _FOOTER):
        match = pattern.search(cut)
        if match and cut[: match.start()].strip():
            cut = cut[: match.start()]
    unquoted = _QUOTED_LINE.sub("", cut)
    return unquoted.strip() if re.search(r"\w", _REPLY.sub("", unquoted)) else text.strip()
