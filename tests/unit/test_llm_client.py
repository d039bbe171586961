"""LLMClient against a real OpenAI-shaped HTTP server on loopback: odd answers, refusals, and the circuit breaker."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import SimpleNamespace

import pytest
from tenacity import wait_none

from agent.contracts import Decision, TicketIn
from agent.llm import CircuitBreaker, LLMClient, LLMContextOverflow, LLMSkipped, LLMUnavailable
from agent.local_llm import free_port
from agent.service import TriageService
from agent.settings import Settings

ANSWER = json.dumps({"service": "billing_payments", "tier": "L2", "confidence": 0.9, "rationale": "like [t-bill-1]"})
OPENAI_OVERFLOW = {
    "error": {
        "message": "This model's maximum context length is 4096 tokens. However, you requested 6941 tokens "
        "(6685 in the messages, 256 in the completion). Please reduce the length of the messages or completion.",
        "type": "invalid_request_error",
        "code": "context_length_exceeded",
    }
}
LLAMA_CPP_OVERFLOW = {
    "error": {
        "code": 400,
        "message": "the request exceeds the available context size, try increasing it",
        "type": "exceed_context_size_error",
        "n_prompt_tokens": 5000,
        "n_ctx": 4096,
    }
}

LLAMA_CPP_PYTHON_NO_JSON_SCHEMA = {
    "message": "1 validation error:\n  {'type': 'literal_error', 'loc': ('body', 'response_format', 'type'), 'msg': "
    "\"Input should be 'text' or 'json_object'\", 'input': 'json_schema', 'ctx': {'expected': \"'text' or 'json_object'\"}}\n\n"
    "  File \"llama_cpp/server/app.py\", line 376, in create_chat_completion\n    POST /v1/chat/completions",
    "type": "internal_server_error", "param": None, "code": None,
}
SCHEMA = {"type": "object", "properties": {"service": {"type": "string"}}, "required": ["service"]}


def completion(content: str | None = ANSWER, *, choices: bool = True) -> dict:
    choice = {"index": 0, "message": {"role": "assistant", "content": content}, "finish_reason": "stop"}
    return {
        "id": "c-1", "object": "chat.completion", "created": 0, "model": "fake-llm",
        "choices": [choice] if choices else [],
        "usage": {"prompt_tokens": 12, "completion_tokens": 7, "total_tokens": 19},
    }


class FakeLLMServer(ThreadingHTTPServer):
    """Answers POST /v1/chat/completions according to `mode`; counts the requests it got."""

    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.mode = "ok"
        self.requests = 0
        self.formats: list[str | None] = []  # each request's response_format type
        self.release = threading.Event()  # ends a "slow" answer early at teardown

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}/v1"

    def handle_error(self, request, client_address) -> None:  # noqa: ANN001
        """A client that timed out closed the socket under a slow answer: expected here, not worth a traceback."""


class _Handler(BaseHTTPRequestHandler):
    server: FakeLLMServer

    def do_POST(self) -> None:
        request = json.loads(self.rfile.read(int(self.headers.get("content-length", 0))) or b"{}")
        self.server.requests += 1
        self.server.formats.append((request.get("response_format") or {}).get("type"))
        mode = self.server.mode
        if mode == "no_json_schema" and self.server.formats[-1] == "json_schema":  # llama-cpp-python's server, verbatim
            self._json(500, LLAMA_CPP_PYTHON_NO_JSON_SCHEMA)
            return
        if mode == "html":
            self._send(200, "text/html", b"<html>502 Bad Gateway</html>")
        elif mode == "cut_json":  # a proxy that cut the body short, still labelled JSON
            self._send(200, "application/json", json.dumps(completion()).encode()[:40])
        elif mode == "not_utf8":
            self._send(200, "application/json", json.dumps(completion("ANSWER")).encode().replace(b"ANSWER", b"\xff\xfe"))
        elif mode == "not_openai":
            self._json(200, {"status": "ok", "result": "nothing like a completion"})
        elif mode == "no_choices":
            self._json(200, completion(choices=False))
        elif mode == "null_content":
            self._json(200, completion(None))
        elif mode == "500":
            self._json(500, {"error": {"message": "upstream crashed", "type": "server_error"}})
        elif mode == "overflow":
            self._json(400, OPENAI_OVERFLOW)
        elif mode == "llama_overflow":
            self._json(400, LLAMA_CPP_OVERFLOW)
        elif mode == "401":  # what OpenAI and llama-cpp-python's --api_key answer a wrong key
            self._json(401, {"error": {"message": "Incorrect API key provided", "type": "invalid_request_error"}})
        elif mode in ("401_echo", "500_echo"):  # a proxy or endpoint that quotes the key it was sent
            key = self.headers.get("authorization", "").removeprefix("Bearer ")
            self._json(int(mode[:3]), {"error": {"message": f"Incorrect API key provided: {key}", "type": "invalid_request_error"}})
        elif mode == "404":
            self._json(404, {"error": {"message": "The model `gpt-5` does not exist", "code": "model_not_found"}})
        elif mode == "bad_request":
            self._json(400, {"error": {"message": "unknown parameter 'foo'", "type": "invalid_request_error"}})
        elif mode == "odd_usage":
            odd = completion()
            odd.update(model=["fake-llm"], usage={"prompt_tokens": "many", "completion_tokens": 1.5})
            self._json(200, odd)
        elif mode == "trickle":  # headers at once, then the body a few bytes every 0.3 s: each read is quick
            body = json.dumps(completion()).encode()
            self.send_response(200)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(body)))
            self.end_headers()
            for i in range(0, len(body), 16):
                self.wfile.write(body[i : i + 16])
                self.wfile.flush()
                if self.server.release.wait(0.3):
                    return
        elif mode.startswith("429"):  # "429 <header>: <value>" once, then answers
            header, _, value = mode.removeprefix("429 ").partition(": ")
            self.server.mode = "ok"
            body = json.dumps({"error": {"message": "Rate limit reached", "type": "requests"}}).encode()
            self.send_response(429)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(body)))
            if header:
                self.send_header(header, value)
            self.end_headers()
            self.wfile.write(body)
        elif mode == "nul":
            self._json(200, completion(ANSWER.replace("like", "like\u0000")))
        else:
            if mode == "slow":
                self.server.release.wait(2.0)
            self._json(200, completion())

    def _json(self, status: int, payload: dict) -> None:
        self._send(status, "application/json", json.dumps(payload).encode())

    def _send(self, status: int, content_type: str, body: bytes) -> None:
        self.send_response(status)
        self.send_header("content-type", content_type)
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002
        pass


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def server() -> Iterator[FakeLLMServer]:
    srv = FakeLLMServer()
    thread = threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    yield srv
    srv.release.set()
    srv.shutdown()
    srv.server_close()
    thread.join(timeout=5)


def client_for(base_url: str, *, breaker: CircuitBreaker | None = None, attempts: int = 1, timeout_s: float = 5.0) -> LLMClient:
    client = LLMClient(base_url=base_url, model="fake-llm", max_attempts=attempts, timeout_s=timeout_s, breaker=breaker)
    client.retry_wait = wait_none()
    return client


MESSAGES = [{"role": "user", "content": "label this"}]


def test_a_proper_completion_gives_its_text_usage_and_model(server: FakeLLMServer) -> None:
    reply = client_for(server.base_url).chat(MESSAGES)
    assert (reply.text, reply.model) == (ANSWER, "fake-llm")
    assert (reply.usage.prompt_tokens, reply.usage.completion_tokens) == (12, 7)


def test_a_200_html_page_is_llm_unavailable_not_a_crash(server: FakeLLMServer) -> None:
    server.mode = "html"
    with pytest.raises(LLMUnavailable, match=r"not a chat completion") as info:
        client_for(server.base_url, attempts=2).chat(MESSAGES)
    assert "502 Bad Gateway" in str(info.value)
    assert server.requests == 2  # a proxy's error page is transient like a 5xx: retried


@pytest.mark.parametrize("mode", ["cut_json", "not_utf8"])
def test_a_json_body_that_does_not_parse_is_not_a_completion_retried_without_a_traceback(
    server: FakeLLMServer, mode: str, caplog: pytest.LogCaptureFixture
) -> None:
    """A 200 labelled JSON whose body is cut short or not UTF-8 raised the parser's own error: it was not retried,
    logged a traceback as an unexpected client failure, and the warning read "failed: JSONDecodeError: ..."."""
    server.mode = mode
    with pytest.raises(LLMUnavailable, match=r"answered no usable completion after 2 attempts: the endpoint answered a body that is not valid JSON"):
        client_for(server.base_url, attempts=2).chat(MESSAGES)
    assert server.requests == 2
    assert not [r for r in caplog.records if r.exc_info]


def test_json_that_is_not_a_completion_is_llm_unavailable(server: FakeLLMServer) -> None:
    server.mode = "not_openai"
    with pytest.raises(LLMUnavailable, match=r"not a chat completion") as info:
        client_for(server.base_url).chat(MESSAGES)
    # the body as sent, not the repr of an empty ChatCompletion ("ChatCompletion(id=None, choices=None, ...")
    assert """answered JSON '{"status":"ok","result":"nothing like a completion"}'""" in str(info.value)


@pytest.mark.parametrize("mode", ["no_choices", "null_content"])
def test_a_completion_without_content_is_an_empty_answer_for_validate_to_reject(server: FakeLLMServer, mode: str) -> None:
    server.mode = mode
    client = client_for(server.base_url)
    assert client.chat(MESSAGES).text == ""
    assert client.health()["state"] == "closed"  # the endpoint answered: not a failure


def test_any_other_exception_from_the_client_is_llm_unavailable() -> None:
    def explode(**_: object) -> None:
        raise ValueError("client bug")

    client = LLMClient(base_url="http://x/v1", model="m", client=SimpleNamespace(chat=SimpleNamespace(completions=SimpleNamespace(create=explode))))  # type: ignore[arg-type]
    with pytest.raises(LLMUnavailable, match=r"ValueError: client bug"):
        client.chat(MESSAGES)


def test_an_unexpected_failure_quoting_the_key_is_logged_masked(caplog: pytest.LogCaptureFixture) -> None:
    """The one log line that kept a raw traceback: an exception whose message quotes the key printed it in full."""
    key = "sk-test-do-not-show-1234"

    def explode(**_: object) -> None:
        raise ValueError(f"bad header Authorization: Bearer {key}")

    client = LLMClient(base_url="http://x/v1", model="m", api_key=key,
                       client=SimpleNamespace(chat=SimpleNamespace(completions=SimpleNamespace(create=explode))))  # type: ignore[arg-type]
    with pytest.raises(LLMUnavailable) as info:
        client.chat(MESSAGES)
    assert key not in str(info.value) and key not in caplog.text
    assert "failed unexpectedly" in caplog.text and "Traceback" in caplog.text and "Bearer ***" in caplog.text


@pytest.mark.parametrize(("mode", "requested", "limit"), [("overflow", 6941, 4096), ("llama_overflow", 5000, 4096)])
def test_a_context_overflow_is_told_apart_and_does_not_count_against_the_endpoint(
    server: FakeLLMServer, mode: str, requested: int, limit: int
) -> None:
    server.mode = mode
    breaker = CircuitBreaker(failures=1, clock=FakeClock())
    client = client_for(server.base_url, breaker=breaker, attempts=3)
    with pytest.raises(LLMContextOverflow) as info:
        client.chat(MESSAGES)
    assert (info.value.requested, info.value.limit) == (requested, limit)
    assert server.requests == 1  # a 4xx is not retried
    assert breaker.health()["state"] == "closed"


def test_another_bad_request_is_a_plain_refusal(server: FakeLLMServer) -> None:
    server.mode = "bad_request"
    with pytest.raises(LLMUnavailable, match=r"refused the request \(400\)") as info:
        client_for(server.base_url).chat(MESSAGES)
    assert not isinstance(info.value, LLMContextOverflow)


@pytest.mark.parametrize(("mode", "fix"), [("401", "set TRIAGE_LLM_API_KEY"), ("404", "check TRIAGE_LLM_MODEL")])
def test_a_wrong_key_or_model_says_what_to_fix_and_shows_in_health_until_an_answer(
    server: FakeLLMServer, mode: str, fix: str
) -> None:
    """A wrong TRIAGE_LLM_API_KEY or TRIAGE_LLM_MODEL sent every ticket to the proposal with a bare 'Error code: 401'
    and /healthz said ok (the endpoint is up, so the breaker never opens): the refusal now names the setting to fix
    and health carries it (/healthz lists it under problems) until a request succeeds."""
    client = client_for(server.base_url)
    assert client.health()["refused"] is None
    server.mode = mode
    with pytest.raises(LLMUnavailable, match=rf"refused the request \({mode}\).*; .*{fix}"):
        client.chat(MESSAGES)
    health = client.health()
    assert health["state"] == "closed" and fix in health["refused"]
    server.mode = "ok"
    client.chat(MESSAGES)
    assert client.health()["refused"] is None


@pytest.mark.parametrize("mode", ["401_echo", "500_echo"])
def test_a_key_the_endpoint_echoes_is_masked_in_errors_health_and_logs(
    server: FakeLLMServer, mode: str, caplog: pytest.LogCaptureFixture
) -> None:
    """An endpoint that quotes the key in its error put TRIAGE_LLM_API_KEY into every ticket's warnings (returned
    to anonymous /v1/classify callers and stored), into /healthz's llm.refused and last_error, and into the log."""
    key = "sk-test-do-not-show-1234"
    server.mode = mode
    client = LLMClient(base_url=server.base_url, model="fake-llm", api_key=key, max_attempts=1,
                       breaker=CircuitBreaker(failures=1, clock=FakeClock()))
    with pytest.raises(LLMUnavailable) as info:
        client.chat(MESSAGES)
    with pytest.raises(LLMUnavailable) as again:  # 500: the open breaker skips it, quoting the last failure
        client.chat(MESSAGES)
    shown = [str(info.value), str(again.value), json.dumps(client.health()), caplog.text]
    assert "Incorrect API key provided: ***" in str(info.value)
    assert not [text for text in shown if key in text]


