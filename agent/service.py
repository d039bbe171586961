"""Use cases shared by the API, the CLI, the UI and the evals: build the parts, ingest, classify.

This is the composition root: it turns `Settings` into an embedder, a store, a proposal head and an LLM
client, and hands them to the graph as context. Nothing below it reads settings on its own.
"""

from __future__ import annotations

import hashlib
import json
import logging
import threading
import time
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from tqdm import tqdm

from agent import jsonl
from agent.contracts import (
    AXES,
    Article,
    Classification,
    Evidence,
    LabelledTicket,
    Route,
    Taxonomy,
    TicketIn,
    Usage,
    has_text,
)
from agent.embeddings import (
    MINILM,
    PACKAGED,
    USE_MULTILINGUAL,
    Embedder,
    EmbeddingSettingError,
    OnnxEmbedder,
    OpenAIEmbedder,
    UseEmbedder,
    choose_packaged_model,
    packaged_minilm,
)
from agent.graph import triage_graph
from agent.llm import CircuitBreaker, LLMClient, StructuredMode
from agent.local_llm import LocalLLMError, LocalLLMServer
from agent.migration import Stranded, carried_thresholds, migrate_stored_labels, stranded_labels
from agent.proposal import HeadOptions, ProposalHead
from agent.redaction import redact
from agent.revisions import canonical_label
from agent.settings import Settings
from agent.state import Calibration, TriageContext
from agent.store import ARTICLES, TICKETS, VectorStore, fingerprint, open_store
from agent.taxonomy import TaxonomyError, load_taxonomy

if TYPE_CHECKING:
    from agent.records import Records

log = logging.getLogger(__name__)


class TicketError(ValueError):
    """A ticket the agent cannot take as given; the message says what to change."""


def embedding_model_name(settings: Settings, texts: Sequence[str] | None = None) -> str:
    """The `name` of the embedder `make_embedder` would build, `auto` resolved (cheap: nothing is loaded)."""
    if settings.embedding_base_url:
        return settings.embedding_model
    if settings.embedding_model_dir:
        return settings.embedding_model_dir.name
    if settings.embedding_model == "auto":
        return choose_packaged_model(texts or [])
    return settings.embedding_model


def make_embedder(settings: Settings, texts: Sequence[str] | None = None) -> Embedder:
    """The embedder the settings name; `auto` chooses a packaged model by the language mix of `texts` (the train
    file of `triage eval`), and is MiniLM when no texts are given (the service: set `use-multilingual-v3` for a
    multilingual help desk, then re-ingest)."""
    name = embedding_model_name(settings, texts)
    if settings.embedding_base_url:
        if name in ("auto", *PACKAGED):
            raise EmbeddingSettingError(
                f"TRIAGE_EMBEDDING_BASE_URL is set: also set TRIAGE_EMBEDDING_MODEL to the endpoint's model name, not {name!r}"
            )
        return OpenAIEmbedder(
            base_url=settings.embedding_base_url, model=name, api_key=settings.embedding_api_key or settings.llm_api_key,
            timeout_s=settings.embedding_timeout_s,
        )
    if settings.embedding_model_dir:
        missing = [f for f in ("model.onnx", "tokenizer.json") if not (settings.embedding_model_dir / f).is_file()]
        if missing:
            raise EmbeddingSettingError(
                f"TRIAGE_EMBEDDING_MODEL_DIR {settings.embedding_model_dir} has no {' or '.join(missing)}; "
                "name a folder with model.onnx and tokenizer.json, or unset it"
            )
        return OnnxEmbedder.from_dir(settings.embedding_model_dir, batch_size=settings.embedding_batch_size, max_batch_tokens=settings.embedding_batch_tokens)
    if name == USE_MULTILINGUAL:
        return UseEmbedder()
    if name != MINILM:
        raise EmbeddingSettingError(f"unknown embedding model {name!r}: use auto, {MINILM}, {USE_MULTILINGUAL}, or set TRIAGE_EMBEDDING_MODEL_DIR")
    model, tokenizer = packaged_minilm()
    return OnnxEmbedder(model, tokenizer, name=MINILM, batch_size=settings.embedding_batch_size, max_batch_tokens=settings.embedding_batch_tokens)


