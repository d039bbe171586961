"""Prompts are files in `prompts/`; rendering is strict so a missing variable is an error, not a blank."""

from __future__ import annotations

import re
from pathlib import Path

_PLACEHOLDER = re.compile(r"\{\{\s*([a-z_][a-z0-9_]*)\s*\}\}")
FENCE_OPEN = "<<<TICKET"
FENCE_CLOSE = "TICKET>>>"


class PromptError(KeyError):
    """A prompt needs a variable that was not given, or was given one it does not use."""


def fence(text: str) -> str:
    """Wrap untrusted ticket text as data; fence markers inside the text are neutralised first."""
    cleaned = text.replace(FENCE_OPEN, "<<TICKET").replace(FENCE_CLOSE, "TICKET>>")
    return f"{FENCE_OPEN}\n{cleaned}\n{FENCE_CLOSE}"


def render(prompts_dir: Path, name: str, **variables: str) -> str:
    template = (prompts_dir / f"{name}.md").read_text(encoding="utf-8")
    wanted = set(_PLACEHOLDER.findall(template))
    missing = wanted - variables.keys()
    unused = variables.keys() - wanted
    if missing or unused:
        raise PromptError(f"prompt {name}: missing {sorted(missing)}, unused {sorted(unused)}")
    return _PLACEHOLDER.sub(lambda m: str(variables[m.group(1)]), template)
