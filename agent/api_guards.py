"""What stands between a request and the use cases: the body-size limit, API-key auth, and the error mapping.

Every error leaves as JSON `{"error": code, "detail": what happened and what to do}`: 401/403 for keys,
404, 409, 413, 422 for the request, 503 (+ Retry-After) when a part is busy or down (the records database, the
Chroma server, the embedding endpoint). A bug is logged with
its traceback and answered with a JSON 500 that names a log reference, never the traceback itself.
"""

from __future__ import annotations

import json
import logging
import secrets
from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import Annotated, Any

import httpx
from fastapi import Depends, FastAPI, Query, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import AfterValidator
from sqlalchemy.exc import DataError, DBAPIError, IntegrityError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from agent.auth import AuthError, Principal, authenticate, require
from agent.auth import Scope as KeyScope
from agent.embeddings import EmbeddingError
from agent.pool import PoolFull
from agent.reader import Invalid, LifecycleError
from agent.records import as_utc
from agent.service import TicketError

log = logging.getLogger("agent.api")

bearer = HTTPBearer(auto_error=False, description="An API key: `triage keys create --scope bot --name NAME`.")
Credentials = Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)]


def utc_time(moment: datetime | None) -> datetime | None:
    """A query time as aware UTC (no zone = UTC). Converted here, while it is still a query field, because a time at
    the calendar's edge (year 1 east of UTC, year 9999 west of it) has no UTC value: a 422 naming it, not a 500."""
    if moment is None:
        return None
    try:
        return as_utc(moment)
    except OverflowError:
        raise ValueError(f"{moment.isoformat()} is outside the years 1 to 9999 in UTC; send a time inside them") from None


def check_range(start: datetime | None, end: datetime | None, names: tuple[str, str]) -> None:
    """Refuse a time window that ends before it starts: nothing can match it, so the bounds were surely swapped."""
    if start is not None and end is not None and start > end:
        raise Invalid(
            f"{names[0]} ({start.isoformat()}) is after {names[1]} ({end.isoformat()}), so no ticket can match; "
            "swap them, or leave one out"
        )


UtcTime = AfterValidator(utc_time)
# the creation-time filter of the review queue and of its counts
CreatedAfter = Annotated[
    datetime | None, Query(description="Only tickets created at or after this time (ISO 8601; no zone = UTC)."), UtcTime
]
CreatedBefore = Annotated[datetime | None, Query(description="Only tickets created before this time (ISO 8601; no zone = UTC)."), UtcTime]


def error(status: int, code: str, detail: str, **extra: Any) -> JSONResponse:
    headers = extra.pop("headers", None)
    return JSONResponse(status_code=status, content={"error": code, "detail": detail, **extra}, headers=headers)


# ---------------------------------------------------------------- auth


def needs(scope: KeyScope) -> Callable[..., Awaitable[Principal]]:
    """A dependency that admits keys with `scope` or higher and returns who is calling."""

    async def principal(request: Request, credentials: Credentials) -> Principal:
        if credentials is None and request.headers.get("authorization"):
            # `Authorization: <key>` or `Token <key>`: HTTPBearer reads only the Bearer scheme, and "no API key" sent
            # an integrator who did send one looking for a missing header
            raise AuthError(
                "the Authorization header is not read: send the key as `Authorization: Bearer <key>` (the word Bearer, "
                "a space, then the key)",
                status=401,
            )
        who = await run_in_threadpool(authenticate, request.app.state.records, credentials.credentials if credentials else None)
        require(who, scope)
        return who

    principal.__name__ = f"needs_{scope}"
    return principal


# ---------------------------------------------------------------- body size


class BodyLimit:
    """413 (JSON) for a body over `max_bytes`: by Content-Length before reading, else while it streams in."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    def _response(self) -> JSONResponse:
        return error(
            413,
            "payload_too_large",
            f"the request body is over {self.max_bytes} bytes; send less text (ticket text over the input limit is "
            "refused anyway) or raise TRIAGE_MAX_BODY_BYTES",
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        length = dict(scope["headers"]).get(b"content-length")
        if length is not None and length.isdigit() and int(length) > self.max_bytes:
            await self._response()(scope, receive, send)
            return
        seen = 0
        refused = False
        started = False

        async def limited_receive() -> Message:
            nonlocal seen, refused
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.max_bytes and not started:
                    refused = True
                    await self._response()(scope, receive, send)
                    return {"type": "http.disconnect"}  # the app stops reading; what it answers is dropped below
            return message

        async def guarded_send(message: Message) -> None:
            nonlocal started
            if refused:
                return
            started = started or message["type"] == "http.response.start"
            await send(message)

        await self.app(scope, limited_receive, guarded_send)


# ---------------------------------------------------------------- NUL in the URL


class NoNulInUrl:
    """422 (JSON) for a path or query holding a NUL character (%00): no id, version or filter holds one (free text
    loses its NULs on the way in), and PostgreSQL refuses it in a query, which would read as the database down."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and ("\x00" in scope["path"] or b"%00" in scope["query_string"]):
            response = error(
                422, "invalid_request",
                "the URL holds a NUL character (%00), which no ticket id, taxonomy version or filter value contains; "
                "remove it and resend",
            )
            await response(scope, receive, send)
            return
        await self.app(scope, receive, send)