@pytest.mark.parametrize("mode", ["401_echo", "500_echo"])
def test_a_key_the_embedding_endpoint_echoes_is_masked_in_its_error(server: FakeLLMServer, mode: str) -> None:
    """The embedding client's error (the 503 every classify answers while it fails, and the log) quoted the
    endpoint's message whole, a key it echoed included (TRIAGE_EMBEDDING_API_KEY, by default the LLM's key)."""
    from agent.embeddings import EmbeddingError, OpenAIEmbedder

    key = "sk-test-do-not-show-1234"
    server.mode = mode
    embedder = OpenAIEmbedder(base_url=server.base_url, model="e5", api_key=key)
    embedder._client = embedder._client.with_options(max_retries=0)
    with pytest.raises(EmbeddingError) as info:
        embedder.embed(["a ticket"])
    assert "Incorrect API key provided: ***" in str(info.value) and key not in str(info.value)


def test_the_breaker_opens_after_consecutive_failures_and_skips_without_a_request() -> None:
    clock = FakeClock()
    client = client_for(f"http://127.0.0.1:{free_port()}/v1", breaker=CircuitBreaker(failures=2, cooldown_s=30, clock=clock))
    for _ in range(2):
        with pytest.raises(LLMUnavailable, match="unreachable after 1 attempts"):
            client.chat(MESSAGES)
    started = time.perf_counter()
    with pytest.raises(LLMSkipped, match=r"LLM skipped for 30s after 2 consecutive failures: Connection error"):
        client.chat(MESSAGES)
    assert time.perf_counter() - started < 0.05
    health = client.health()
    assert (health["state"], health["consecutive_failures"], health["retry_in_s"]) == ("open", 2, 30.0)
    assert "Connection error" in health["last_error"]
    clock.now += 12
    with pytest.raises(LLMSkipped, match=r"skipped for 18s"):
        client.chat(MESSAGES)


