"""The HTTP API (FastAPI): health and stateless classification for bots; OpenAPI docs at /docs."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import ExitStack, asynccontextmanager

from fastapi import FastAPI, HTTPException, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse
from pydantic import BaseModel

from agent import __version__
from agent.contracts import Classification, TicketIn
from agent.service import TicketError, TriageService, running_service
from agent.settings import Settings


class Health(BaseModel):
    status: str
    version: str
    taxonomy: str
    model: str
    store: dict[str, int]


def create_app(settings: Settings | None = None, service: TriageService | None = None) -> FastAPI:
    """An app around a given service (tests) or one it builds and tears down itself (serving)."""
    settings = settings or Settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        with ExitStack() as stack:
            app.state.service = service or stack.enter_context(running_service(settings, progress=True))
            yield

    app = FastAPI(
        title="Triage agent",
        version=__version__,
        summary="Labels support tickets by service type, channel and support tier, with evidence and a draft answer.",
        lifespan=lifespan,
    )

    @app.exception_handler(TicketError)
    async def ticket_error(request: Request, exc: TicketError) -> JSONResponse:
        return JSONResponse(status_code=422, content={"error": "invalid_ticket", "detail": str(exc)})

    @app.get("/healthz", response_model=Health, tags=["ops"])
    def healthz(request: Request) -> Health:
        svc: TriageService = request.app.state.service
        return Health(
            status="ok",
            version=__version__,
            taxonomy=svc.taxonomy.ref,
            model=svc.model_name(None),
            store=svc.store.counts(),
        )

    @app.post("/v1/classify", response_model=Classification, tags=["triage"])
    async def classify(ticket: TicketIn, request: Request) -> Classification:
        """Classify one ticket (stateless): labels per axis, decision, rationale, evidence and a draft."""
        svc: TriageService = request.app.state.service
        try:
            return await run_in_threadpool(svc.classify, ticket)
        except TicketError:
            raise
        except ValueError as exc:
            raise HTTPException(status_code=422, detail=str(exc)) from exc

    return app