def make_llm(settings: Settings, base_url: str | None, *, server: LocalLLMServer | None = None) -> LLMClient | None:
    """A client for `base_url`; for the embedded `server` (which we run) llama.cpp's JSON mode, and its process
    health joins the breaker's in /healthz."""
    if base_url is None:
        return None
    structured: StructuredMode
    if settings.llm_structured == "auto":
        structured = "json_object" if server is not None else "json_schema"
    else:
        structured = settings.llm_structured
    breaker = CircuitBreaker.from_settings(settings)
    if server is not None:  # once the supervisor has it back, tickets use it at once, not after the cool-down
        server.on_restart.append(breaker.reset)
    return LLMClient(
        base_url=base_url,
        model=settings.llm_model,
        api_key=settings.llm_api_key,
        timeout_s=settings.llm_timeout_s,
        max_attempts=settings.llm_max_attempts,
        structured=structured,
        breaker=breaker,
        server_health=server.health if server is not None else None,
        schema_fallback=settings.llm_structured == "auto",
    )


# the options `ensure_head` trains with, as part of the head's fingerprint
HEAD_OPTIONS = json.dumps(asdict(HeadOptions()), sort_keys=True)


class CalibrationError(ValueError):
    pass


def load_calibration(path: Path, *, named: bool = False) -> Calibration:
    """The auto-apply thresholds; none on disk means the default threshold everywhere. A broken file stops start-up
    with its path and the fix, instead of failing on the first ticket; so does a file named by TRIAGE_CALIBRATION_PATH
    (`named`) that is not there, a typo that would otherwise auto-apply on uncalibrated confidence. The default file
    missing (a taxonomy written anew, without `triage eval` run for it) is a start-up warning; it names the setting
    because the default is looked up beside the taxonomy file, so a new version's file silently left the shipped
    calibration behind, though that one would be read in the new ids."""
    if not path.is_file():
        if named:
            raise CalibrationError(
                f"TRIAGE_CALIBRATION_PATH names {path}, which is not a file; fix the path, write one with `triage eval ... "
                "--out DIR` (DIR/calibration.json), or unset it to use the file next to the taxonomy"
            )
        log.warning(
            "no calibration file at %s: every label is auto-applied at confidence >= %.2f, uncalibrated, and no ticket is "
            "flagged out of scope; fit one with `triage eval ... --out DIR` and copy DIR/calibration.json there, or, for a "
            "new version of a calibrated taxonomy, point TRIAGE_CALIBRATION_PATH at the previous version's file (read in "
            "the new label ids)",
            path, Calibration().default,
        )
        return Calibration()
    try:
        return Calibration.from_json(json.loads(path.read_text(encoding="utf-8")))
    except (ValueError, TypeError) as exc:
        raise CalibrationError(
            f"calibration file {path} is unusable: {exc}. Fix it, write a new one with `triage eval ... --out DIR` "
            "(DIR/calibration.json), or point TRIAGE_CALIBRATION_PATH elsewhere."
        ) from exc


def calibration_for(calibration: Calibration, taxonomy: Taxonomy) -> Calibration:
    """`calibration` with its per-class thresholds in the ids of `taxonomy` (agent.migration.carried_thresholds):
    a calibration fitted under an earlier version must not let a merged or renamed class through at the pooled
    threshold. Each change is logged with the fix, a re-fit on the deployment's own reviewed tickets."""
    thresholds, notes = carried_thresholds(calibration.thresholds, calibration.default, taxonomy)
    for note in notes:
        log.warning("calibration: %s; re-fit the thresholds with `triage eval` (see `triage tickets export --help`)", note)
    return replace(calibration, thresholds=thresholds) if notes else calibration


def load_head(path: Path) -> ProposalHead | None:
    """The pickled head, or None when the file is unreadable (cut short, another version's classes): it is then
    retrained from the store instead of failing every classification."""
    try:
        return ProposalHead.load(path)
    except Exception as exc:  # noqa: BLE001 - any unpickling failure means the same thing: retrain
        log.warning("proposal head %s cannot be loaded (%s: %s); retraining it from the store", path, type(exc).__name__, exc)
        return None


