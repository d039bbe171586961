"""`triage eval` embeds the test file ahead in batches: the graph must then find every ticket's vector in the cache,
which holds only if both embed the very same string (PII redacted, control characters and spaces cleaned, cut)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from types import SimpleNamespace

import numpy as np

from agent.nodes.normalize import normalize
from evals.datasets import EvalRow
from evals.runner import CachedEmbedder, embed_ahead, row_ticket
from tests.fakes import HashEmbedder


class CountingEmbedder(HashEmbedder):
    def __init__(self) -> None:
        super().__init__()
        self.texts: list[str] = []

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        self.texts.extend(texts)
        return super().embed(texts)


def test_the_graph_finds_every_test_vector_embedded_ahead(settings, tmp_path: Path) -> None:  # noqa: ANN001
    settings = settings.model_copy(update={"max_ticket_chars": 300})
    rows = [
        EvalRow(id="pii", text="Card 4111 1111 1111 1111 was charged twice,\x07 mail me at jane@example.com"),
        EvalRow(id="spaces", text="  Subject line\n\n\n\nbody   with\ttabs  "),
        EvalRow(id="long", text="the export fails again " * 40),
        EvalRow(id="same", text="the export fails again " * 40),  # a duplicate is embedded once
    ]
    inner = CountingEmbedder()
    cached = CachedEmbedder(inner, tmp_path / "cache.sqlite")
    embed_ahead(cached, rows, settings, progress=False)
    assert len(inner.texts) == 3
    runtime = SimpleNamespace(context=SimpleNamespace(settings=settings))
    for row in rows:
        state = normalize({"ticket": row_ticket(row, settings)}, runtime)  # type: ignore[arg-type]
        cached.embed([state["text"]])  # what the retrieve node asks for
    assert len(inner.texts) == 3, f"the graph embedded again: {inner.texts[3:]}"
    assert "jane@example.com" not in " ".join(inner.texts) and all(len(t) <= 300 for t in inner.texts)
