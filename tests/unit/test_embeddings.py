"""The packaged embedders: batching by length must not change which vector belongs to which text; the multilingual
model maps translations together; `auto` picks it only for a multilingual corpus."""

from __future__ import annotations

import json
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

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


class _EmbeddingsHandler(BaseHTTPRequestHandler):
    """A /v1/embeddings endpoint that keeps the Authorization header it was sent and answers one vector a text."""

    seen: list[str | None] = []

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers.get("content-length", 0))))
        _EmbeddingsHandler.seen.append(self.headers.get("authorization"))
        data = [{"object": "embedding", "index": i, "embedding": [1.0, 0.0, 0.0]} for i in range(len(body["input"]))]
        payload = json.dumps({"object": "list", "data": data, "model": body["model"], "usage": {"prompt_tokens": 1, "total_tokens": 1}}).encode()
        self.send_response(200)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002
        pass


def test_the_embedding_endpoint_gets_its_own_key_else_the_llms() -> None:
    """TRIAGE_EMBEDDING_API_KEY did not exist: an embedding endpoint behind another key than the LLM's was refused."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), _EmbeddingsHandler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_address[1]}/v1"
    try:
        _EmbeddingsHandler.seen = []
        for settings in (
            Settings(embedding_base_url=url, embedding_model="e5", llm_api_key="llm-key", embedding_api_key="emb-key"),
            Settings(embedding_base_url=url, embedding_model="e5", llm_api_key="llm-key"),
        ):
            assert make_embedder(settings).embed(["a ticket"]).shape == (1, 3)
        assert _EmbeddingsHandler.seen == ["Bearer emb-key", "Bearer llm-key"]
    finally:
        server.shutdown()
        server.server_close()


class _PerTokenHandler(BaseHTTPRequestHandler):
    """What llama-cpp-python's server answers for a chat model served with --embedding and no pooling: a list of
    per-token vectors for each text, not one vector."""

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers.get("content-length", 0))))
        data = [{"object": "embedding", "index": i, "embedding": [[0.1, 0.2]] * (i + 2)} for i in range(len(body["input"]))]
        payload = json.dumps({"object": "list", "data": data, "model": body["model"], "usage": {"prompt_tokens": 1, "total_tokens": 1}}).encode()
        self.send_response(200)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002
        pass


def test_an_endpoint_answering_per_token_vectors_is_named_not_a_numpy_traceback() -> None:
    """`triage ingest` with TRIAGE_EMBEDDING_BASE_URL at llama-cpp-python's server (the README names llama.cpp)
    serving a chat model ended in numpy's 'setting an array element with a sequence ... inhomogeneous shape'."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), _PerTokenHandler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_address[1]}/v1"
    try:
        embedder = make_embedder(Settings(embedding_base_url=url, embedding_model="smol"))
        with pytest.raises(EmbeddingError, match=r"the embedding endpoint .* \(model 'smol'\) answered not one flat vector per text"):
            embedder.embed(["a ticket", "another one"])
    finally:
        server.shutdown()
        server.server_close()


def test_a_hung_embedding_endpoint_fails_within_its_timeout() -> None:
    """The openai client's defaults (10 minutes a request, retried) held a ticket that long on an endpoint that
    accepted the connection and never answered."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(8)  # accepts connections into the backlog, never answers them
    try:
        url = f"http://127.0.0.1:{listener.getsockname()[1]}/v1"
        embedder = make_embedder(Settings(embedding_base_url=url, embedding_model="e5", embedding_timeout_s=0.5))
        started = time.monotonic()
        with pytest.raises(EmbeddingError, match=r"the embedding endpoint .* failed: Request timed out"):
            embedder.embed(["a ticket"])
        assert time.monotonic() - started < 10  # 3 tries of 0.5 s and the client's short back-off
    finally:
        listener.close()