def read_jsonl(path: Path) -> Iterable[dict]:
    """The objects of a JSON Lines file (agent/jsonl.py says what is wrong with a bad line)."""
    return (row for _, row in jsonl.read_jsonl(path))


@dataclass
class IngestReport:
    tickets_added: int
    articles_added: int
    tickets_total: int
    articles_total: int
    skipped: int
    articles_removed: int = 0  # stored from the same file before, no longer in it


class TriageService:
    def __init__(
        self,
        settings: Settings,
        *,
        llm: LLMClient | None = None,
        embedder: Embedder | None = None,
        store: VectorStore | None = None,
    ) -> None:
        self.settings = settings
        self.taxonomy = load_taxonomy(settings.taxonomy_path)
        self.embedder = embedder or make_embedder(settings)
        self.store = store or open_store(self.embedder, path=settings.chroma_dir, url=settings.chroma_url)
        self.llm = llm
        named = settings.calibration_path is not None
        self.calibration = calibration_for(load_calibration(settings.resolved_calibration_path, named=named), self.taxonomy)
        self.head: ProposalHead | None = None
        self._head_lock = threading.Lock()
        self._refit: threading.Thread | None = None  # a serving process's retrain after another process's ingest
        self._fingerprint_seen: tuple[float, str] | None = None

    # ------------------------------------------------------------ proposal head

    @property
    def head_path(self) -> Path:
        return self.settings.models_dir / f"proposal-{self.taxonomy.name}.pkl"

    def _store_fingerprint(self, *, fresh: bool = False) -> str:
        """What the head was trained on: taxonomy, embedder, the head's options (a head pickled under an older default
        is retrained, not kept) and the number of seeded (non-reviewed) tickets.

        Looking costs three store round trips (~4 ms, a fifth of a proposal-mode ticket), so a classify trusts a
        look younger than `store_recheck_s`; an ingest in this process looks again at once, another process's
        ingest is noticed within that time.
        """
        now = time.monotonic()
        seen = self._fingerprint_seen
        if not fresh and seen is not None and now - seen[0] < self.settings.store_recheck_s:
            return seen[1]
        seeded = self._seeded_count()
        value = hashlib.sha256(f"{self.taxonomy.ref}|{self.embedder.name}|{HEAD_OPTIONS}|{seeded}".encode()).hexdigest()[:16]
        self._fingerprint_seen = (now, value)
        return value

    def _seeded_count(self, attempts: int = 3) -> int:
        """Stored tickets that are not reviewed ones (source "human").

        Reviewed tickets teach through retrieval at once (agent/corrections.py); counting them would retrain the
        head (~40 s on 2 cores) inside the next request; the next ingest includes them. The total and the human
        count are two reads: a review upserted between them made the difference one off, and the head was retrained
        inside a request, twice (the next look was right again), holding up every worker for minutes and leaving
        ~300 MB of freed training memory in the server's heap. So the human count is read on both sides of the
        total until it holds still (`attempts` times at most: a review is one transaction, which lands in both).
        """
        def human() -> int:
            return len(self.store.tickets.get(where={"source": "human"}, include=[])["ids"])

        before = human()
        for _ in range(attempts):
            total = self.store.tickets.count()
            after = human()
            if after == before:
                break
            before = after
        return total - after

    def ensure_head(self, *, retrain: bool = False, progress: bool = False, wait: bool = True) -> ProposalHead | None:
        """Load the trained head if it matches the store, else train it on the stored labelled tickets (`progress`:
        say so on stderr, with the time it took: seconds to a minute that would otherwise look like a hang).

        `wait=False` (each classification): when a head is already serving and the store changed under it (another
        process's `triage ingest`), the head in hand answers while one background thread loads or trains the new one.
        Training inside the request held every classification of every serving process for minutes, all of them
        retraining at the same moment on the same cores."""
        with self._head_lock:  # API worker threads: one loads or trains, the others wait for its result
            if wait or retrain or self.head is None or self.head.fingerprint == self._store_fingerprint():
                return self._ensure_head(retrain=retrain, progress=progress)
            if self._refit is None or not self._refit.is_alive():
                self._refit = threading.Thread(target=self._refit_head, name="proposal-head-refit", daemon=True)
                self._refit.start()
            return self.head

    def _refit_head(self) -> None:
        """Background: the head for the store as it is now, from the head file (an ingest sharing the data folder
        wrote it) or trained here, then swapped in; the old head answers meanwhile."""
        try:
            fingerprint = self._store_fingerprint(fresh=True)
            head = load_head(self.head_path) if self.head_path.is_file() else None
            if head is None or head.fingerprint != fingerprint:
                log.warning("the vector store changed under this process (another process's ingest): retraining the "
                            "proposal head in the background; the current head answers meanwhile")
                head = self._fit_head(fingerprint)
                if head is not None:
                    head.save(self.head_path)
            if head is not None:
                with self._head_lock:
                    self.head = head
        except Exception:  # noqa: BLE001 - the current head keeps answering; the next classification tries again
            log.exception("retraining the proposal head in the background failed; the current head keeps answering")

    def _ensure_head(self, *, retrain: bool, progress: bool = False) -> ProposalHead | None:
        fingerprint = self._store_fingerprint(fresh=retrain)
        if not retrain and self.head is not None and self.head.fingerprint == fingerprint:
            return self.head
        if not retrain and self.head_path.is_file():
            head = load_head(self.head_path)
            if head is not None and head.fingerprint == fingerprint:
                self.head = head
                return head
        self.head = self._fit_head(fingerprint, progress=progress)
        if self.head is not None:
            self.head.save(self.head_path)
        return self.head

    def _fit_head(self, fingerprint: str, *, without: frozenset[str] = frozenset(), progress: bool = False) -> ProposalHead | None:
        tickets, vectors = self.store.labelled_tickets()
        keep = [i for i, t in enumerate(tickets) if t.id not in without]
        if not keep:
            return None
        tickets, vectors = [tickets[i] for i in keep], vectors[keep]
        weights = np.array([3.0 if t.verified else 1.0 for t in tickets])
        # tickets stored under the previous taxonomy version teach in the new ids (agent/migration.py)
        stored = [migrate_stored_labels(self.taxonomy, t.labels, t.text()) for t in tickets]
        labels = {axis: [lab.get(axis) for lab in stored] for axis in AXES}
        with tqdm(total=1, desc=f"training the proposal head on {len(tickets):,} tickets", bar_format="{desc}: {elapsed}",
                  disable=not progress) as bar:
            head = ProposalHead.fit(
                [t.text() for t in tickets], vectors, labels, self.taxonomy, sample_weight=weights, fingerprint=fingerprint
            )
            bar.update(1)
        return head

    def held_out_context(self, ids: frozenset[str]) -> TriageContext:
        """A graph context that has never seen the stored tickets `ids`: a head fitted without them (not saved)
        and retrieval that skips them, to measure the agent on tickets the store already learned from."""
        return replace(self.context(), head=self._fit_head("held-out", without=ids), hidden_ids=ids)

    # ------------------------------------------------------------ ingest

    def ingest(self, *, seed_path: Path | None = None, articles_path: Path | None = None, progress: bool = True) -> IngestReport:
        """Seed the store with labelled tickets and KB articles; only what is missing is embedded. Both files are read
        and checked whole before anything is stored (jsonl.InputFileError names the line); a knowledge base without
        the default articles file has no articles, but an articles file that was asked for must be there. The articles
        file is mirrored: an article stored from that same file before and now gone from it is removed from the store
        (articles of other files stay)."""
        kb = self.settings.knowledge_base_dir
        seed_path = seed_path or kb / "seed" / "tickets.jsonl"
        default_articles = kb / "articles" / "articles.jsonl"
        asked = articles_path is not None
        articles_path = articles_path or (default_articles if default_articles.is_file() else None)
        tickets, skipped = self._valid_tickets(jsonl.read_records(seed_path, LabelledTicket, "ticket"))
        articles = jsonl.read_records(articles_path, Article, "article") if articles_path else []
        if asked and not articles:  # a file emptied by mistake would otherwise take its articles out of the store
            raise jsonl.InputFileError(f"{articles_path} holds no articles; give a JSON Lines file with one article a line (id, title, text)")
        new_tickets = set(self.store.stale_ids(TICKETS, {t.id: fingerprint(t) for t in tickets}))
        new_articles = set(self.store.stale_ids(ARTICLES, {a.id: fingerprint(a) for a in articles}))
        self.add_tickets([t for t in tickets if t.id in new_tickets], progress=progress)
        todo = [a for a in articles if a.id in new_articles]
        for i in tqdm(range(0, len(todo), 64), desc="embedding articles", unit="batch", disable=not progress or not todo):
            self.store.upsert_articles(todo[i : i + 64])
        # the file is the KB's truth: an article it no longer holds is removed, or drafts go on citing it
        removed = self.store.sync_article_origin(str(articles_path.resolve()), [a.id for a in articles]) if articles_path else []
        if removed:
            log.info("removed %d articles no longer in %s: %s", len(removed), articles_path, ", ".join(removed[:10]))
        self._fingerprint_seen = None
        self.ensure_head(retrain=bool(new_tickets), progress=progress)
        counts = self.store.counts()
        return IngestReport(len(new_tickets), len(new_articles), counts[TICKETS], counts[ARTICLES], skipped, len(removed))

    def add_tickets(self, tickets: list[LabelledTicket], *, progress: bool = False, batch: int = 128) -> None:
        for i in tqdm(range(0, len(tickets), batch), desc="embedding tickets", unit="batch", disable=not progress or not tickets):
            self.store.upsert_tickets(tickets[i : i + batch])

    def _valid_tickets(self, tickets: Iterable[LabelledTicket]) -> tuple[list[LabelledTicket], int]:
        valid, skipped = [], 0
        for ticket in tickets:
            if self.taxonomy.migration is not None:  # a seed labelled under the previous version
                ticket = ticket.model_copy(update={"labels": migrate_stored_labels(self.taxonomy, ticket.labels, ticket.text())})
            if not has_text(ticket.text()):  # an empty neighbour would match every short ticket and teach nothing
                log.warning("ticket %s has no text (subject and body are empty); skipped", ticket.id)
                skipped += 1
                continue
            known = {axis: label for axis, label in ticket.labels.items() if axis in self.taxonomy.axes and label in self.taxonomy.axes[axis].ids}
            if len(known) != len(ticket.labels):
                log.warning("ticket %s has labels outside taxonomy %s: %s", ticket.id, self.taxonomy.ref, ticket.labels)
                skipped += 1
                continue
            # a help desk's exported history carries its customers' e-mails, cards, keys: the store shows seed text
            # as evidence to leads and puts it in other tickets' prompts, so it is redacted like a reviewed ticket;
            # so is the answer, which every classification of a similar ticket returns (an open /v1/classify too)
            valid.append(ticket.model_copy(update={
                "subject": redact(ticket.subject), "body": redact(ticket.body),
                "answer": redact(ticket.answer) if ticket.answer else ticket.answer,
            }))
        return valid, skipped

    # ------------------------------------------------------------ classify

    def check_ticket(self, ticket: TicketIn) -> None:
        text = ticket.full_text()
        if not text.strip():
            raise TicketError("the ticket has no text: give a subject, a body or at least one message")
        if len(text) > self.settings.max_input_chars:
            raise TicketError(
                f"the ticket has {len(text)} characters, more than the limit of {self.settings.max_input_chars}; "
                "send the first part, or raise TRIAGE_MAX_INPUT_CHARS"
            )
        channels = self.taxonomy.axes["channel"].ids
        if ticket.channel is not None and ticket.channel not in channels:
            channel = canonical_label(self.taxonomy, "channel", ticket.channel)
            if channel not in channels:
                raise TicketError(f"unknown channel {ticket.channel!r}; taxonomy {self.taxonomy.ref} has {channels}")
            ticket.channel = channel  # "Email" from an integration is the taxonomy's "email"

    def context(self) -> TriageContext:
        return TriageContext(
            settings=self.settings,
            taxonomy=self.taxonomy,
            embedder=self.embedder,
            store=self.store,
            head=self.ensure_head(wait=False),
            llm=self.llm,
            calibration=self.calibration,
        )

    def classify(self, ticket: TicketIn, *, context: TriageContext | None = None, trace: dict[str, Any] | None = None) -> Classification:
        """Run the graph on one ticket. `trace`, when given, receives what `decide` combined (the proposal's
        distributions and the LLM's answer), so the evals can replay other vote weights without the LLM."""
        self.check_ticket(ticket)
        ctx = context or self.context()
        started = ctx.clock()
        state = triage_graph.invoke({"ticket": ticket, "warnings": [], "usage": Usage()}, context=ctx)
        if trace is not None:
            trace.update(proposal=state.get("proposal", {}), llm_answer=state.get("llm_answer"))
        labels = state["labels"]
        service = self.taxonomy.axes["service"].get(labels["service"].label)
        routing = service.routing if service and service.routing else None
        return Classification(
            ticket_id=ticket.ticket_id,
            labels=labels,
            decision=state["decision"],
            rationale=state["rationale"],
            evidence=Evidence(tickets=state.get("neighbours", []), articles=state.get("articles", [])),
            route=Route(team=routing.team if routing else "triage", queue=routing.queue if routing else None),
            draft=state.get("draft"),
            out_of_scope=state.get("out_of_scope", False),
            taxonomy_version=self.taxonomy.ref,
            model=self.model_name(state.get("model")),
            latency_ms=round((ctx.clock() - started) * 1000, 1),
            usage=state.get("usage", Usage()),
            warnings=list(dict.fromkeys(state.get("warnings", []))),
        )

    def model_name(self, llm_model: str | None) -> str:
        proposal = f"proposal:{self.embedder.name}+tfidf"
        if self.settings.mode == "proposal" or self.llm is None:
            return proposal
        return f"{proposal}|llm:{llm_model or self.llm.model}"


