"""The packaged embedders: batching by length must not change which vector belongs to which text; the multilingual
model maps translations together; `auto` picks it only for a multilingual corpus."""

from __future__ import annotations

import numpy as np
import pytest

from agent.embeddings import (
    MINILM,
    USE_MULTILINGUAL,
    EmbeddingError,
    OnnxEmbedder,
    UseEmbedder,
    choose_packaged_model,
    non_english_share,
    packaged_minilm,
    token_batches,
)
from agent.service import embedding_model_name, make_embedder
from agent.settings import Settings


def test_batched_vectors_keep_the_input_order() -> None:
    model, tokenizer = packaged_minilm()
    texts = ["a much longer ticket about a refund that never arrived on my card", "hi", "vpn drops", "", "invoice copy please"]
    one_by_one = np.vstack([OnnxEmbedder(model, tokenizer).embed([t]) for t in texts])
    # one batch on every core; batches of two in parallel; batches cut by tokens; one core
    for options in ({}, {"batch_size": 2}, {"max_batch_tokens": 8}, {"batch_size": 2, "threads": 1}):
        embedder = OnnxEmbedder(model, tokenizer, **options)
        batched = embedder.embed(texts)
        assert batched.shape == (5, 384)
        np.testing.assert_allclose(batched, one_by_one, atol=1e-5)
        assert embedder.embed([]).shape[0] == 0


def test_token_batches_bound_texts_and_padded_tokens() -> None:
    lengths = [3, 40, 5, 300, 4, 6, 39]
    batches = token_batches(lengths, max_texts=3, max_tokens=100)
    assert sorted(i for b in batches for i in b) == list(range(len(lengths)))
    for batch in batches:
        assert len(batch) <= 3
        assert len(batch) * max(lengths[i] for i in batch) <= 100 or len(batch) == 1  # an over-long text goes alone
    assert [lengths[i] for b in batches for i in b] == sorted(lengths)  # similar lengths share a batch
    assert [3] in batches  # the 300-token text (index 3)
    assert token_batches([], 3, 100) == []


def test_the_multilingual_model_puts_a_translation_next_to_its_original() -> None:
    embedder = UseEmbedder()
    vectors = embedder.embed(["Mein Drucker druckt nicht mehr", "My printer stopped printing", "I want to cancel my plan", ""])
    assert vectors.shape == (4, 512) and vectors.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(vectors[:3], axis=1), 1.0, atol=1e-4)
    similarity = vectors @ vectors.T
    assert similarity[0, 1] > similarity[0, 2] + 0.3  # German and English of the same complaint, not the cancellation
    np.testing.assert_allclose(embedder.embed(["My printer stopped printing"])[0], vectors[1], atol=1e-5)
    assert embedder.embed([]).shape == (0, 512)


ENGLISH = ["my card was charged twice", "please reset my password", "the app crashes when I log in"] * 10
GERMAN = ["Ich kann mich nicht anmelden, bitte helfen Sie mir", "Die Rechnung ist falsch und ich will das nicht zahlen"]


def test_auto_takes_the_multilingual_model_only_for_a_multilingual_corpus() -> None:
    assert non_english_share([]) == 0.0
    assert choose_packaged_model(ENGLISH) == MINILM
    assert choose_packaged_model(ENGLISH + GERMAN) == MINILM  # 2 of 32: under the 10 % share
    assert choose_packaged_model(ENGLISH + GERMAN * 3) == USE_MULTILINGUAL  # 6 of 36
    settings = Settings(embedding_model="auto")
    assert embedding_model_name(settings, ENGLISH + GERMAN * 3) == USE_MULTILINGUAL
    assert embedding_model_name(settings) == MINILM  # the service, with no texts to judge: MiniLM
    assert embedding_model_name(Settings(embedding_model=USE_MULTILINGUAL), ENGLISH) == USE_MULTILINGUAL


def test_an_endpoint_needs_its_own_model_name_and_unknown_names_are_refused() -> None:
    with pytest.raises(EmbeddingError, match="TRIAGE_EMBEDDING_MODEL"):
        make_embedder(Settings(embedding_base_url="http://127.0.0.1:9/v1", embedding_model="auto"))
    with pytest.raises(EmbeddingError, match="unknown embedding model 'bert-xl'"):
        make_embedder(Settings(embedding_model="bert-xl"))
