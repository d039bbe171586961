"""A small typed client of the triage API for the UI, with errors a support lead can act on.

Every failure is an `ApiError` whose `str()` is one sentence for the lead and whose `hint` says what to do;
pages show both and never a traceback. The subclasses tell apart: the API is down (`ApiUnreachable`), the key
is missing, unknown, revoked or lacks a scope (`ApiAuthError`), a ticket is not there (`ApiNotFound`), and a
request the API refused as invalid (`ApiRejected`).
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any, Literal

import httpx
from pydantic import BaseModel, ConfigDict, Field

from agent.contracts import Classification

ReviewAction = Literal["accept", "edit", "reject"]
MAX_BUSY_WAIT_S = 30.0  # a longer Retry-After is waited for this long, then tried again anyway
KEY_HINT = "Set TRIAGE_API_KEY (or paste a key in the sidebar); create one with `triage keys create --scope lead --name NAME`."


class ApiError(Exception):
    """A call to the API that did not give an answer; `str(err)` says what happened, `hint` what to do."""

    def __init__(self, message: str, *, status: int | None = None, hint: str | None = None, retry_after_s: float | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.hint = hint
        self.retry_after_s = retry_after_s  # a 503's Retry-After: the API was busy, not wrong


class ApiUnreachable(ApiError):
    """No answer at all: the API is not running, the URL is wrong, or it timed out."""


class ApiAuthError(ApiError):
    """401 (no, unknown, revoked or expired key) or 403 (the key lacks the scope)."""


class ApiNotFound(ApiError):
    """404: the ticket (or endpoint) does not exist."""


class ApiRejected(ApiError):
    """4xx other than auth and not-found: the API refused the request as it was; the message says why."""


# ---------------------------------------------------------------- response shapes


class _Open(BaseModel):
    """Response models keep fields the UI does not know yet, so a newer API does not break the UI."""

    model_config = ConfigDict(extra="allow")


class Page(_Open):
    """One page of a listing: `items`, the cursor of the next page (None at the end), and counts if given."""

    items: list[dict[str, Any]] = Field(default_factory=list)
    next_cursor: str | None = None
    counts: dict[str, int] = Field(default_factory=dict)


class Health(_Open):
    status: str
    version: str = ""
    taxonomy: str = ""
    model: str = ""
    problems: list[str] = Field(default_factory=list)
    llm: dict[str, Any] | None = None


def _detail(response: httpx.Response) -> str:
    """The API's own words for an error: `{"detail": ...}` (FastAPI) or `{"error", "detail"}` (ours)."""
    try:
        body = response.json()
    except ValueError:
        return response.text.strip()[:300] or response.reason_phrase
    if isinstance(body, dict):
        detail = body.get("detail", body.get("message", body.get("error")))
        if isinstance(detail, list):  # FastAPI validation errors
            return "; ".join(f"{'.'.join(str(p) for p in e.get('loc', []))}: {e.get('msg')}" for e in detail if isinstance(e, dict))
        if detail is not None:
            return str(detail)
    return str(body)[:300]


def key_problem(key: str | None) -> str | None:
    """Why `key` cannot go in an HTTP header, or None: a character outside printable ASCII (a curly quote or an
    ellipsis picked up while copying) made httpx raise, a traceback on every page, instead of a message."""
    for position, char in enumerate(key or "", start=1):
        if not (char.isascii() and char.isprintable()):
            return (
                f"The API key has a character no key has (U+{ord(char):04X} at position {position}); "
                "paste it again exactly as `triage keys create` printed it."
            )
    return None


def transport_cause(exc: httpx.TransportError) -> str:
    """Why no answer came, in a lead's words: the raw `(ConnectError: [Errno 111] Connection refused)` named the
    cause in a programmer's. Causes not told apart here keep the library's text, shortened."""
    text = str(exc).lower()
    if isinstance(exc, httpx.ConnectError):
        if "refused" in text:
            return "nothing answers there (connection refused); the API is not running, or it runs on another port"
        if any(s in text for s in ("name or service not known", "name resolution", "nodename nor servname", "getaddrinfo")):
            return "the host name in the URL is not known (check it for a typo)"
        if "unreachable" in text or "no route" in text:
            return "the network cannot reach that host"
    if isinstance(exc, httpx.RemoteProtocolError):
        return "the connection closed before an answer came (the API may have stopped or restarted)"
    return f"the connection failed ({' '.join(str(exc).split())[:200] or type(exc).__name__})"