# ---------------------------------------------------------------- error mapping


def _validation_detail(exc: RequestValidationError, request: Request) -> tuple[str, list[dict[str, Any]]]:
    raw = exc.errors()
    errors = [{"loc": list(e.get("loc", ())), "msg": e.get("msg", ""), "type": e.get("type", "")} for e in raw]
    if [(e["loc"], e["type"]) for e in errors] == [(["body"], "missing")]:  # read as the field `body` otherwise
        detail = "the request has no body; send the JSON object this endpoint takes, with `content-type: application/json`"
        return detail + " (see /docs for the schema)", errors
    parts = [_field_error(e) for e in raw[:5]]
    detail = "fix these fields and resend (see /docs for the schema): " + "; ".join(parts)
    return _content_type_hint(request, errors) + detail, errors


def _field_error(error: Any) -> str:
    """One error as `where: what`; broken JSON says where and why, not `body.8: JSON decode error`."""
    loc = list(error.get("loc", ()))
    if error.get("type") == "json_invalid" and len(loc) == 2:
        return f"the body is not valid JSON: {error.get('ctx', {}).get('error', 'decode error')} at character {loc[1]}"
    return f"{'.'.join(str(p) for p in loc)}: {error.get('msg', '')}"


def _content_type_hint(request: Request, errors: list[dict[str, Any]]) -> str:
    """A form or text/plain body (curl -d's default), or one sent with no content-type at all, is never parsed as
    JSON, so it fails as "Input should be a valid dictionary": name the actual mistake, the content-type, first."""
    content_type = request.headers.get("content-type", "")
    media = content_type.split(";")[0].strip().lower()
    if media == "application/json" or media.endswith("+json"):
        return ""
    if not any(e["loc"] == ["body"] and e["type"] != "missing" for e in errors):
        return ""
    sent = f"sent {media!r}" if media else "sent no content-type"
    return f"the body must be JSON sent with `content-type: application/json` (this request {sent}); "


