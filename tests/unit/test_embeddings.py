"""The packaged ONNX embedder: batching by length must not change which vector belongs to which text."""

from __future__ import annotations

import numpy as np

from agent.embeddings import OnnxEmbedder, packaged_minilm


def test_batched_vectors_keep_the_input_order() -> None:
    model, tokenizer = packaged_minilm()
    embedder = OnnxEmbedder(model, tokenizer, batch_size=2)
    texts = ["a much longer ticket about a refund that never arrived on my card", "hi", "vpn drops", "", "invoice copy please"]
    batched = embedder.embed(texts)
    one_by_one = np.vstack([embedder.embed([t]) for t in texts])
    assert batched.shape == (5, 384)
    np.testing.assert_allclose(batched, one_by_one, atol=1e-5)
    assert embedder.embed([]).shape[0] == 0
