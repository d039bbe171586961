"""PII redaction of ticket text, precise enough to keep what classification needs.

A help desk's tickets are full of numbers that are not personal data and that the classifier and a lead need:
order and invoice numbers, error codes, versions, dates, IP addresses. A pattern that takes any run of 9+ digits
as a phone number turned `order 100200300400`, `2024-11-05` and `10.0.19045.3803` into `<phone>`. So each
candidate is checked for its shape: a card number must pass the Luhn check (every issued card does, a random
order number only one time in ten), and a number is a phone when it says so (a `+` or `00` country prefix, a
phone word before it, or phone-style digit groups), never when it is a date, a dotted version or IP, or follows
an order/invoice/error word.

Every repetition is bounded (RFC 5321 lengths: local part 64, domain label 63), so a pattern tries at most a few
dozen characters from each position: ticket text is untrusted, and an unbounded `[\\w.+-]+@` took 100 s on a
200,000-character run of letters.
"""

from __future__ import annotations

import re

# credentials typed or pasted into a ticket ("here is my key, it stopped working"): vendor key shapes, then a
# value after a password/token word. The word stays (it says what the ticket is about), the value goes.
_KEYS = re.compile(
    r"\b(?:sk-(?:proj-|ant-|live-|test-)?[A-Za-z0-9_-]{20,200}"  # OpenAI / Anthropic style
    r"|gh[pousr]_[A-Za-z0-9]{30,100}|github_pat_[A-Za-z0-9_]{30,200}"  # GitHub
    r"|glpat-[A-Za-z0-9_-]{20,100}"  # GitLab
    r"|(?:AKIA|ASIA)[0-9A-Z]{16}"  # AWS access key id
    r"|xox[abposr]-[A-Za-z0-9-]{10,200}"  # Slack
    r"|AIza[0-9A-Za-z_-]{35}"  # Google API key
    r"|[rsp]k_(?:live|test)_[A-Za-z0-9]{16,200}"  # Stripe
    r"|eyJ[A-Za-z0-9_-]{8,2000}\.eyJ[A-Za-z0-9_-]{8,4000}\.[A-Za-z0-9_-]{8,2000}"  # a JWT
    r"|trg_[A-Za-z0-9_-]{40,64})"  # this product's own API keys (agent/auth.py), which bots and leads hold
    r"(?![\w-])"
)
# a pasted private key (PEM: SSH, TLS, PGP): its BEGIN line, armor headers, base64 lines and END line; the END is
# optional (a paste cut short still leaks the key) and never searched for, so a match cannot backtrack
_PRIVATE_KEY = re.compile(
    r"-----BEGIN (?:[A-Z0-9]+ ){0,4}PRIVATE KEY(?: BLOCK)?-----"
    r"(?:\s{0,4}[A-Za-z][A-Za-z-]{0,30}: [^\n]{0,200}){0,5}"
    r"(?:\s{0,4}[A-Za-z0-9+/=]{1,100}){0,200}"
    r"(?:\s{0,4}-----END (?:[A-Z0-9]+ ){0,4}PRIVATE KEY(?: BLOCK)?-----)?"
)
_BEARER = re.compile(r"(\b(?:Bearer|Basic|token)\s+)(?=[A-Za-z._~+/=-]{0,4000}\d)[A-Za-z0-9._~+/=-]{16,4000}", re.IGNORECASE)
_SECRET_WORDS = (
    r"password|passwd|pwd|passcode|pin|pin code|passphrase|api[ _-]?key|access[ _-]?key|secret(?:[ _-]?key)?|"
    r"client[ _-]?secret|aws_secret_access_key|token|auth[ _-]?token|access[ _-]?token|"
    r"passwort|kennwort|zugangsdaten|geheimzahl|contraseña|contrasena|clave|mot de passe|mdp|code secret|senha"
)
# `password: x`, `password = x`, `password was: x`, `Passwort lautet x`: anything after the separator up to a space
# (a bare `was` is no separator: `my PIN was blocked`, `the token was revoked` say what happened, not a value)
_SECRET_ASSIGNED = re.compile(
    rf"(\b(?:{_SECRET_WORDS})\b[\"']?\s{{0,3}}(?:[:=]|\blautet\b|\bwas:|\bis:)\s{{0,3}})(?!<)[^\s,;]{{3,200}}",
    re.IGNORECASE,
)
# `my password is Summer2024!`, `mi contraseña es Clave_99`: only a value that is no plain word (digits or symbols)
_SECRET_SAID = re.compile(
    rf"(\b(?:{_SECRET_WORDS})\b\s{{1,3}}(?:is|ist|es|est|é|era|was|now|jetzt|ahora|maintenant|agora)\s{{1,3}}[\"'“„«]?)"
    # a digit, or a symbol inside the word: the `?` or `!` that ends "my PIN was blocked?" is the sentence's
    r"(?=[^\s\"'”“»]{0,199}(?:\d|[!@#$%^&*_+=?][^\s\"'”“».,;:!?]))(?!<)[^\s\"'”“»]{3,200}",
    re.IGNORECASE,
)
_EMAIL = re.compile(r"[\w.+-]{1,64}@[\w-]{1,63}(?:\.[\w-]{1,63}){1,8}")
_IBAN = re.compile(r"\b[A-Z]{2}\d{2}(?:[ ]?[A-Z0-9]{4}){2,7}(?:[ ]?[A-Z0-9]{1,3})?\b")
# 13-19 digits, single spaces or dashes between them; the separator after the last digit is not part of it
_CARD = re.compile(r"(?<![\w.,/-])\d(?:[ -]?\d){12,18}(?![\w/]|[.,]\d|-\d)")
_PHONE = re.compile(r"(?<![\w.,/#-])(?:\+|\(\+?)?\d[\d ()./-]{6,24}\d(?![\w/]|[.,]\d|-\d)")