def test_the_probe_after_the_cooldown_closes_it_or_doubles_the_cooldown(server: FakeLLMServer) -> None:
    clock = FakeClock()
    breaker = CircuitBreaker(failures=2, cooldown_s=30, max_cooldown_s=100, clock=clock)
    client = client_for(server.base_url, breaker=breaker, attempts=2)
    server.mode = "500"
    with pytest.raises(LLMUnavailable, match=r"answered server errors \(500\) after 2 attempts"):
        client.chat(MESSAGES)  # one ticket's two failed attempts open it
    assert server.requests == 2 and breaker.health()["state"] == "open"
    clock.now += 30
    assert breaker.health()["state"] == "half_open"
    with pytest.raises(LLMSkipped, match=r"skipped for 60s after 3 consecutive failures"):
        client.chat(MESSAGES)  # the probe fails: its retry is skipped, the cool-down doubles
    assert server.requests == 3
    clock.now += 60
    with pytest.raises(LLMSkipped, match=r"skipped for 100s"):
        client.chat(MESSAGES)  # capped at max_cooldown_s
    server.mode = "ok"
    clock.now += 100
    assert client.chat(MESSAGES).text == ANSWER
    assert breaker.health() == {"state": "closed", "consecutive_failures": 0, "last_error": "Error code: 500 - upstream crashed", "retry_in_s": None}
    server.mode = "500"
    with pytest.raises(LLMUnavailable, match="answered server errors"):
        client.chat(MESSAGES)  # closed again: counting starts over, the cool-down too
    with pytest.raises(LLMSkipped, match=r"skipped for 30s"):
        client.chat(MESSAGES)


