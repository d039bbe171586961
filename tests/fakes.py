"""Test doubles for units that are not the LLM call or the embedding model themselves."""

from __future__ import annotations

import hashlib
import re
from collections import deque
from collections.abc import Sequence

import numpy as np

from agent.contracts import Usage
from agent.llm import LLMReply, LLMUnavailable


class HashEmbedder:
    """Deterministic bag-of-words hashing: similar word sets give similar vectors, no model needed."""

    name = "hash-test"

    def __init__(self, dim: int = 256) -> None:
        self.dim = dim

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        for row, text in enumerate(texts):
            for word in re.findall(r"\w+", text.lower()):
                out[row, int(hashlib.md5(word.encode()).hexdigest(), 16) % self.dim] += 1.0
            norm = np.linalg.norm(out[row])
            out[row] = out[row] / norm if norm else out[row]
            if not norm:
                out[row, 0] = 1.0
        return out


class ScriptedLLM:
    """An LLM client with queued answers (strings, or exceptions to raise), recording every call."""

    base_url = "scripted://"
    model = "scripted"

    def __init__(self, answers: Sequence[str | Exception]) -> None:
        self.answers: deque[str | Exception] = deque(answers)
        self.calls: list[list[dict[str, str]]] = []

    def chat(self, messages, *, schema=None, max_tokens=256, temperature=0.0) -> LLMReply:  # noqa: ANN001
        self.calls.append(messages)
        if not self.answers:
            raise LLMUnavailable("scripted LLM has no answers left")
        answer = self.answers.popleft()
        if isinstance(answer, Exception):
            raise answer
        return LLMReply(text=answer, usage=Usage(prompt_tokens=10, completion_tokens=5), model=self.model)