# ---------------------------------------------------------------- start-up: stored labels vs the taxonomy


class StrandedLabelsError(TaxonomyError):
    """The taxonomy in force lacks labels that stored tickets use and no step of its `migration:` moves them:
    such tickets could not be accepted, filtered or migrated, so the service does not start."""


def labels_in_use(records: Records) -> list[tuple[dict[str, str | None], int]]:
    """Each distinct combination of the stored tickets' current labels with its number of tickets. One GROUP BY
    over the labels the tickets table keeps beside each ticket: no revision is read, and the answer has a few
    hundred rows at most (services x channels x tiers)."""
    from sqlalchemy import func, select

    from agent.records import TicketRow

    columns = {"service": TicketRow.current_service, "channel": TicketRow.current_channel, "tier": TicketRow.current_tier}
    query = select(*columns.values(), func.count()).where(TicketRow.current_seq.is_not(None)).group_by(*columns.values())
    with records.read() as session:
        return [(dict(zip(columns, row[:-1], strict=True)), int(row[-1])) for row in session.execute(query)]


def check_labels_in_use(taxonomy: Taxonomy, records: Records, *, path: Path | None = None) -> None:
    """Raise StrandedLabelsError, naming the labels, the tickets and the fix, when `taxonomy` strands stored
    tickets; labels its `migration:` moves are fine (`triage taxonomy migrate` moves their tickets)."""
    stranded = stranded_labels(taxonomy, labels_in_use(records))
    if stranded.tickets:
        raise StrandedLabelsError(_stranded_message(taxonomy, stranded, records, path))