class TriageClient:
    """Synchronous client; one per Streamlit session (httpx keeps the connection alive between reruns)."""

    def __init__(
        self,
        base_url: str,
        api_key: str | None,
        *,
        timeout: float = 15.0,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.api_key = (api_key or "").strip() or None  # a key pasted with the spaces around it
        self._key_problem = key_problem(self.api_key)
        headers = {"Authorization": f"Bearer {self.api_key}"} if self.api_key and not self._key_problem else {}
        self._http = httpx.Client(base_url=self.base_url, headers=headers, timeout=timeout, transport=transport)

    def close(self) -> None:
        self._http.close()

    # ------------------------------------------------------------ transport

    def _request(
        self,
        method: str,
        path: str,
        *,
        params: Mapping[str, Any] | None = None,
        json: Any = None,
        timeout: float | None = None,
    ) -> Any:
        if self._key_problem:
            raise ApiAuthError(self._key_problem, hint=KEY_HINT)
        clean = {k: v for k, v in (params or {}).items() if v not in (None, "", [], ())}
        try:
            response = self._http.request(
                method, path, params=clean, json=json, timeout=timeout if timeout is not None else httpx.USE_CLIENT_DEFAULT
            )
        except httpx.TimeoutException as exc:
            raise ApiUnreachable(
                f"The triage API at {self.base_url} did not answer {method} {path} in time.",
                hint="It may be busy classifying; try again, or raise TRIAGE_API_TIMEOUT_S.",
            ) from exc
        except httpx.TransportError as exc:
            raise ApiUnreachable(
                f"Cannot reach the triage API at {self.base_url}: {transport_cause(exc)}.",
                hint="Start it with `triage serve` (or `make run`), or point TRIAGE_API_URL at it.",
            ) from exc
        if response.status_code >= 400:
            self._raise(response, method, path)
        if response.status_code == 204 or not response.content:
            return None
        try:
            return response.json()
        except ValueError as exc:
            raise ApiError(
                f"The triage API answered {method} {path} with something that is not JSON.",
                status=response.status_code,
                hint=f"Is TRIAGE_API_URL ({self.base_url}) the triage API and not another server?",
            ) from exc

    def _raise(self, response: httpx.Response, method: str, path: str) -> None:
        status, detail = response.status_code, _detail(response)
        if status == 401:
            what = "no API key was sent" if not self.api_key else "the API key is invalid, revoked or expired"
            raise ApiAuthError(f"The triage API refused the request: {what} ({detail}).", status=status, hint=KEY_HINT)
        if status == 403:
            raise ApiAuthError(
                f"The API key may not do this: {detail}",
                status=status,
                hint="The review UI needs a key with scope `lead` or `admin`: `triage keys create --scope lead --name NAME`.",
            )
        if status == 404:
            raise ApiNotFound(f"Not found: {method} {path} ({detail}).", status=status, hint="Check the ticket id, or go back to the queue.")
        if status < 500:
            raise ApiRejected(f"The triage API refused {method} {path} ({status}): {detail}", status=status)
        retry = response.headers.get("Retry-After", "")
        raise ApiError(
            f"The triage API failed on {method} {path} ({status}): {detail}",
            status=status,
            hint="See the API's log; the request itself may be fine to retry.",
            retry_after_s=float(retry) if status == 503 and retry.isdigit() else None,
        )

    # ------------------------------------------------------------ endpoints

    def health(self) -> Health:
        return Health.model_validate(self._request("GET", "/healthz"))

    def classify(self, ticket: Mapping[str, Any], *, timeout: float | None = 120.0, busy_retries: int = 0) -> Classification:
        """Stateless classification (`POST /v1/classify`): nothing is stored, so a 503 of a busy worker pool is
        tried again after its Retry-After, up to `busy_retries` times (a batch would otherwise fail the rows that
        met a busy moment, with no way to send only those again)."""
        for attempt in range(busy_retries + 1):
            try:
                return Classification.model_validate(self._request("POST", "/v1/classify", json=dict(ticket), timeout=timeout))
            except ApiError as err:
                if err.retry_after_s is None or attempt == busy_retries:
                    raise
                time.sleep(min(err.retry_after_s, MAX_BUSY_WAIT_S))
        raise AssertionError("unreachable")

    def review_queue(
        self,
        *,
        decision: str | None = None,
        limit: int = 50,
        cursor: str | None = None,
        **filters: Any,
    ) -> Page:
        """Tickets waiting for a lead: needs_review first, then suggest, lowest confidence first."""
        return Page.model_validate(
            self._request("GET", "/v1/review-queue", params={"decision": decision, "limit": limit, "cursor": cursor, **filters})
        )

    def tickets(self, *, limit: int = 50, cursor: str | None = None, **filters: Any) -> Page:
        return Page.model_validate(self._request("GET", "/v1/tickets", params={"limit": limit, "cursor": cursor, **filters}))

    def ticket(self, ticket_id: str) -> dict[str, Any]:
        return self._request("GET", f"/v1/tickets/{ticket_id}")

    def revisions(self, ticket_id: str) -> list[dict[str, Any]]:
        body = self._request("GET", f"/v1/tickets/{ticket_id}/revisions")
        return body.get("items", body.get("revisions", [])) if isinstance(body, dict) else body

    def create_ticket(self, ticket: Mapping[str, Any], *, timeout: float | None = 120.0) -> dict[str, Any]:
        return self._request("POST", "/v1/tickets", json=dict(ticket), timeout=timeout)

    def escalate(self, ticket_id: str, *, tier: str | None = None, note: str | None = None, timeout: float | None = 120.0) -> dict[str, Any]:
        """Raise the tier (to `tier`, else one step) and re-run the agent on the thread (reason `escalation`)."""
        body = {k: v for k, v in (("tier", tier), ("note", note)) if v}
        return self._request("POST", f"/v1/tickets/{ticket_id}/escalations", json=body, timeout=timeout)

    def add_message(self, ticket_id: str, text: str, *, author: str = "customer", timeout: float | None = 120.0) -> dict[str, Any]:
        """Append a message to the thread; the agent re-classifies it (reason `new_message`), a lead's labels stay."""
        return self._request("POST", f"/v1/tickets/{ticket_id}/messages", json={"author": author, "text": text}, timeout=timeout)

    def reclassify(self, ticket_id: str, *, timeout: float | None = 120.0) -> dict[str, Any]:
        """Re-run the agent on the thread as it is (reason `reclassify`), e.g. after the store or model changed."""
        return self._request("POST", f"/v1/tickets/{ticket_id}/reclassifications", timeout=timeout)

    def review(
        self,
        ticket_id: str,
        action: ReviewAction,
        *,
        labels: Mapping[str, str] | None = None,
        comment: str | None = None,
        revision: int | None = None,
        draft: Mapping[str, Any] | None = None,
    ) -> dict[str, Any]:
        """Accept, edit (with `labels`) or reject (with a `comment`) the ticket's current labels.

        `draft` ({"text", "citations"}), with accept or edit: the answer as the lead sent it, stored with the review.

        `revision` is the seq the lead looked at: if the ticket moved on meanwhile the API refuses (409).
        """
        body: dict[str, Any] = {"action": action}
        if labels:
            body["labels"] = dict(labels)
        if comment:
            body["comment"] = comment
        if revision is not None:
            body["revision"] = revision
        if draft is not None:
            body["draft"] = dict(draft)
        return self._request("POST", f"/v1/tickets/{ticket_id}/reviews", json=body)

    def taxonomy(self) -> dict[str, Any]:
        """The taxonomy in force (the `Taxonomy` contract)."""
        return self._request("GET", "/v1/taxonomy")

    def taxonomy_versions(self) -> list[dict[str, Any]]:
        """Every taxonomy version the deployment has served: ref, name, version, sha256, created_at."""
        return self._request("GET", "/v1/taxonomy/versions")

    def taxonomy_version(self, ref: str) -> dict[str, Any]:
        """One served version's full content (see ui/NEEDS.md: not every API has this endpoint yet)."""
        return self._request("GET", f"/v1/taxonomy/versions/{ref}")

    def start_migration_job(self, *, commit: bool = False, reviewed_sample: int = 200) -> dict[str, Any]:
        """Move the stored history to the taxonomy in force, in the background (`MigrationJob`, state `running`); a
        dry run unless `commit`. Needs an admin key. Follow it with `migration_job`; once `done` it holds the
        `MigrationReport`."""
        return self._request("POST", "/v1/taxonomy/migration/jobs", json={"commit": commit, "reviewed_sample": reviewed_sample})

    def migration_jobs(self) -> list[dict[str, Any]]:
        """The 20 most recent migration jobs, newest first (admin key)."""
        return self._request("GET", "/v1/taxonomy/migration/jobs")

    def migration_job(self, job_id: str) -> dict[str, Any]:
        """One migration job: `running` with `done` / `total`, `done` with its `report`, or `failed` with `error`."""
        return self._request("GET", f"/v1/taxonomy/migration/jobs/{job_id}")

    def stats(self, **params: Any) -> dict[str, Any]:
        """The KPIs (`GET /v1/stats`): volumes, decision shares, overturn rates, time to decision, KB use and gaps."""
        return self._request("GET", "/v1/stats", params=params, timeout=60.0)

    def queue_counts(self, **filters: Any) -> dict[str, int]:
        """Tickets per state (`GET /v1/stats/queue`): needs_review, suggest, auto_apply, reviewed, total."""
        return self._request("GET", "/v1/stats/queue", params=filters)