def test_only_one_probe_goes_through_after_the_cooldown() -> None:
    clock = FakeClock()
    breaker = CircuitBreaker(failures=1, cooldown_s=30, clock=clock)
    assert breaker.admit() is False
    breaker.record("timed out")
    clock.now += 30
    assert breaker.admit() is True  # the probe
    with pytest.raises(LLMSkipped, match="while one request checks whether it is back"):
        breaker.admit()
    breaker.record("timed out")  # a request admitted before the circuit opened ends during the probe
    assert breaker.health()["state"] == "half_open"
    with pytest.raises(LLMSkipped, match="while one request checks"):
        breaker.admit()
    breaker.record(None, probe=True)
    assert breaker.admit() is False and breaker.health()["state"] == "closed"


def test_a_slow_llm_costs_one_timeout_then_tickets_skip_it(server: FakeLLMServer) -> None:
    server.mode = "slow"
    clock = FakeClock()
    client = client_for(server.base_url, breaker=CircuitBreaker(failures=1, cooldown_s=30, clock=clock), attempts=3, timeout_s=0.3)
    started = time.perf_counter()
    with pytest.raises(LLMSkipped, match=r"after 1 consecutive failures: Request timed out"):
        client.chat(MESSAGES)
    assert time.perf_counter() - started < 0.8  # one 0.3 s timeout, not 3
    assert server.requests == 1
    started = time.perf_counter()
    with pytest.raises(LLMSkipped):
        client.chat(MESSAGES)
    assert time.perf_counter() - started < 0.05 and server.requests == 1
    server.mode = "ok"
    clock.now += 30
    assert client.chat(MESSAGES).text == ANSWER and client.health()["state"] == "closed"