def _stranded_message(taxonomy: Taxonomy, stranded: Stranded, records: Records, path: Path | None) -> str:
    """One line: what is lost and what to do, which depends on whether the file was edited in place (the same
    version registered with other content), is a new version without a migration, or one whose steps miss labels."""
    where = f" ({path})" if path else ""
    tickets = f"{stranded.tickets} stored ticket{'s' if stranded.tickets != 1 else ''}"
    lost = f"taxonomy {taxonomy.ref}{where} lacks labels that {tickets} use: {stranded.describe()}"
    served = _served_versions(records, taxonomy.name)
    step = "a rename, merge, split or retire step for each"
    if _had_labels(served.get(taxonomy.ref), stranded):
        return (
            f"{lost}; the file was changed without a new version: put the labels back, or bump `version` and add a "
            f"`migration:` naming from_version {taxonomy.version!r} with {step}"
        )
    if taxonomy.migration is not None:
        return f"{lost}, and no step of its `migration:` moves them; add {step} to it, or keep the labels"
    earlier = next((ref.split("@", 1)[1] for ref in served if ref != taxonomy.ref), None)
    from_version = f"naming from_version {earlier!r} " if earlier else "naming the version they were labelled under "
    return (
        f"{lost}, and it has no `migration:` section; add one {from_version}with {step} (check it with `triage "
        f"taxonomy validate NEW.yaml --previous OLD.yaml`), or keep the labels"
    )


