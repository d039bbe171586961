"""Prompts are files in `prompts/`; rendering is strict so a missing variable is an error, not a blank."""

from __future__ import annotations

import math
import re
from pathlib import Path

_PLACEHOLDER = re.compile(r"\{\{\s*([a-z_][a-z0-9_]*)\s*\}\}")
FENCE_OPEN = "<<<TICKET"
FENCE_CLOSE = "TICKET>>>"
# runs of 3+ angle brackets, counting the forms NFKC folds into "<" and ">" (small and full-width)
_OPEN_RUN = re.compile("[<\ufe64\uff1c]{3,}")
_CLOSE_RUN = re.compile("[>\ufe65\uff1e]{3,}")

# Token estimate, for every tokenizer at once: a byte-level BPE token holds at least one UTF-8 byte, so a
# character outside ASCII costs at most its byte count (SmolLM2: Chinese 1.9-2.7 tokens a character, Arabic
# and "é" 1, emoji 3). ASCII letters merge well (English about 4.5 characters a token); digits are one token
# each, other ASCII symbols and newlines at most one. Spaces ride on the next word. Joining two texts never
# raises the estimate above the sum of theirs, so a prompt's fixed part and its ticket can be estimated apart.
_PIECES = re.compile(r"[A-Za-z]+|[\n\x21-\x7e]|[^\x00-\x7f]")
_LETTERS_PER_TOKEN = 4
_TOKENS_PER_MESSAGE = 8  # chat-template markers around each message and before the reply
# the ticket's share of the context is never cut below this many (estimated) tokens: the estimate runs 1.2-1.45x
# over on English prompts, so a long taxonomy glossary (58 auto-derived intents) would otherwise leave the ticket
# no room at all although the real prompt fits; if it really does not, the server says so (agent.llm.LLMContextOverflow)
MIN_TICKET_TOKENS = 512
CUT_MARKER = "\n[... the rest of the ticket was cut to fit the LLM's context]"


class PromptError(KeyError):
    """A prompt needs a variable that was not given, or was given one it does not use."""


def fence(text: str) -> str:
    """Wrap untrusted ticket text as data. Every run of three or more angle brackets inside is cut to two, so no
    spelling of a marker (nested, repeated, any case, full-width) can close the fence or open a new one."""
    cleaned = _CLOSE_RUN.sub(">>", _OPEN_RUN.sub("<<", text))
    return f"{FENCE_OPEN}\n{cleaned}\n{FENCE_CLOSE}"


def render(prompts_dir: Path, name: str, **variables: str) -> str:
    template = (prompts_dir / f"{name}.md").read_text(encoding="utf-8")
    wanted = set(_PLACEHOLDER.findall(template))
    missing = wanted - variables.keys()
    unused = variables.keys() - wanted
    if missing or unused:
        raise PromptError(f"prompt {name}: missing {sorted(missing)}, unused {sorted(unused)}")
    return _PLACEHOLDER.sub(lambda m: str(variables[m.group(1)]), template)


def _piece_tokens(piece: str) -> int:
    if not piece.isascii():
        return len(piece.encode("utf-8"))
    return math.ceil(len(piece) / _LETTERS_PER_TOKEN) if piece[0].isalpha() else 1


def estimate_tokens(text: str) -> int:
    """A conservative token count that holds across scripts (a character count does not: 3,000 Chinese
    characters are ~6,000 tokens, 3,000 English ones ~700)."""
    return sum(_piece_tokens(piece) for piece in _PIECES.findall(text))


def estimate_messages_tokens(messages: list[dict[str, str]]) -> int:
    return sum(estimate_tokens(m["content"]) + _TOKENS_PER_MESSAGE for m in messages) + _TOKENS_PER_MESSAGE


def fit_tokens(text: str, budget: int) -> tuple[str, bool]:
    """`text` if its estimate fits `budget` tokens, else its longest head that fits with `CUT_MARKER` after it
    (so the LLM sees that the ticket goes on), and whether it was cut."""
    if estimate_tokens(text) <= budget:
        return text, False
    room = budget - estimate_tokens(CUT_MARKER)
    used = 0
    end = 0
    for match in _PIECES.finditer(text):
        used += _piece_tokens(match.group())
        if used > room:
            break
        end = match.end()
    return text[:end].rstrip() + CUT_MARKER, True