def test_the_breaker_defaults_are_the_settings_defaults() -> None:
    from_settings, default = CircuitBreaker.from_settings(Settings()), CircuitBreaker()
    assert (from_settings.threshold, from_settings.cooldown_s, from_settings.max_cooldown_s) == (
        default.threshold, default.cooldown_s, default.max_cooldown_s,
    )


def test_an_html_answer_gives_the_proposal_labels_and_needs_review(server: FakeLLMServer, settings, embedder, store) -> None:  # noqa: ANN001
    """The QA reproduction (F1): a 200 text/html from the endpoint was a 500 and a lost ticket."""
    server.mode = "html"
    service = TriageService(settings, llm=client_for(server.base_url), embedder=embedder, store=store)
    result = service.classify(TicketIn(subject="Charged twice", body="My card was charged twice for order 1234, please refund one.", channel="email"))
    assert result.decision == Decision.NEEDS_REVIEW
    assert result.labels["service"].source == "proposal"
    assert any("LLM failed" in w and "not a chat completion" in w for w in result.warnings)


def test_nul_characters_in_an_answer_are_dropped(server: FakeLLMServer) -> None:
    """The rationale quotes the answer and PostgreSQL's JSONB refuses NUL: an answer holding one lost the ticket
    (503 from the records database); the rest of the answer is kept."""
    server.mode = "nul"
    reply = client_for(server.base_url).chat(MESSAGES)
    assert reply.text == ANSWER


def test_usage_and_model_of_the_wrong_type_do_not_lose_the_answer(server: FakeLLMServer) -> None:
    """The openai client builds a completion from any JSON without validating it: a usage of "many" tokens or a
    model that is a list raised pydantic's ValidationError past every handler (a 500 from /v1/classify)."""
    server.mode = "odd_usage"
    reply = client_for(server.base_url).chat(MESSAGES)
    assert reply.text == ANSWER
    assert (reply.usage.prompt_tokens, reply.usage.completion_tokens) == (0, 0)
    assert reply.model == "fake-llm"