def _served_versions(records: Records, name: str) -> dict[str, dict[str, Any]]:
    """ref -> content of the versions of taxonomy `name` this deployment served, the latest first."""
    from sqlalchemy import select

    from agent.records import TaxonomyVersionRow

    query = select(TaxonomyVersionRow).where(TaxonomyVersionRow.name == name).order_by(TaxonomyVersionRow.created_at.desc())
    with records.read() as session:
        return {row.ref: row.content for row in session.scalars(query)}


def _had_labels(content: dict[str, Any] | None, stranded: Stranded) -> bool:
    """Whether a served version's stored content has any of the stranded labels (an in-place edit removed them)."""
    axes = (content or {}).get("axes") or {}
    return any(
        label in {lab.get("id") for lab in (axes.get(axis) or {}).get("labels", [])}
        for axis, counts in stranded.labels.items()
        for label in counts
    )


def check_stored_labels(settings: Settings, taxonomy: Taxonomy) -> None:
    """At start-up: the deployment's stored tickets against the taxonomy in force. A data directory without a
    records database has nothing to strand, and none is created for the check; a database the check cannot
    read (no tables yet, server down) is left to `Records.open`, which reports it where the records are used."""
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import OperationalError, ProgrammingError

    from agent.records import Records, normalise_url

    url = make_url(normalise_url(settings.resolved_database_url))
    if url.get_backend_name() == "sqlite" and not Path(url.database or "").is_file():
        return
    records = Records(settings.resolved_database_url)
    try:
        check_labels_in_use(taxonomy, records, path=settings.taxonomy_path)
    except (OperationalError, ProgrammingError) as exc:
        log.warning("stored labels not checked against taxonomy %s: the records cannot be read (%s)", taxonomy.ref, exc.orig)
    finally:
        records.close()


