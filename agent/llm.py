"""The one place that talks to an LLM: any OpenAI-compatible endpoint through the `openai` client.

Transport failures (connection, timeout, rate limit, 5xx) are retried with tenacity, bounded; auth and
bad-request errors are not retried. Whatever still fails becomes `LLMUnavailable`, which the graph turns
into a fallback label and `needs_review`, never a crash. A circuit breaker stops paying timeout x attempts
on every ticket while the endpoint is down or slow: after a few consecutive failures the LLM is skipped for a
cool-down, then one probe request decides whether it is back.
"""

from __future__ import annotations

import json
import logging
import math
import re
import threading
import time
import traceback
from collections.abc import Callable, Iterator
from email.utils import parsedate_to_datetime
from typing import TYPE_CHECKING, Any, Literal

import httpx2
import openai
from openai import OpenAI
from openai.types.chat import ChatCompletion
from pydantic import BaseModel
from tenacity import (
    RetryCallState,
    RetryError,
    Retrying,
    retry_if_exception_type,
    stop_after_attempt,
    wait_exponential_jitter,
)

from agent.contracts import Usage
from agent.urls import shown_url, without_key

if TYPE_CHECKING:
    from agent.settings import Settings

log = logging.getLogger(__name__)

StructuredMode = Literal["json_schema", "json_object", "none"]
MAX_RETRY_AFTER_S = 30.0  # the longest a rate-limited request waits before its next attempt (and never past its timeout)
_TRANSIENT = (
    openai.APIConnectionError,  # includes APITimeoutError
    openai.RateLimitError,
    openai.InternalServerError,
)
# answers that no retry or other ticket changes: the key or the model name is wrong. The endpoint is up, so the breaker
# stays closed; /healthz names the refusal instead (LLMClient.refused) and every ticket's warning says what to fix
_CONFIGURATION_REFUSALS = {
    401: "the endpoint does not accept the key: set TRIAGE_LLM_API_KEY to a key it accepts",
    403: "the endpoint does not let this key use it: set TRIAGE_LLM_API_KEY to a key allowed to, or check TRIAGE_LLM_MODEL",
    404: "the endpoint has no model {model!r} or no such path: check TRIAGE_LLM_MODEL and that TRIAGE_LLM_BASE_URL ends "
    "where /chat/completions is served (usually /v1)",
}
# how servers word "prompt + max_tokens do not fit": OpenAI, vLLM and llama-cpp-python ("maximum context
# length is 4096 tokens. However, you requested 6941 tokens"), llama.cpp's own server ("exceeds the available
# context size"), and OpenAI's error code
_CONTEXT_OVERFLOW = re.compile(r"context length|context size|context window|context_length_exceeded", re.IGNORECASE)
_CONTEXT_LIMIT = re.compile(r"(?:context length|context size|context window) (?:is|of) (\d+)", re.IGNORECASE)
_REQUESTED = re.compile(r"(?:requested|request has|resulted in) (\d+) (?:input )?tokens", re.IGNORECASE)


# how servers word "this response_format is not one I take": llama-cpp-python's server answers a json_schema
# response_format with a 500 carrying pydantic's "Input should be 'text' or 'json_object'" (loc response_format);
# others say 400 "response_format ... not supported"
_SCHEMA_MODE_REFUSED = re.compile(r"response_format|json_schema", re.IGNORECASE)


class SchemaModeRefused(RuntimeError):
    """The endpoint refused the `json_schema` response_format itself: up and answering, so no breaker failure."""


class LLMUnavailable(RuntimeError):
    """The LLM could not answer (down, slow, rate-limited beyond retries, or refused the request)."""


class LLMContextOverflow(LLMUnavailable):
    """The server refused the request as longer than its context: the ticket is too long, the server is fine."""

    def __init__(self, message: str, *, requested: int | None = None, limit: int | None = None) -> None:
        super().__init__(message)
        self.requested = requested
        self.limit = limit


class LLMSkipped(LLMUnavailable):
    """The circuit breaker is open: the LLM was not asked at all."""


class NotACompletion(RuntimeError):
    """The endpoint answered 200 with something other than a chat completion (a proxy's HTML error page, say)."""