def _not_utf8(exc: UnicodeDecodeError) -> str:
    return (
        f"the request body is not UTF-8 (byte 0x{exc.object[exc.start]:02x} at offset {exc.start}); "
        "send JSON encoded as UTF-8 with `content-type: application/json`"
    )


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(RequestValidationError)
    async def invalid_request(request: Request, exc: RequestValidationError) -> JSONResponse:
        detail, errors = _validation_detail(exc, request)
        return error(422, "invalid_request", detail, errors=json.loads(json.dumps(errors, default=str)))

    @app.exception_handler(TicketError)
    async def ticket_error(request: Request, exc: TicketError) -> JSONResponse:
        return error(422, "invalid_ticket", str(exc))

    @app.exception_handler(AuthError)
    async def auth_error(request: Request, exc: AuthError) -> JSONResponse:
        if exc.status == 401:
            return error(401, "unauthorized", str(exc), headers={"WWW-Authenticate": "Bearer"})
        return error(403, "forbidden", str(exc))

    @app.exception_handler(LifecycleError)
    async def lifecycle_error(request: Request, exc: LifecycleError) -> JSONResponse:
        headers = {"Retry-After": "5"} if exc.status == 503 else None
        return error(exc.status, exc.code, str(exc), headers=headers)

    @app.exception_handler(PoolFull)
    async def busy(request: Request, exc: PoolFull) -> JSONResponse:
        return error(
            503, "busy", f"every classifier worker is busy and the queue is full; retry in {exc.retry_after_s} s (the Retry-After header)",
            headers={"Retry-After": str(exc.retry_after_s)},
        )

    @app.exception_handler(IntegrityError)
    async def conflict(request: Request, exc: IntegrityError) -> JSONResponse:
        log.warning("integrity error on %s %s: %s", request.method, request.url.path, exc.orig)
        return error(409, "conflict", "a concurrent write changed the same record; reload and retry")

    @app.exception_handler(DataError)
    async def data_refused(request: Request, exc: DataError) -> JSONResponse:
        """The database refused a value (too long, out of range): the same request fails again, so this is the
        request's 422, not the 503 'retry' of a database that is down. The known cases are refused before this."""
        reason = str(exc.orig).strip().splitlines()[0] if str(exc.orig).strip() else type(exc.orig).__name__
        log.warning("records database refused a value on %s %s: %s", request.method, request.url.path, reason)
        return error(
            422, "invalid_request",
            f"the records database refused a value of this request ({reason}); shorten or correct it and resend",
        )

    @app.exception_handler(DBAPIError)
    async def database_down(request: Request, exc: DBAPIError) -> JSONResponse:
        log.error("records database error on %s %s: %s", request.method, request.url.path, exc.orig)
        return error(
            503, "database_unavailable", "the records database is busy or unreachable; retry in a few seconds",
            headers={"Retry-After": "5"},
        )

    @app.exception_handler(EmbeddingError)
    async def embedding_down(request: Request, exc: EmbeddingError) -> JSONResponse:
        """The embedding endpoint went down or refused while serving: no ticket can be retrieved without its vector,
        so this is the 503 of a part that is down (nothing was stored), not a 500 'report it'."""
        log.error("embedding endpoint error on %s %s: %s", request.method, request.url.path, exc)
        return error(
            503, "embedding_unavailable", f"{exc}; nothing was saved: retry in a few seconds (GET /healthz shows the parts)",
            headers={"Retry-After": "5"},
        )

    @app.exception_handler(httpx.TransportError)
    async def store_down(request: Request, exc: httpx.TransportError) -> JSONResponse:
        """chromadb's HTTP client (the only httpx client a request uses: the LLM's is httpx2 and falls back) could not
        reach the Chroma server (down, restarting, timed out): the 503 of a part that is down, naming it."""
        settings = request.app.state.settings
        where = settings.vector_store_location if settings.chroma_url else "the vector store"
        cause = str(exc) or type(exc).__name__
        log.error("vector store error on %s %s: %s: %s", request.method, request.url.path, where, cause)
        return error(
            503, "store_unavailable",
            f"{where} did not answer ({cause}); nothing was saved: retry in a few seconds, and if it repeats check that "
            "server (GET /healthz shows the parts)",
            headers={"Retry-After": "5"},
        )

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        if exc.status_code == 400 and isinstance(exc.__cause__, UnicodeDecodeError):  # FastAPI's "error parsing the body"
            return error(422, "invalid_request", _not_utf8(exc.__cause__))
        if exc.status_code == 400 and isinstance(exc.__cause__, RecursionError):  # JSON nested past Python's stack
            return error(
                422, "invalid_request",
                "the JSON body is nested too deeply to read; send the flat JSON object this endpoint takes (see /docs for the schema)",
            )
        if exc.status_code == 400 and isinstance(exc.__cause__, ValueError):  # a number past Python's 4,300 digits
            return error(
                422, "invalid_request",
                f"the JSON body cannot be read ({_first_sentence(exc.__cause__)}); send the JSON object this endpoint "
                "takes (see /docs for the schema)",
            )
        hints = {
            404: f"no such path {request.url.path}; the endpoints are listed at /docs",
            405: f"{request.method} is not allowed on {request.url.path}; the methods are listed at /docs",
            413: "the request body is too large; send less text or raise TRIAGE_MAX_BODY_BYTES",
        }
        detail = exc.detail if isinstance(exc.detail, str) and exc.status_code not in hints else hints.get(exc.status_code, str(exc.detail))
        return error(exc.status_code, _code(exc.status_code), detail, headers=getattr(exc, "headers", None))

    @app.exception_handler(Exception)
    async def last_resort(request: Request, exc: Exception) -> JSONResponse:
        ref = secrets.token_hex(4)
        log.exception("unexpected error [%s] on %s %s", ref, request.method, request.url.path)
        return error(500, "internal_error", f"an unexpected error, logged as [{ref}]; retry, and report it if it repeats")


def _first_sentence(exc: BaseException) -> str:
    return (str(exc).split(";")[0].strip() or type(exc).__name__)[:200]


def _code(status: int) -> str:
    return {400: "bad_request", 404: "not_found", 405: "method_not_allowed", 413: "payload_too_large"}.get(status, "error")