@contextmanager
def llm_for(settings: Settings) -> Iterator[LLMClient | None]:
    """The LLM a run talks to: none in proposal mode, the configured endpoint, or the embedded llama.cpp server
    (started here, restarted if it dies meanwhile, and stopped on exit)."""
    if settings.mode == "proposal":
        yield None
    elif settings.llm_base_url:
        yield make_llm(settings, settings.llm_base_url)
    else:
        try:
            server = LocalLLMServer(
                model_path=settings.llm_gguf_path,
                model_alias=settings.llm_model,
                n_ctx=settings.llm_ctx,
                n_threads=settings.llm_threads,
                log_path=settings.data_dir / "logs" / "llm.log",
            ).start().supervise()
        except LocalLLMError as exc:  # the server knows the cause; the settings that choose another LLM are named here
            raise LocalLLMError(
                f"{exc}; point TRIAGE_LLM_GGUF_PATH at a GGUF model (unset: the packaged one), set TRIAGE_LLM_BASE_URL "
                "to a running OpenAI-compatible endpoint, or run without an LLM with TRIAGE_MODE=proposal"
            ) from None
        try:
            yield make_llm(settings, server.base_url, server=server)
        finally:
            server.stop()


@contextmanager
def running_service(settings: Settings, *, seed: bool = True, progress: bool = False) -> Iterator[TriageService]:
    """A ready service: the embedded LLM started when no endpoint is configured, the store seeded if empty.

    Everything started here is stopped on exit, so a CLI call or a server leaves no process behind. A taxonomy
    that strands stored tickets stops it first, before the LLM starts (StrandedLabelsError says what to do).
    """
    check_stored_labels(settings, load_taxonomy(settings.taxonomy_path))
    with llm_for(settings) as llm:
        service = TriageService(settings, llm=llm)
        if seed and service.store.counts()[TICKETS] == 0:
            # minutes of work the caller did not ask for by name: say so, whether or not a progress bar shows
            log.warning("the vector store (%s) is empty: seeding it from %s first (a few minutes, once)",
                        settings.vector_store_location, settings.knowledge_base_dir)
            service.ingest(progress=progress)
        yield service
