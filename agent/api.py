"""The HTTP API (FastAPI; OpenAPI at /docs): stateless classification and the ticket lifecycle, for bots and the UI.

Auth is `Authorization: Bearer <key>` with scopes bot < lead < admin; only `/healthz` is open. Classification
runs on a bounded worker pool (agent/pool.py), so a slow LLM gives callers a 503 + Retry-After, not a hang.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import ExitStack, asynccontextmanager
from datetime import datetime
from typing import Annotated, Literal

from fastapi import Depends, FastAPI, Header, HTTPException, Query, Request, Response
from fastapi.concurrency import run_in_threadpool
from pydantic import BaseModel, ConfigDict, Field, field_validator
from sqlalchemy import select, text

from agent import __version__
from agent.api_guards import (
    BodyLimit,
    CreatedAfter,
    CreatedBefore,
    Credentials,
    NoNulInUrl,
    check_range,
    install_error_handlers,
    needs,
)
from agent.api_insights import router as insights_router
from agent.auth import Principal, check_key_name, create_key, list_keys, revoke_key
from agent.contracts import (
    Classification,
    EscalationIn,
    Message,
    MigrationIn,
    MigrationReport,
    Page,
    QueueItem,
    ReviewIn,
    RevisionView,
    Taxonomy,
    TicketIn,
    TicketSummary,
    TicketView,
)
from agent.lifecycle import Lifecycle
from agent.migration_jobs import MigrationJob, MigrationJobs
from agent.pool import WorkerPool
from agent.reader import Invalid, NotFound, shown
from agent.records import Records, TaxonomyVersionRow
from agent.service import TicketError, TriageService, running_service
from agent.settings import Settings
from agent.urls import rebound_host

Bot = Annotated[Principal, Depends(needs("bot"))]
Lead = Annotated[Principal, Depends(needs("lead"))]
Admin = Annotated[Principal, Depends(needs("admin"))]
IdempotencyKey = Annotated[
    str | None,
    Header(
        alias="Idempotency-Key", max_length=200,
        description="Send the same key again (e.g. after a timeout) to get the first ticket back instead of a duplicate.",
    ),
]

log = logging.getLogger(__name__)


_bot_only = needs("bot")


async def classify_caller(request: Request, credentials: Credentials) -> Principal | None:
    """Stateless classification stores nothing, so by default it is open on the loopback-bound server (the
    README's curl works as is); a key that is sent is still checked. TRIAGE_ANONYMOUS_CLASSIFY=false makes it
    bot-only like every other endpoint: do that before binding the API to anything but loopback."""
    if credentials is None and request.app.state.settings.anonymous_classify and not rebound(request):
        return None
    return await _bot_only(request, credentials)


def rebound(request: Request) -> bool:
    """Whether a request reached a loopback socket under another host's name: what a browser sends after a web page
    re-points its own name at 127.0.0.1 (DNS rebinding), to read the answer, past tickets' evidence included, as
    same-origin. A local caller names a loopback host; a bind to the network (no loopback socket) is not asked."""
    server = request.scope.get("server")
    return rebound_host(str(server[0]) if server else None, request.headers.get("host")) is not None


ClassifyCaller = Annotated[Principal | None, Depends(classify_caller)]


def lifecycle_of(request: Request) -> Lifecycle:
    return request.app.state.lifecycle


Life = Annotated[Lifecycle, Depends(lifecycle_of)]


def migration_jobs_of(request: Request) -> MigrationJobs:
    return request.app.state.migration_jobs


Jobs = Annotated[MigrationJobs, Depends(migration_jobs_of)]


class Health(BaseModel):
    status: str = Field(description="ok, or degraded while the LLM is skipped (its circuit breaker is open): labels then come from the proposal.")
    version: str
    taxonomy: str
    model: str
    store: dict[str, int] = Field(description="Tickets and articles in the vector store; empty when it cannot be read.")
    problems: list[str] = Field(
        default_factory=list,
        description="A part that is down (the vector store, the records database, the embedded LLM's process) or "
        "an LLM endpoint that refuses the key or model, one line each with its cause and fix; status is then degraded.",
    )
    llm: dict[str, object] | None = Field(
        default=None,
        description="The LLM endpoint and its circuit breaker: state closed|open|half_open, consecutive_failures, "
        "last_error, retry_in_s, refused (a 401/403/404 answer and what to fix, until a request succeeds); for the embedded LLM also server: running, restarts, last_exit; null in proposal mode.",
    )


class KeyIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    scope: Literal["bot", "lead", "admin"]
    name: str = Field(
        description="Shown as the actor (user:NAME) in revisions: 1 to 64 letters, digits, '.', '_', '@' or '-', "
        "starting with a letter or digit.",
    )

    @field_validator("name")
    @classmethod
    def _name_rule(cls, name: str) -> str:
        """One rule and one message for every bad name (empty, too long, a line break), as the CLI gives it."""
        return check_key_name(name)


class KeyView(BaseModel):
    id: str
    name: str
    scope: str
    created_by: str
    created_at: datetime
    revoked_at: datetime | None


class NewKey(KeyView):
    key: str = Field(description="The secret; shown only in this response, stored only as a hash.")


class TaxonomyVersionView(BaseModel):
    ref: str
    name: str
    version: str
    sha256: str
    created_at: datetime


def part_checks(
    service: TriageService, records: Records | None, llm: dict[str, object] | None
) -> tuple[dict[str, int], list[str]]:
    """The store's counts and a line per part that is down: the vector store, the records database (each asked
    now), the embedded LLM's process (`llm`, the client's health, says whether its supervisor is restarting it)."""
    problems: list[str] = []
    try:
        store = service.store.counts()
    except Exception as exc:  # noqa: BLE001 - whatever Chroma raises, the store cannot answer
        store = {}
        where = f" ({service.settings.vector_store_location})" if service.settings.chroma_url else ""
        problems.append(f"vector store{where}: {_first_line(exc)}")
    if records is not None:
        try:
            with records.read() as session:
                session.execute(text("SELECT 1"))
        except Exception as exc:  # noqa: BLE001 - a server down, a file gone: the records cannot answer
            problems.append(f"records database: {_first_line(exc)}")
    if llm and llm.get("refused"):  # a wrong key or model: up, but every ticket falls back to the proposal
        problems.append(f"LLM: {llm['refused']}")
    server = llm.get("server") if llm else None
    if isinstance(server, dict) and not server["running"]:
        problems.append(f"embedded LLM: {server['last_exit'] or 'not running'}; it is being started again")
    return store, problems


def _first_line(exc: BaseException) -> str:
    cause = getattr(exc, "orig", None) or exc
    return ((str(cause).strip().splitlines() or [type(cause).__name__])[0])[:300]


def _stop_pool(pool: WorkerPool, grace_s: float) -> None:
    left = pool.shutdown(grace_s)
    if left:
        log.warning(
            "stopping with %d classification(s) still running (waiting on the LLM?): their callers got no answer; one "
            "retrying with its Idempotency-Key gets one ticket whatever was stored (TRIAGE_SHUTDOWN_GRACE_S sets how long "
            "running requests get to finish)", left,
        )


def create_app(
    settings: Settings | None = None, service: TriageService | None = None, *, records: Records | None = None
) -> FastAPI:
    """An app around given parts (tests) or parts it builds and tears down itself (serving)."""
    settings = settings or Settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        with ExitStack() as stack:
            svc = service or stack.enter_context(running_service(settings, progress=True))
            recs = records
            if recs is None:
                recs = Records.open(settings)
                stack.callback(recs.close)
            else:
                await run_in_threadpool(recs.upgrade)  # given records come up at the current schema too
            pool = WorkerPool(settings.api_workers, settings.queue_limit)
            # the server gave running requests TRIAGE_SHUTDOWN_GRACE_S before this point; a job still running now
            # waits on the LLM for a caller that is gone: a second more, not another grace period
            stack.callback(_stop_pool, pool, min(settings.shutdown_grace_s, 1.0))
            lifecycle = Lifecycle(svc, recs)
            await run_in_threadpool(lifecycle.register_taxonomy)
            await run_in_threadpool(svc.ensure_head)  # load (or train) the head before the first request needs it
            app.state.service, app.state.records, app.state.pool, app.state.lifecycle = svc, recs, pool, lifecycle
            app.state.migration_jobs = MigrationJobs(lifecycle, recs)
            yield

    app = FastAPI(
        title="Triage agent",
        version=__version__,
        summary="Labels support tickets by service type, channel and support tier, with evidence and a draft answer.",
        description="Send `Authorization: Bearer <key>` (`POST /v1/classify` is open without a key unless "
        "TRIAGE_ANONYMOUS_CLASSIFY=false). Scopes: `bot` (classify, tickets, messages, escalations), "
        "`lead` (also reviews, the review queue, stats and served taxonomy versions), `admin` (also keys).",
        lifespan=lifespan,
    )
    app.state.settings = settings
    app.add_middleware(BodyLimit, max_bytes=settings.max_body_bytes)
    app.add_middleware(NoNulInUrl)
    install_error_handlers(app)
    app.include_router(insights_router)  # GET /v1/stats: the back office's KPIs, for the UI and other dashboards

    # ------------------------------------------------------------ ops

    @app.get("/healthz", response_model=Health, tags=["ops"])
    def healthz(request: Request) -> Health:
        """What a request would meet now: the store and the records are asked (a remote Chroma or PostgreSQL may be
        down while the LLM is fine), the LLM's breaker says what requests have seen. Always 200: the body says."""
        svc: TriageService = request.app.state.service
        llm = svc.llm.health() if svc.llm is not None else None
        store, problems = part_checks(svc, getattr(request.app.state, "records", None), llm)
        return Health(
            status="degraded" if problems or (llm and llm["state"] == "open") else "ok",
            version=__version__,
            taxonomy=svc.taxonomy.ref,
            model=svc.model_name(None),
            store=store,
            problems=problems,
            llm=llm,
        )

    # ------------------------------------------------------------ stateless

    @app.post("/v1/classify", response_model=Classification, tags=["triage"])
    async def classify(
        ticket: TicketIn, request: Request, who: ClassifyCaller
    ) -> Classification:
        """Classify one ticket (stateless, nothing stored): labels per axis, decision, rationale, evidence and a draft."""
        svc: TriageService = request.app.state.service
        try:
            return await request.app.state.pool.run(svc.classify, ticket)
        except TicketError:
            raise
        except ValueError as exc:
            raise HTTPException(status_code=422, detail=str(exc)) from exc

    # ------------------------------------------------------------ tickets

    @app.post("/v1/tickets", response_model=TicketView, status_code=201, tags=["tickets"])
    async def create_ticket(
        ticket: TicketIn, request: Request, response: Response, who: Bot, life: Life, idempotency_key: IdempotencyKey = None
    ) -> TicketView:
        """Store a ticket and classify it (revision 1, reason `new_ticket`). Honours `Idempotency-Key`."""
        scoped = f"{who.key_id}:{idempotency_key}" if idempotency_key else None
        view, created = await request.app.state.pool.run(
            life.create_ticket, ticket, created_by=who.name, idempotency_key=scoped
        )
        response.headers["Location"] = f"/v1/tickets/{view.id}"
        if not created:
            response.headers["Idempotent-Replayed"] = "true"
        return view

    @app.get("/v1/tickets", response_model=Page[TicketSummary], tags=["tickets"])
    def list_tickets(
        who: Bot,
        life: Life,
        limit: Annotated[int, Query(ge=1, le=200)] = 50,
        cursor: str | None = None,
        external_id: Annotated[str | None, Query(description="Only the tickets created with this `ticket_id` (your system's id).")] = None,
    ) -> Page[TicketSummary]:
        """All tickets, newest first; follow `next_cursor` for the next page. `?external_id=` looks one up by the
        `ticket_id` your system sent (send an Idempotency-Key on POST to avoid creating it twice)."""
        return life.list_tickets(limit=limit, cursor=cursor, external_id=external_id)

    @app.get("/v1/tickets/{ticket_id}", response_model=TicketView, tags=["tickets"])
    def get_ticket(ticket_id: str, who: Bot, life: Life) -> TicketView:
        """The ticket, its thread and its current labels (the latest revision no human rejected)."""
        return life.ticket(ticket_id)

    @app.get("/v1/tickets/{ticket_id}/revisions", response_model=list[RevisionView], tags=["tickets"])
    def get_revisions(ticket_id: str, who: Bot, life: Life) -> list[RevisionView]:
        """Every revision, oldest first: reason, actor, labels, what changed, what it superseded, reviews, rejections."""
        return life.revisions(ticket_id)

    @app.post("/v1/tickets/{ticket_id}/messages", response_model=TicketView, status_code=201, tags=["tickets"])
    async def add_message(ticket_id: str, message: Message, request: Request, who: Bot, life: Life) -> TicketView:
        """Append a message; the whole thread is re-classified (reason `new_message`). A human's labels stay."""
        return await request.app.state.pool.run(life.add_message, ticket_id, message, requested_by=who.name)

    @app.post("/v1/tickets/{ticket_id}/escalations", response_model=TicketView, status_code=201, tags=["tickets"])
    async def escalate(ticket_id: str, escalation: EscalationIn, request: Request, who: Bot, life: Life) -> TicketView:
        """Escalate: the tier goes up (to `tier`, else one step) and the thread is re-classified (reason `escalation`)."""
        return await request.app.state.pool.run(life.escalate, ticket_id, escalation, requested_by=who.name)

    # ------------------------------------------------------------ leads

    @app.post("/v1/tickets/{ticket_id}/reclassifications", response_model=TicketView, status_code=201, tags=["reviews"])
    async def reclassify(ticket_id: str, request: Request, who: Lead, life: Life) -> TicketView:
        """Re-run the agent on the thread as it is (reason `reclassify`), e.g. after the store or model changed."""
        return await request.app.state.pool.run(life.reclassify, ticket_id, requested_by=who.name)

    @app.post("/v1/tickets/{ticket_id}/reviews", response_model=TicketView, status_code=201, tags=["reviews"])
    def review(ticket_id: str, body: ReviewIn, who: Lead, life: Life) -> TicketView:
        """Accept, edit or reject the current labels. Accepted and edited labels teach the agent at once."""
        return life.review(ticket_id, body, reviewer=who.name)

    @app.get("/v1/review-queue", response_model=Page[QueueItem], tags=["reviews"])
    def review_queue(
        who: Lead,
        life: Life,
        decision: Literal["needs_review", "suggest"] | None = None,
        service: str | None = None,
        tier: str | None = None,
        channel: str | None = None,
        created_after: CreatedAfter = None,
        created_before: CreatedBefore = None,
        limit: Annotated[int, Query(ge=1, le=200)] = 50,
        cursor: str | None = None,
    ) -> Page[QueueItem]:
        """Tickets waiting for a lead: needs_review first, then suggest, lowest confidence first."""
        check_range(created_after, created_before, ("created_after", "created_before"))
        return life.review_queue(
            limit=limit, cursor=cursor, decision=decision, service=service, tier=tier, channel=channel,
            created_after=created_after, created_before=created_before,
        )

    # ------------------------------------------------------------ taxonomy and keys

    @app.get("/v1/taxonomy", response_model=Taxonomy, tags=["taxonomy"])
    def taxonomy(request: Request, who: Bot) -> Taxonomy:
        """The taxonomy in force: the label ids every answer and review uses (readable by every key)."""
        return request.app.state.service.taxonomy

    @app.get("/v1/taxonomy/versions", response_model=list[TaxonomyVersionView], tags=["taxonomy"])
    def taxonomy_versions(request: Request, who: Lead) -> list[TaxonomyVersionView]:
        """Every taxonomy version this deployment has served, oldest first (revisions name the one they used)."""
        with request.app.state.records.read() as session:
            rows = session.scalars(select(TaxonomyVersionRow).order_by(TaxonomyVersionRow.id))
            return [TaxonomyVersionView(ref=r.ref, name=r.name, version=r.version, sha256=r.sha256, created_at=r.created_at) for r in rows]

    @app.get("/v1/taxonomy/versions/{ref}", response_model=Taxonomy, tags=["taxonomy"])
    def taxonomy_version(ref: str, who: Lead, life: Life) -> Taxonomy:
        """One served version's content as it was served (`name@version`), so a lead can see what a past label meant
        and diff it with the taxonomy in force."""
        served = life.served_taxonomy(ref)
        if served is None:
            raise NotFound(f"no taxonomy version {shown(ref)} was served here; GET /v1/taxonomy/versions lists them")
        return served

    @app.post("/v1/taxonomy/migration", response_model=MigrationReport, tags=["taxonomy"])
    def migrate_taxonomy(body: MigrationIn, who: Admin, life: Life) -> MigrationReport:
        """Move the stored history to the taxonomy in force, following its `migration:` section: a dry run unless
        `commit` (what would change, label by label, and the agent's agreement with the leads' reviewed labels
        under the new version); with `commit`, one `taxonomy_migration` revision per changed ticket. Re-asked
        tickets are classified in the request, so a large history takes a while: start it as a job instead
        (`POST /v1/taxonomy/migration/jobs`) and follow its progress."""
        return life.migrate_taxonomy(life.previous_taxonomy(body.previous), commit=body.commit, reviewed_sample=body.reviewed_sample)

    @app.post("/v1/taxonomy/migration/jobs", response_model=MigrationJob, status_code=202, tags=["taxonomy"])
    def start_migration_job(body: MigrationIn, who: Admin, jobs: Jobs, response: Response) -> MigrationJob:
        """The same migration as `POST /v1/taxonomy/migration`, run in the background: answers at once with the job;
        `GET /v1/taxonomy/migration/jobs/{id}` gives its progress (`done` of `total` tickets) and, once `done`, the
        `MigrationReport`. One job runs at a time (409 names the running one)."""
        job = jobs.start(body, created_by=f"user:{who.name}")
        response.headers["Location"] = f"/v1/taxonomy/migration/jobs/{job.id}"
        return job

    @app.get("/v1/taxonomy/migration/jobs", response_model=list[MigrationJob], tags=["taxonomy"])
    def migration_jobs(who: Admin, jobs: Jobs) -> list[MigrationJob]:
        """The 20 most recent migration jobs, newest first."""
        return jobs.recent()

    @app.get("/v1/taxonomy/migration/jobs/{job_id}", response_model=MigrationJob, tags=["taxonomy"])
    def migration_job(job_id: str, who: Admin, jobs: Jobs) -> MigrationJob:
        """One migration job: `running` (with `done` / `total`), `done` (with its `report`) or `failed` (with `error`)."""
        return jobs.get(job_id)

    @app.post("/v1/keys", response_model=NewKey, status_code=201, tags=["keys"])
    def new_key(body: KeyIn, request: Request, who: Admin) -> NewKey:
        """Create a key; the secret is in this response only."""
        try:
            secret, info = create_key(request.app.state.records, scope=body.scope, name=body.name, created_by=f"user:{who.name}")
        except ValueError as exc:
            raise Invalid(str(exc)) from exc
        return NewKey(key=secret, **info.__dict__)

    @app.get("/v1/keys", response_model=list[KeyView], tags=["keys"])
    def keys(request: Request, who: Admin) -> list[KeyView]:
        return [KeyView(**k.__dict__) for k in list_keys(request.app.state.records)]

    @app.delete("/v1/keys/{key_id}", response_model=KeyView, tags=["keys"])
    def revoke(key_id: str, request: Request, who: Admin) -> KeyView:
        """Revoke a key at once (it answers 401 from the next request on)."""
        try:
            return KeyView(**revoke_key(request.app.state.records, key_id).__dict__)
        except LookupError as exc:
            raise NotFound(str(exc)) from exc

    return app
