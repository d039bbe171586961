"""The Chroma vector store: a `tickets` collection (labelled past tickets) and an `articles` collection (KB).

Vectors are computed by our own embedder and passed in, so Chroma's default embedding function (which
downloads a model) is never used. Embedded `PersistentClient` by default, `HttpClient` when
`TRIAGE_CHROMA_URL` is set.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
from collections.abc import Callable, Collection, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlparse

import chromadb
import httpx
import numpy as np
from chromadb.config import Settings as ChromaSettings
from chromadb.errors import ChromaError
from pydantic import BaseModel

from agent.contracts import Article, EvidenceArticle, EvidenceTicket, LabelledTicket
from agent.embeddings import Embedder, EmbeddingSettingError
from agent.urls import shown_url

TICKETS = "tickets"
ARTICLES = "articles"
_MAX_DOC_CHARS = 4000
# an article's metadata key naming the file it was ingested from (its resolved path): agent.service.ingest
ORIGIN = "origin"


class StoreUnavailable(RuntimeError):
    """The vector store cannot be opened (a Chroma server down, a damaged store file); the message says what to do."""


def make_client(*, path: Path | None = None, url: str | None = None) -> chromadb.ClientAPI:
    """The Chroma client; a server that does not answer or a store that cannot be opened is a StoreUnavailable,
    not chromadb's ValueError or InternalError traceback."""
    settings = ChromaSettings(anonymized_telemetry=False, allow_reset=True)
    if url:
        host, port, headers = server_address(url)
        try:
            return chromadb.HttpClient(host=host, port=port, ssl=url.startswith("https"), headers=headers, settings=settings)
        except Exception as exc:  # noqa: BLE001 - chromadb reports a refused connection as a bare ValueError
            raise StoreUnavailable(_server_problem(url, exc, _refused(host, headers))) from exc
    if path is None:
        raise ValueError("either a path or a url is needed for the Chroma client")
    try:
        path.mkdir(parents=True, exist_ok=True)
        return chromadb.PersistentClient(path=str(path), settings=settings)
    except (ChromaError, OSError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise StoreUnavailable(
            f"cannot open the vector store at {path} ({reason}); move that folder aside and run `triage ingest` to "
            "build it again, or point TRIAGE_DATA_DIR elsewhere"
        ) from exc


def server_address(url: str) -> tuple[str, int, dict[str, str]]:
    """What chromadb's HttpClient takes for TRIAGE_CHROMA_URL: the URL without its credentials (a path prefix kept:
    a server behind a reverse proxy at https://host/chroma), its port, and `user:password@` as a Basic
    Authorization header (Chroma's basic auth, or the proxy's). Only the host and port were passed before, so a
    prefix and credentials in the URL were silently dropped and such a server answered 404 or 401."""
    parsed = urlparse(url)
    port = parsed.port or (443 if parsed.scheme == "https" else 8000)
    base = f"{parsed.scheme or 'http'}://{parsed.hostname or '127.0.0.1'}:{port}{parsed.path.rstrip('/')}"
    headers: dict[str, str] = {}
    if parsed.username is not None:
        secret = f"{unquote(parsed.username)}:{unquote(parsed.password or '')}".encode()
        headers["Authorization"] = "Basic " + base64.b64encode(secret).decode("ascii")
    return base, port, headers


def _refused(base: str, headers: dict[str, str]) -> int | None:
    """401 or 403 when the server (or the reverse proxy before it) refuses the request's credentials, else None.
    chromadb words that answer as an empty ValueError, which read as a server that is down ('start it')."""
    try:
        status = httpx.get(f"{base}/api/v2/auth/identity", headers=headers, timeout=5.0).status_code
    except httpx.HTTPError:
        return None
    return status if status in (401, 403) else None


def _server_problem(url: str, exc: Exception, refused: int | None = None) -> str:
    """Why the Chroma client could not start, on one line. chromadb raises a refused connection as a ValueError of
    its own words, and whatever else answered (another service on that port, a server of an older API) as a
    ValueError holding that answer's whole body, an HTML page of a dozen lines."""
    if refused:
        sent = "the user:password@ in TRIAGE_CHROMA_URL" if urlparse(url).username is not None else "a request without credentials"
        return (f"the Chroma server at {shown_url(url)} refused {sent} (HTTP {refused}); put the user and password it "
                "(or its reverse proxy) accepts in TRIAGE_CHROMA_URL as https://user:password@host/path")
    text = str(exc).strip()
    if not text or "could not connect" in text.lower():
        return (f"cannot reach the Chroma server at {shown_url(url)} ({text or type(exc).__name__}); start it "
                "(`chroma run --path DIR`) or unset TRIAGE_CHROMA_URL to use the store under TRIAGE_DATA_DIR")
    answer = " ".join(re.sub(r"<[^>]*>", " ", text).split())[:160]
    return (f"something answers at {shown_url(url)}, but not as a Chroma server this client (chromadb {chromadb.__version__}, "
            f"API v2) can use: it said {answer!r}; check the port in TRIAGE_CHROMA_URL and run a matching server there "
            "(`chroma run --path DIR` from this environment)")


def open_store(embedder: Embedder, *, path: Path | None = None, url: str | None = None) -> VectorStore:
    """`VectorStore` on the client `make_client` builds, or StoreUnavailable naming the store, the cause and the fix:
    Chroma reports a store it cannot use as ValueError, its own errors, SQLite's or the OS's, each with a long
    traceback, and some only when the collections are opened."""
    try:
        return VectorStore(make_client(path=path, url=url), embedder)
    except (StoreUnavailable, EmbeddingSettingError):
        raise
    except Exception as exc:  # noqa: BLE001 - whatever Chroma raises on opening means the store is unusable
        cause = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        if url:
            raise StoreUnavailable(f"cannot reach the Chroma server at {shown_url(url)} ({cause}); start it (`chroma run --path DIR`) or fix TRIAGE_CHROMA_URL") from exc
        raise StoreUnavailable(
            f"cannot open the vector store at {path} ({cause}); check that the directory is writable, and if its files "
            "are damaged move that folder aside and run `triage ingest` to build it again, or point TRIAGE_DATA_DIR elsewhere"
        ) from exc


class VectorStore:
    def __init__(self, client: chromadb.ClientAPI, embedder: Embedder) -> None:
        self.client = client
        self.embedder = embedder
        space = {"hnsw:space": "cosine", "embedder": embedder.name}
        self.tickets = client.get_or_create_collection(TICKETS, metadata=space, embedding_function=None)
        self.articles = client.get_or_create_collection(ARTICLES, metadata=space, embedding_function=None)
        for coll in (self.tickets, self.articles):
            stored = (coll.metadata or {}).get("embedder")
            if stored and stored != embedder.name and coll.count():
                raise EmbeddingSettingError(
                    f"the vector store's {coll.name} were embedded with {stored}, and the embedding settings now name "
                    f"{embedder.name}, whose vectors cannot be compared with them: set TRIAGE_EMBEDDING_MODEL (or "
                    "TRIAGE_EMBEDDING_MODEL_DIR, TRIAGE_EMBEDDING_BASE_URL) back, or run `triage ingest` into a fresh "
                    "TRIAGE_DATA_DIR (or Chroma server) with the new model"
                )

    # ------------------------------------------------------------ writes

    def upsert_tickets(self, tickets: Sequence[LabelledTicket], vectors: np.ndarray | None = None) -> None:
        if not tickets:
            return
        if vectors is None:
            vectors = self.embedder.embed([t.text() for t in tickets])
        self.tickets.upsert(
            ids=[t.id for t in tickets],
            embeddings=vectors.tolist(),
            documents=[t.text()[:_MAX_DOC_CHARS] for t in tickets],
            metadatas=[_ticket_metadata(t) for t in tickets],
        )

    def upsert_articles(self, articles: Sequence[Article]) -> None:
        if not articles:
            return
        vectors = self.embedder.embed([f"{a.title}\n\n{a.text}" for a in articles])
        self.articles.upsert(
            ids=[a.id for a in articles],
            embeddings=vectors.tolist(),
            documents=[a.text[:_MAX_DOC_CHARS] for a in articles],
            metadatas=[
                _clean({"title": a.title, "url": a.url, "source": a.source, "service": a.service, "sha": fingerprint(a)})
                for a in articles
            ],
        )

    def sync_article_origin(self, origin: str, keep: Collection[str], *, batch: int = 1000) -> list[str]:
        """Make the articles stored from the file `origin` exactly `keep` (ids already upserted): each is tagged with
        that origin (also one stored before origins were recorded, or moved here from another file), and an article
        tagged with it that the file no longer holds is deleted, so an article taken out of the help centre stops
        being retrieved and cited. Articles of other files are left alone. Returns the ids deleted."""
        wanted = list(dict.fromkeys(keep))
        for i in range(0, len(wanted), batch):
            got = self.articles.get(ids=wanted[i : i + batch], include=["metadatas"])
            moved = [id_ for id_, meta in zip(got["ids"], got["metadatas"], strict=True) if (meta or {}).get(ORIGIN) != origin]
            if moved:
                self.articles.update(ids=moved, metadatas=[{ORIGIN: origin} for _ in moved])
        kept = set(wanted)
        gone = [id_ for id_ in self.articles.get(where={ORIGIN: origin}, include=[])["ids"] if id_ not in kept]
        for i in range(0, len(gone), batch):
            self.articles.delete(ids=gone[i : i + batch])
        return gone

    def relabel_tickets(self, relabel: Callable[[dict[str, str], str], dict[str, str]], *, batch: int = 1000) -> int:
        """Rewrite stored tickets' labels (a taxonomy migration) with `relabel(labels, text)`; vectors, texts and
        content hashes stay, so a later ingest of the same seed does not undo it. Returns how many changed."""
        got = self.tickets.get(include=["metadatas", "documents"])
        ids, metas = [], []
        for id_, meta, doc in zip(got["ids"], got["metadatas"], got["documents"], strict=True):
            meta = dict(meta or {})
            labels = json.loads(meta.get("labels", "{}"))
            new = relabel(labels, doc or "")
            if new != labels:
                meta["labels"] = json.dumps(new, sort_keys=True)
                ids.append(id_)
                metas.append(meta)
        for i in range(0, len(ids), batch):
            self.tickets.update(ids=ids[i : i + batch], metadatas=metas[i : i + batch])
        return len(ids)

    def stale_ids(self, collection: str, fingerprints: dict[str, str]) -> list[str]:
        """Ids that are absent from the collection or stored with another content fingerprint."""
        coll = self.tickets if collection == TICKETS else self.articles
        wanted = list(fingerprints)
        stored: dict[str, str | None] = {}
        for i in range(0, len(wanted), 1000):
            got = coll.get(ids=wanted[i : i + 1000], include=["metadatas"])
            stored.update({id_: (meta or {}).get("sha") for id_, meta in zip(got["ids"], got["metadatas"], strict=True)})
        return [i for i in wanted if stored.get(i) != fingerprints[i]]

    # ------------------------------------------------------------ reads

    def similar_tickets(self, vector: np.ndarray, k: int) -> list[EvidenceTicket]:
        result = self._query(self.tickets, vector, k)
        out = []
        for id_, doc, meta, dist in result:
            labels = json.loads(meta.get("labels", "{}"))
            out.append(
                EvidenceTicket(
                    id=id_,
                    score=round(1.0 - dist, 4),
                    labels=labels,
                    text=doc,
                    answer=meta.get("answer"),
                    verified=bool(meta.get("verified", False)),
                )
            )
        return out

    def similar_articles(self, vector: np.ndarray, k: int) -> list[EvidenceArticle]:
        result = self._query(self.articles, vector, k)
        return [
            EvidenceArticle(id=id_, title=meta.get("title", id_), score=round(1.0 - dist, 4), url=meta.get("url"), text=doc)
            for id_, doc, meta, dist in result
        ]

    def labelled_tickets(self) -> tuple[list[LabelledTicket], np.ndarray]:
        """Every stored ticket with its vector: what the proposal head is trained on."""
        got = self.tickets.get(include=["documents", "metadatas", "embeddings"])
        tickets = [
            LabelledTicket(
                id=id_,
                body=doc or "",
                labels=json.loads(meta.get("labels", "{}")),
                source=meta.get("source", "seed"),
                verified=bool(meta.get("verified", False)),
                channel=meta.get("channel"),
            )
            for id_, doc, meta in zip(got["ids"], got["documents"], got["metadatas"], strict=True)
        ]
        vectors = np.asarray(got["embeddings"], dtype=np.float32) if len(got["ids"]) else np.zeros((0, 0), np.float32)
        return tickets, vectors

    def counts(self) -> dict[str, int]:
        return {TICKETS: self.tickets.count(), ARTICLES: self.articles.count()}

    def _query(self, collection: Any, vector: np.ndarray, k: int) -> list[tuple[str, str, dict[str, Any], float]]:
        if k <= 0:
            return []
        # Chroma returns what there is when k exceeds the collection (nothing when empty): no count() round trip
        res = collection.query(
            query_embeddings=[vector.tolist()], n_results=k, include=["documents", "metadatas", "distances"]
        )
        return list(zip(res["ids"][0], res["documents"][0], res["metadatas"][0], res["distances"][0], strict=True))


def fingerprint(record: BaseModel) -> str:
    """A short content hash, so re-ingesting skips what is unchanged and updates what changed."""
    return hashlib.sha256(record.model_dump_json().encode()).hexdigest()[:16]


def _clean(meta: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in meta.items() if v is not None}


def _ticket_metadata(ticket: LabelledTicket) -> dict[str, Any]:
    return _clean(
        {
            "labels": json.dumps(ticket.labels, sort_keys=True),
            "answer": (ticket.answer or "")[:1500] or None,
            "source": ticket.source,
            "channel": ticket.channel,
            "language": ticket.language,
            "verified": ticket.verified,
            "sha": fingerprint(ticket),
        }
    )