def test_an_answer_trickled_past_the_timeout_is_a_timeout(server: FakeLLMServer) -> None:
    """httpx's timeout bounds each read, not the request: a body sent a few bytes at a time took ~7 s under a 1 s
    timeout, and held an API worker as long as the endpoint liked, without the breaker ever counting it."""
    server.mode = "trickle"
    breaker = CircuitBreaker(failures=1)
    started = time.monotonic()
    with pytest.raises(LLMUnavailable, match="timed out"):
        client_for(server.base_url, breaker=breaker, timeout_s=1.0).chat(MESSAGES)
    assert time.monotonic() - started < 2.5
    assert breaker.health()["state"] == "open"


@pytest.mark.parametrize(
    ("header", "waited"),
    [("retry-after: 7", 7.0), ("retry-after-ms: 2500", 2.5), ("retry-after: 600", 10.0), ("retry-after: soon", 0.0), ("", 0.0)],
)
def test_a_rate_limit_waits_as_long_as_the_endpoint_asks_up_to_the_timeout(server: FakeLLMServer, header: str, waited: float) -> None:
    """A 429 with Retry-After was asked again after the jittered back-off (0.5-8 s), spending an attempt, and
    often the whole ticket, on a request the endpoint had said it would refuse; now the wait is what it asks, never
    past the request's timeout (10 s here), and a header that is no number or date falls back to the back-off."""
    server.mode = f"429 {header}"
    client = client_for(server.base_url, attempts=2, timeout_s=10.0)
    waits: list[float] = []
    client.sleep = waits.append
    reply = client.chat(MESSAGES)
    assert reply.text == ANSWER and server.requests == 2
    assert waits == [waited]



@pytest.mark.parametrize(("mode", "said"), [("429 ", "still rate-limited (429) after 1 attempts"), ("500", "answered server errors (500)"),
                                            ("html", "answered no usable completion"), ("slow", "timed out after 1 attempts")])
def test_the_failure_says_which_it_was(server: FakeLLMServer, mode: str, said: str) -> None:
    """Every failure after the retries read "unreachable", which sent operators to the network for a rate limit, a
    server error or a proxy's HTML page; a closed port is still "unreachable" (test_the_breaker_opens_...)."""
    server.mode = mode
    with pytest.raises(LLMUnavailable) as info:
        client_for(server.base_url, timeout_s=0.3).chat(MESSAGES)
    assert said in str(info.value) and "unreachable" not in str(info.value), str(info.value)


def test_an_endpoint_without_json_schema_is_asked_in_json_object_from_then_on(server: FakeLLMServer) -> None:
    """`TRIAGE_LLM_STRUCTURED=auto` sends a remote endpoint json_schema; llama-cpp-python's server answers that with a
    500, which was retried as a server failure until the breaker opened, so every ticket fell back to the proposal."""
    server.mode = "no_json_schema"
    client = LLMClient(base_url=server.base_url, model="fake-llm", max_attempts=3, schema_fallback=True)
    client.retry_wait = wait_none()
    assert client.chat(MESSAGES, schema=SCHEMA).text == ANSWER
    assert server.formats == ["json_schema", "json_object"]  # no retry of the refused mode, one request in the other
    assert client.structured == "json_object" and client.health()["consecutive_failures"] == 0
    client.chat(MESSAGES, schema=SCHEMA)
    assert server.formats[2:] == ["json_object"]


def test_a_json_schema_mode_set_on_purpose_that_the_endpoint_refuses_says_what_to_set(server: FakeLLMServer) -> None:
    server.mode = "no_json_schema"
    client = LLMClient(base_url=server.base_url, model="fake-llm", max_attempts=3, structured="json_schema")
    client.retry_wait = wait_none()
    with pytest.raises(LLMUnavailable, match=r"refused the json_schema response_format .*TRIAGE_LLM_STRUCTURED=json_object"):
        client.chat(MESSAGES, schema=SCHEMA)
    assert server.formats == ["json_schema"] and client.health()["state"] == "closed"


def test_a_server_error_that_is_not_about_the_response_format_is_still_retried(server: FakeLLMServer) -> None:
    server.mode = "500"
    client = LLMClient(base_url=server.base_url, model="fake-llm", max_attempts=2, schema_fallback=True)
    client.retry_wait = wait_none()
    with pytest.raises(LLMUnavailable, match=r"answered server errors \(500\) after 2 attempts"):
        client.chat(MESSAGES, schema=SCHEMA)
    assert server.formats == ["json_schema", "json_schema"] and client.structured == "json_schema"