class LLMReply(BaseModel):
    text: str
    usage: Usage
    model: str


class CircuitBreaker:
    """Counts consecutive transport failures of one endpoint; after `failures` of them, calls are skipped for a
    cool-down that doubles (up to `max_cooldown_s`) each time the probe after it fails. Thread-safe: the API
    classifies on several workers through one client."""

    def __init__(
        self,
        *,
        failures: int = 3,
        cooldown_s: float = 30.0,
        max_cooldown_s: float = 300.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.threshold = failures
        self.cooldown_s = cooldown_s
        self.max_cooldown_s = max(max_cooldown_s, cooldown_s)
        self._clock = clock
        self._lock = threading.Lock()
        self._failures = 0
        self._trips = 0  # consecutive openings without a success in between: the cool-down's exponent
        self._last_error: str | None = None
        self._open_until: float | None = None
        self._probing = False

    @classmethod
    def from_settings(cls, settings: Settings) -> CircuitBreaker:
        return cls(
            failures=settings.llm_breaker_failures,
            cooldown_s=settings.llm_breaker_cooldown_s,
            max_cooldown_s=settings.llm_breaker_max_cooldown_s,
        )

    def admit(self) -> bool:
        """Let a request through (True when it is the probe), or raise `LLMSkipped` while open. After the
        cool-down one request, the probe, goes through; the others are still skipped until it has answered."""
        with self._lock:
            if self._open_until is None:
                return False
            now = self._clock()
            if now >= self._open_until and not self._probing:
                self._probing = True
                return True
            wait = self._open_until - now
            when = f"for {math.ceil(wait)}s" if wait > 0 else "while one request checks whether it is back"
            raise LLMSkipped(f"LLM skipped {when} after {self._failures} consecutive failures: {self._last_error}")

    def record(self, failure: str | None, *, probe: bool = False) -> None:
        """The outcome of an admitted request: None when the endpoint answered, else what went wrong. A request
        admitted before the circuit opened may end during the probe: only the probe's failure reopens it."""
        with self._lock:
            if probe:
                self._probing = False
            if failure is None:
                self._failures, self._trips, self._open_until = 0, 0, None
                return
            self._failures += 1
            self._last_error = failure
            if probe or (self._open_until is None and self._failures >= self.threshold):
                self._trips += 1
                self._open_until = self._clock() + self._cooldown()
                log.warning("LLM circuit open for %.0fs after %d consecutive failures: %s", self._cooldown(), self._failures, failure)

    def reset(self) -> None:
        """Closed, as after a success: the endpoint is known to be back (the embedded server we restarted answered
        its health check), so the tickets in the cool-down need not wait for the probe."""
        with self._lock:
            self._failures, self._trips, self._open_until, self._probing = 0, 0, None, False

    def _cooldown(self) -> float:
        return min(self.cooldown_s * 2 ** max(self._trips - 1, 0), self.max_cooldown_s)

    def health(self) -> dict[str, Any]:
        """state: closed (calls go through), open (skipped), half_open (cool-down over: the next call, or the one
        in flight, probes); retry_in_s: seconds until the next probe (None while closed)."""
        with self._lock:
            if self._open_until is None:
                state, retry_in = "closed", None
            else:
                retry_in = max(self._open_until - self._clock(), 0.0)
                state = "open" if retry_in > 0 and not self._probing else "half_open"
            return {
                "state": state,
                "consecutive_failures": self._failures,
                "last_error": self._last_error,
                "retry_in_s": None if retry_in is None else round(retry_in, 1),
            }


class LLMClient:
    def __init__(
        self,
        *,
        base_url: str,
        model: str,
        api_key: str = "not-needed",
        timeout_s: float = 60.0,
        max_attempts: int = 3,
        structured: StructuredMode = "json_schema",
        client: OpenAI | None = None,
        breaker: CircuitBreaker | None = None,
        server_health: Callable[[], dict[str, Any]] | None = None,
        schema_fallback: bool = False,
    ) -> None:
        self.base_url = base_url
        # `auto`: an endpoint that refuses json_schema (llama-cpp-python's server) is asked in json_object from then on
        self.schema_fallback = schema_fallback
        self.shown_url = shown_url(base_url)  # what health, warnings and logs name: credentials in it masked
        self.server_health = server_health  # the embedded server's process view; None for an endpoint we do not run
        self.model = model
        self._api_key = api_key  # masked in every message this client makes (urls.without_key says why)
        self.structured = structured
        self.max_attempts = max_attempts
        self.breaker = breaker or CircuitBreaker()
        self.refused: str | None = None  # the last answer was a 401/403/404: every request will fail the same way
        self.retry_wait = wait_exponential_jitter(multiplier=0.5, max=8.0)  # between attempts; tests set wait_none()
        self.max_retry_after_s = min(timeout_s, MAX_RETRY_AFTER_S)
        self.sleep: Callable[[float], None] = time.sleep  # tenacity's; tests record the waits instead
        self._client = client or OpenAI(
            base_url=base_url, api_key=api_key, timeout=timeout_s, max_retries=0, http_client=_deadline_http_client(timeout_s)
        )

    def health(self) -> dict[str, Any]:
        """Read-only view of the circuit breaker (and of the embedded server's process, when we run it), for /healthz."""
        health = {"base_url": self.shown_url, "model": self.model, **self.breaker.health(), "refused": self.refused}
        if self.server_health is not None:
            health["server"] = self.server_health()
        return health

    def chat(
        self,
        messages: list[dict[str, str]],
        *,
        schema: dict[str, Any] | None = None,
        max_tokens: int = 256,
        temperature: float = 0.0,
    ) -> LLMReply:
        try:
            return self._chat(messages, schema=schema, max_tokens=max_tokens, temperature=temperature)
        except LLMUnavailable as exc:
            exc.args = (self._masked(str(exc)),)
            raise

    def _masked(self, text: str) -> str:
        return without_key(text, self._api_key)

    def _chat(
        self,
        messages: list[dict[str, str]],
        *,
        schema: dict[str, Any] | None,
        max_tokens: int,
        temperature: float,
    ) -> LLMReply:
        kwargs: dict[str, Any] = {
            "model": self.model,
            "messages": messages,
            "max_tokens": max_tokens,
            "temperature": temperature,
        }
        if schema is not None and self.structured != "none":
            kwargs["response_format"] = self._response_format(schema)
        try:
            response = self._with_retries(kwargs)
        except SchemaModeRefused as exc:
            if not self.schema_fallback or schema is None:
                raise LLMUnavailable(
                    f"LLM at {self.shown_url} refused the json_schema response_format ({exc}); set TRIAGE_LLM_STRUCTURED=json_object "
                    "(llama.cpp's servers) or none"
                ) from exc
            log.warning("LLM at %s does not take the json_schema response_format; asking in json_object from now on", self.shown_url)
            self.structured = "json_object"
            return self._chat(messages, schema=schema, max_tokens=max_tokens, temperature=temperature)
        except RetryError as exc:
            cause = exc.last_attempt.exception()
            raise LLMUnavailable(f"LLM at {self.shown_url} {_what_failed(cause)} after {self.max_attempts} attempts: {cause}") from cause
        except openai.APIStatusError as exc:  # 4xx other than 429: retrying will not help
            refusal = self._refused(exc)
            if exc.status_code in _CONFIGURATION_REFUSALS:
                self.refused = str(refusal)
            raise refusal from exc
        except LLMUnavailable:
            raise
        except Exception as exc:  # whatever else the client raises must not escape the graph as a 500
            # the traceback as text, key masked: the exception's own message may quote the key (an endpoint's echo)
            log.warning("LLM client failed unexpectedly\n%s", self._masked("".join(traceback.format_exception(exc))).rstrip())
            raise LLMUnavailable(f"LLM at {self.shown_url} failed: {type(exc).__name__}: {exc}") from exc
        self.refused = None
        return self._reply(response)

    def _with_retries(self, kwargs: dict[str, Any]) -> ChatCompletion:
        for attempt in Retrying(
            stop=stop_after_attempt(self.max_attempts),
            wait=self._wait,
            sleep=self.sleep,
            retry=retry_if_exception_type((*_TRANSIENT, NotACompletion)),
            reraise=False,
        ):
            with attempt:
                response = self._request(kwargs)
        return response

    def _wait(self, retry_state: RetryCallState) -> float:
        """The back-off between attempts, or longer where a 429 or 503 says how long (Retry-After), up to
        `max_retry_after_s`: asking a rate-limited endpoint again sooner only spends another attempt."""
        base = float(self.retry_wait(retry_state))
        outcome = retry_state.outcome
        hinted = retry_after_s(outcome.exception() if outcome is not None else None)
        return base if hinted is None else max(base, min(hinted, self.max_retry_after_s))

    def _request(self, kwargs: dict[str, Any]) -> ChatCompletion:
        """One HTTP request through the breaker: transport failures count against the endpoint; any answer,
        even a 4xx, shows it is up."""
        probe = self.breaker.admit()
        failure: str | None = None
        try:
            return _completion(self._client.chat.completions.create(**kwargs))
        except openai.APIStatusError as exc:
            if self._schema_mode_refused(exc, kwargs):
                raise SchemaModeRefused(" ".join(str(exc.message).split())[:200]) from exc
            if isinstance(exc, _TRANSIENT):
                failure = str(exc) or type(exc).__name__
            raise
        except (*_TRANSIENT, NotACompletion) as exc:
            failure = str(exc) or type(exc).__name__
            raise
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:  # a cut or mis-encoded body sent as JSON: a proxy's fault
            failure = f"the endpoint answered a body that is not valid JSON ({exc})"
            raise NotACompletion(failure) from exc
        except Exception as exc:
            failure = f"{type(exc).__name__}: {exc}"
            raise
        finally:
            self.breaker.record(None if failure is None else self._masked(failure), probe=probe)

    def _schema_mode_refused(self, exc: openai.APIStatusError, kwargs: dict[str, Any]) -> bool:
        """A 400/422/500 that names the response_format of a json_schema request: the server lacks that mode (the
        endpoint is fine, so neither a retry nor a breaker failure), not a ticket it could not answer."""
        response_format = kwargs.get("response_format") or {}
        if response_format.get("type") != "json_schema" or exc.status_code not in (400, 422, 500):
            return False
        return bool(_SCHEMA_MODE_REFUSED.search(f"{exc.message} {exc.body}"))

    def _refused(self, exc: openai.APIStatusError) -> LLMUnavailable:
        message = self._masked(f"LLM at {self.shown_url} refused the request ({exc.status_code}): {exc.message}")
        if exc.status_code in _CONFIGURATION_REFUSALS:
            message += f"; {_CONFIGURATION_REFUSALS[exc.status_code].format(model=self.model)}"
        text = f"{exc.message} {exc.body}"
        if not _CONTEXT_OVERFLOW.search(text):
            return LLMUnavailable(message)
        return LLMContextOverflow(message, requested=_first_int(_REQUESTED, text, exc.body, "n_prompt_tokens"),
                                  limit=_first_int(_CONTEXT_LIMIT, text, exc.body, "n_ctx"))

    def _reply(self, response: ChatCompletion) -> LLMReply:
        """Text, usage and model of a completion; no choice or no content gives "" (an invalid answer, re-asked).
        NUL characters are dropped: the rationale quotes the answer and PostgreSQL's JSONB refuses them."""
        choices = response.choices
        message = getattr(choices[0], "message", None) if choices else None
        content = getattr(message, "content", None)
        usage = getattr(response, "usage", None)
        model = getattr(response, "model", None)
        return LLMReply(
            text=content.replace("\x00", "") if isinstance(content, str) else "",  # NUL: nothing to read, nothing a store takes
            usage=Usage(
                prompt_tokens=_token_count(getattr(usage, "prompt_tokens", 0)),
                completion_tokens=_token_count(getattr(usage, "completion_tokens", 0)),
            ),
            model=model if isinstance(model, str) and model else self.model,
        )

    def _response_format(self, schema: dict[str, Any]) -> dict[str, Any]:
        if self.structured == "json_schema":
            return {"type": "json_schema", "json_schema": {"name": "answer", "schema": schema, "strict": False}}
        return {"type": "json_object", "schema": schema}  # llama.cpp's grammar-constrained form


class _DeadlineStream(httpx2.SyncByteStream):
    """A response body that stops with a read timeout once its request's deadline has passed."""

    def __init__(self, stream: httpx2.SyncByteStream, request: httpx2.Request, deadline: float, timeout_s: float) -> None:
        self._stream, self._request, self._deadline, self._timeout_s = stream, request, deadline, timeout_s

    def __iter__(self) -> Iterator[bytes]:
        for chunk in self._stream:
            if time.monotonic() > self._deadline:
                raise httpx2.ReadTimeout(f"the answer took longer than {self._timeout_s:g}s", request=self._request)
            yield chunk

    def close(self) -> None:
        self._stream.close()


def _deadline_http_client(timeout_s: float) -> httpx2.Client:
    """The openai client's HTTP client, with `timeout_s` bounding the whole request: httpx's timeout bounds each
    read, so an endpoint that trickles its answer a few bytes at a time held a worker for as long as it liked."""

    def start(request: httpx2.Request) -> None:
        request.extensions["deadline"] = time.monotonic() + timeout_s

    def bound(response: httpx2.Response) -> None:
        deadline = response.request.extensions.get("deadline")
        if deadline is not None and isinstance(response.stream, httpx2.SyncByteStream):
            response.stream = _DeadlineStream(response.stream, response.request, deadline, timeout_s)

    return openai.DefaultHttpxClient(timeout=timeout_s, event_hooks={"request": [start], "response": [bound]})


def retry_after_s(exc: BaseException | None) -> float | None:
    """Seconds an error response asks us to wait (`retry-after-ms`, or `retry-after` in seconds or as an HTTP
    date), or None when it says nothing usable."""
    response = getattr(exc, "response", None) if isinstance(exc, openai.APIStatusError) else None
    headers = getattr(response, "headers", None)
    if headers is None:
        return None
    try:
        if (ms := headers.get("retry-after-ms")) is not None:
            return max(float(ms) / 1000.0, 0.0)
        if (value := headers.get("retry-after")) is None:
            return None
        try:
            return max(float(value), 0.0)
        except ValueError:
            return max(parsedate_to_datetime(value).timestamp() - time.time(), 0.0)
    except (ValueError, TypeError, OverflowError):
        return None


def _what_failed(cause: BaseException | None) -> str:
    """The failure in a lead's words: "unreachable" sent operators to the network for a rate limit or a 502 too."""
    if isinstance(cause, openai.APITimeoutError):
        return "timed out"
    if isinstance(cause, openai.APIConnectionError):
        return "unreachable"
    if isinstance(cause, openai.RateLimitError):
        return "still rate-limited (429)"
    if isinstance(cause, openai.InternalServerError):
        return f"answered server errors ({cause.status_code})"
    return "answered no usable completion"


def _completion(response: object) -> ChatCompletion:
    """`response` if it is a chat completion. The openai client hands back a non-JSON body as a str and builds
    a ChatCompletion from any JSON without validating it, so both are checked here."""
    if isinstance(response, ChatCompletion) and isinstance(getattr(response, "choices", None), list):
        return response
    # the JSON as the endpoint sent it: the object's repr buried it under a dozen "=None" fields
    if isinstance(response, ChatCompletion):
        kind, text = "JSON", response.to_json(indent=None, warnings=False)
    else:
        kind, text = type(response).__name__, str(response)
    shown = " ".join(text.split())[:200]
    raise NotACompletion(f"the endpoint answered {kind} {shown!r}, not a chat completion")


def _token_count(value: object) -> int:
    """A usage count as reported, or 0 where it is no count: the openai client does not validate the completion's
    JSON, and a proxy's "many" or 1.5 tokens must not turn a good answer into a crash."""
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else 0


def _first_int(pattern: re.Pattern[str], text: str, body: object, field: str) -> int | None:
    """A number from the error message, else from llama.cpp's structured error body."""
    match = pattern.search(text)
    if match:
        return int(match.group(1))
    value = body.get(field) if isinstance(body, dict) else None
    return value if isinstance(value, int) else None