_PHONE_WORDS = re.compile(
    r"(?:\b(?:tel|tél|phone|telephone|call|ring|mobile|mob|cell|cellphone|whatsapp|sms|fax|hotline|"
    r"telefon|telefonnummer|rufnummer|handy|handynummer|mobilnummer|anrufen|"
    r"teléfono|telefono|móvil|movil|celular|llamar|llámame|"
    r"téléphone|portable|appeler|appelez|joindre|numéro de téléphone|"
    r"telefone|telemóvel|telemovel|ligar|contato|contacto)\b|☎|📞)[^\n\d+(]{0,20}$",
    re.IGNORECASE,
)
_ID_WORDS = re.compile(
    r"(?:\b(?:order|orders|invoice|inv|ref|reference|ticket|case|tracking|shipment|parcel|serial|sn|sku|"
    r"version|ver|build|release|error|err|code|kb|id|po|account|acct|customer|contract|policy|"
    r"bestellung|bestellnummer|auftrag|auftragsnummer|rechnung|rechnungsnummer|sendung|vorgang|kundennummer|"
    r"pedido|factura|referencia|envío|envio|número de pedido|"
    r"commande|facture|référence|colis|dossier|"
    r"encomenda|fatura|protocolo)\b|#|nº|n°|no\.|nr\.)[^\n\d]{0,12}$",
    re.IGNORECASE,
)
_DATE = re.compile(r"(?:\d{4}([-./])\d{1,2}\1\d{1,2}|\d{1,2}([-./])\d{1,2}\2\d{2,4})(?![\d./-])")


def luhn_ok(digits: str) -> bool:
    """The card-number checksum (ISO/IEC 7812): true for every issued card number."""
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = int(ch)
        if i % 2:
            d = d * 2 - 9 if d > 4 else d * 2
        total += d
    return total % 10 == 0


def _card(match: re.Match[str]) -> str:
    return "<card>" if luhn_ok(re.sub(r"\D", "", match.group())) else match.group()


def is_phone(candidate: str, before: str) -> bool:
    """Whether `candidate` (digits with separators) is a phone number, given the text `before` it on its line."""
    digits = re.sub(r"\D", "", candidate)
    if not 8 <= len(digits) <= 15:
        return False
    body = candidate.lstrip("(+")
    if _DATE.match(body) or re.fullmatch(r"\d+(?:\.\d+)+", body) and not re.fullmatch(r"\d{2}(?:\.\d{2}){3,5}", body):
        return False  # a date (with a time after it too), or a dotted version or IP address (French 01.23.45.67.89 stays a phone)
    if candidate.startswith(("+", "(+")) or re.match(r"\(?00[1-9]", candidate) or _PHONE_WORDS.search(before):
        return True
    if _ID_WORDS.search(before):
        return False
    # no word either way: phone-style groups (`030 1234567`, `(555) 123-4567`) or a national trunk prefix
    return bool(re.search(r"[ ()/-]", candidate)) or (digits.startswith("0") and 10 <= len(digits) <= 12)


def _phones(text: str) -> str:
    out, last = [], 0
    for match in _PHONE.finditer(text):
        start = match.start()
        before = text[text.rfind("\n", 0, start) + 1 : start][-40:]
        if is_phone(match.group(), before):
            out += [text[last:start], "<phone>"]
            last = match.end()
    return "".join(out) + text[last:]


def redact(text: str) -> str:
    """Credentials (API keys, tokens, typed passwords), e-mail addresses, IBANs, card numbers (Luhn-checked) and
    phone numbers replaced by `<secret>`, `<email>`, `<iban>`, `<card>` and `<phone>`; order numbers, error
    codes, versions, dates and amounts are kept."""
    text = _PRIVATE_KEY.sub("<secret>", text)
    text = _KEYS.sub("<secret>", text)
    text = _BEARER.sub(r"\1<secret>", text)
    text = _SECRET_ASSIGNED.sub(r"\1<secret>", text)
    text = _SECRET_SAID.sub(r"\1<secret>", text)
    text = _EMAIL.sub("<email>", text)
    text = _IBAN.sub("<iban>", text)
    text = _CARD.sub(_card, text)
    return _phones(text)
