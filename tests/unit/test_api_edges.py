"""The HTTP API's edges with the real app, a real proposal-mode service (hashing embedder, on-disk Chroma) and
real SQLite records: who is recorded on a revision, text that shows nothing, bodies that are not UTF-8 JSON,
reviews of revisions that never existed, the busy answer and key names (tests/integration/ runs the seeded store)."""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from agent.api import create_app
from agent.auth import SCOPES, create_key
from agent.pool import PoolFull
from agent.reader import _requested_by
from agent.records import Records
from agent.service import TriageService
from agent.settings import Settings
from agent.store import VectorStore, make_client
from evals.migration_demo import write_v2
from tests.conftest import ARTICLES, SEED
from tests.fakes import HashEmbedder
from tests.records_support import TAXONOMY_PATH, Api, app_factory

TICKET = {"subject": "Charged twice", "body": "I was charged twice on my credit card, please refund one.", "channel": "email"}
INVISIBLE = "\u200b\u200c\u200d\ufeff\u202e\u2066"


@pytest.fixture(scope="module")
def api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Api]:
    """One app for the module (each test makes its own ticket): building one trains a head, about a second."""
    root = tmp_path_factory.mktemp("api-edges")
    settings = Settings(data_dir=root / "data", taxonomy_path=TAXONOMY_PATH, mode="proposal")
    embedder = HashEmbedder()
    store = VectorStore(make_client(path=settings.chroma_dir), embedder)
    store.upsert_tickets(SEED)
    store.upsert_articles(ARTICLES)
    service = TriageService(settings, embedder=embedder, store=store)
    records = Records(f"sqlite:///{root / 'triage.db'}")
    records.upgrade()
    keys = {scope: create_key(records, scope=scope, name=f"{scope}-tester")[0] for scope in SCOPES}
    try:
        with TestClient(create_app(settings, service, records=records)) as client:
            yield Api(client, records, keys)
    finally:
        records.close()


def created(api: Api, body: dict | None = None) -> dict:
    response = api.post("/v1/tickets", body or TICKET)
    assert response.status_code == 201, response.text
    return response.json()


# ---------------------------------------------------------------- F10: who asked


def test_every_revision_names_the_key_that_asked_for_it(api: Api) -> None:
    ticket_id = created(api)["id"]
    assert api.post(f"/v1/tickets/{ticket_id}/messages", {"text": "Still no refund."}).status_code == 201
    assert api.post(f"/v1/tickets/{ticket_id}/escalations", {"note": "customer angry"}).status_code == 201
    assert api.post(f"/v1/tickets/{ticket_id}/reclassifications", {}, scope="lead").status_code == 201
    assert api.post(f"/v1/tickets/{ticket_id}/reviews", {"action": "accept"}, scope="lead").status_code == 201

    revisions = api.get(f"/v1/tickets/{ticket_id}/revisions").json()
    assert [r["reason"] for r in revisions] == ["new_ticket", "new_message", "escalation", "reclassify", "human_review"]
    assert [r["requested_by"] for r in revisions] == ["user:bot-tester"] * 3 + ["user:lead-tester"] * 2
    for revision in revisions[:4]:  # still an agent revision, naming the model, for the stats and the human-label rules
        model = revision["classification"]["model"]
        assert revision["actor"] == f"agent:{model} for {revision['requested_by']}"
    assert revisions[4]["actor"] == "user:lead-tester"


# ---------------------------------------------------------------- F11: text that shows nothing


@pytest.mark.parametrize(
    "body",
    [{"body": "   "}, {"body": INVISIBLE}, {"body": "\u0000\u0001\u0002"}, {"subject": "\u200b", "body": "\x7f \u2069\n"}],
    ids=["spaces", "zero-width-and-bidi", "ascii-controls", "mixed"],
)
def test_a_ticket_that_shows_nothing_is_refused(api: Api, body: dict) -> None:
    for path in ("/v1/classify", "/v1/tickets"):
        response = api.post(path, body)
        assert response.status_code == 422, response.text
        assert response.json()["error"] == "invalid_ticket" and "the ticket has no text" in response.json()["detail"]


@pytest.mark.parametrize("text", ["   ", INVISIBLE, "\u0001\n\t"])
def test_a_message_that_shows_nothing_writes_no_revision(api: Api, text: str) -> None:
    ticket_id = created(api)["id"]
    response = api.post(f"/v1/tickets/{ticket_id}/messages", {"text": text})
    assert response.status_code == 422, response.text
    assert "the message has no text" in response.json()["detail"]
    assert len(api.get(f"/v1/tickets/{ticket_id}/revisions").json()) == 1


def test_invisible_characters_around_words_are_no_obstacle(api: Api) -> None:
    response = api.post("/v1/classify", {"body": "\u202erefund\u200b my double charge\ufeff"})
    assert response.status_code == 200, response.text


# ---------------------------------------------------------------- the open classify and DNS rebinding


@pytest.mark.parametrize("host", ["127.0.0.1:8000", "localhost:8000", "[::1]:8000", "LOCALHOST"])
def test_an_anonymous_classify_from_this_machine_is_open(api: Api, host: str) -> None:
    response = api.client.post("http://127.0.0.1:8000/v1/classify", json=TICKET, headers={"Host": host})
    assert response.status_code == 200, response.text


def test_an_anonymous_classify_under_another_hosts_name_needs_a_key(api: Api) -> None:
    """A web page the operator opens can re-point its own name at 127.0.0.1 (DNS rebinding) and then call the API
    as same-origin, no CORS in the way: it read the open classify's answers, past tickets and their answers included."""
    url = "http://127.0.0.1:8000/v1/classify"
    rebound = api.client.post(url, json=TICKET, headers={"Host": "attacker.example:8000"})
    assert rebound.status_code == 401 and "Bearer" in rebound.json()["detail"], rebound.text
    keyed = api.client.post(url, json=TICKET, headers={"Host": "attacker.example:8000", **api.auth("bot")})
    assert keyed.status_code == 200, keyed.text
    # bound to the network, the open classify answers its callers as documented (`triage serve` warns about it)
    lan = api.client.post("http://10.0.0.5:8000/v1/classify", json=TICKET, headers={"Host": "triage.lan:8000"})
    assert lan.status_code == 200, lan.text


@pytest.mark.parametrize("header", ["{key}", "Token {key}", "Basic {key}"])
def test_a_key_sent_without_the_bearer_scheme_is_told_so(api: Api, header: str) -> None:
    """`Authorization: <key>` was answered "no API key: send ...", which sent integrators looking for a header they
    had sent; it now says the header is not read and how to write it."""
    response = api.client.get("/v1/tickets", headers={"Authorization": header.format(key=api.keys["bot"])})
    assert response.status_code == 401 and "the Authorization header is not read" in response.json()["detail"], response.text
    assert api.client.get("/v1/tickets").json()["detail"].startswith("no API key")  # no header at all: as before


# ---------------------------------------------------------------- F14: bodies, reviews, busy


def test_a_body_that_is_not_utf8_is_a_422_that_says_so(api: Api) -> None:
    response = api.client.post(
        "/v1/classify", content=b'{"body":"caf\xe9 \xff\xfe broken"}', headers={"content-type": "application/json"}
    )
    assert response.status_code == 422, response.text
    assert response.json()["error"] == "invalid_request"
    assert "not UTF-8" in response.json()["detail"] and "application/json" in response.json()["detail"]


@pytest.mark.parametrize("content_type", ["application/x-www-form-urlencoded", "text/plain; charset=utf-8"])
def test_a_body_sent_without_the_json_content_type_names_the_header(api: Api, content_type: str) -> None:
    response = api.client.post("/v1/classify", content=b'{"body":"refund please"}', headers={"content-type": content_type})
    assert response.status_code == 422, response.text
    detail = response.json()["detail"]
    assert detail.startswith("the body must be JSON sent with `content-type: application/json`")
    assert repr(content_type.split(";")[0]) in detail


def test_a_field_error_in_json_gets_no_content_type_hint(api: Api) -> None:
    response = api.post("/v1/classify", {"body": "refund", "channel": 3})
    assert response.status_code == 422 and "content-type" not in response.json()["detail"]


@pytest.mark.parametrize("revision", [99, 0, -1])
def test_a_review_of_a_revision_that_never_existed_is_a_422(api: Api, revision: int) -> None:
    ticket_id = created(api)["id"]
    response = api.post(f"/v1/tickets/{ticket_id}/reviews", {"action": "accept", "revision": revision}, scope="lead")
    assert response.status_code == 422, response.text
    assert response.json()["detail"].startswith(f"ticket {ticket_id} has no revision {revision} (current: 1)")


def test_a_review_of_a_past_revision_is_still_a_409(api: Api) -> None:
    ticket_id = created(api)["id"]
    assert api.post(f"/v1/tickets/{ticket_id}/messages", {"text": "Any news?"}).status_code == 201
    response = api.post(f"/v1/tickets/{ticket_id}/reviews", {"action": "accept", "revision": 1}, scope="lead")
    assert response.status_code == 409 and "no longer current (current: 2)" in response.json()["detail"]


def test_a_reviewed_ticket_is_stored_with_pii_redacted_in_its_subject_too(api: Api) -> None:
    """A review teaches the retrieval store the ticket, whose text is then shown as evidence and put into other
    tickets' prompts (a remote LLM's too): the body was redacted, the subject stored as the customer wrote it."""
    ticket = {"subject": "Refund to jane.doe@example.com, card 4111 1111 1111 1111",
              "body": "Charged twice, write to jane.doe@example.com", "channel": "email"}
    ticket_id = created(api, ticket)["id"]
    response = api.post(f"/v1/tickets/{ticket_id}/reviews", {"action": "accept", "revision": 1}, scope="lead")
    assert response.status_code == 201, response.text
    stored = api.client.app.state.service.store.tickets.get(ids=[ticket_id], include=["documents"])["documents"][0]
    assert "jane.doe@example.com" not in stored and "4111" not in stored, stored
    assert stored.startswith("Refund to <email>, card <card>") and "write to <email>" in stored


def test_the_busy_answer_is_one_sentence_with_the_wait(api: Api, monkeypatch: pytest.MonkeyPatch) -> None:
    async def full(*args: object, **kwargs: object) -> None:
        raise PoolFull(3, 1)

    monkeypatch.setattr(api.client.app.state.pool, "run", full)  # type: ignore[attr-defined]
    response = api.post("/v1/classify", TICKET)
    assert response.status_code == 503 and response.headers["Retry-After"] == "3"
    detail = response.json()["detail"]
    assert detail.count("retry") == 1 and "retry in 3 s" in detail and ";" in detail and detail.count(";") == 1


# ---------------------------------------------------------------- F16: key names


@pytest.mark.parametrize("name", ["alice\nuser:admin <script>", "bob smith", "-dash", "", "x" * 65, "x" * 300, "<b>"])
def test_a_key_name_outside_the_rule_is_refused_with_the_rule(api: Api, name: str) -> None:
    response = api.post("/v1/keys", {"scope": "bot", "name": name}, scope="admin")
    assert response.status_code == 422, response.text
    assert "invalid key name" in response.json()["detail"] and "letters, digits" in response.json()["detail"]


def test_a_key_name_inside_the_rule_is_taken(api: Api) -> None:
    response = api.post("/v1/keys", {"scope": "bot", "name": " helpdesk-bot@acme.example "}, scope="admin")
    assert response.status_code == 201, response.text
    assert response.json()["name"] == "helpdesk-bot@acme.example"


def test_an_agent_revision_from_before_requesters_were_kept_names_nobody() -> None:
    assert _requested_by("agent:proposal:hash-test+tfidf") is None
    assert _requested_by("agent:proposal:x for user:ada") == "user:ada"
    assert _requested_by("user:ada") == "user:ada" and _requested_by("system:taxonomy-migration") == "system:taxonomy-migration"



def test_a_reject_that_falls_back_to_unreviewed_labels_puts_the_ticket_back_in_the_queue(api: Api) -> None:
    """A reject whose fallback was the agent's `needs_review` (or `suggest`) labels left the ticket out of the review
    queue, so labels nobody approved were counted as settled by a lead and never shown to one again."""
    ticket = created(api, {"body": "hello"})  # no KB or neighbour says much: needs_review
    ticket_id = ticket["id"]
    assert ticket["decision"] == "needs_review" and ticket["in_queue"], ticket
    assert api.post(f"/v1/tickets/{ticket_id}/reviews", {"action": "accept"}, scope="lead").json()["in_queue"] is False
    rejected = api.post(f"/v1/tickets/{ticket_id}/reviews", {"action": "reject", "revision": 2}, scope="lead")
    assert rejected.status_code == 201, rejected.text
    view = rejected.json()
    assert view["current_seq"] == 1 and view["decision"] == "needs_review" and view["in_queue"], view
    queue = api.get("/v1/review-queue", scope="lead", decision="needs_review", limit=200).json()["items"]
    assert ticket_id in [item["id"] for item in queue]
    settled = created(api)  # an auto-applied fallback stays out of the queue
    assert settled["decision"] == "auto_apply", settled
    assert api.post(f"/v1/tickets/{settled['id']}/reviews", {"action": "edit", "labels": {"tier": "L3"}}, scope="lead").status_code == 201
    back = api.post(f"/v1/tickets/{settled['id']}/reviews", {"action": "reject", "revision": 2}, scope="lead").json()
    assert back["current_seq"] == 1 and back["in_queue"] is False, back


def test_a_short_message_to_a_ticket_near_the_input_limit_is_taken_and_classified_on_what_fits(api: Api) -> None:
    """A ticket stored near TRIAGE_MAX_INPUT_CHARS took no follow-up at all: the subject, body and new message were
    over the limit, and the message was refused (422, lost) with 'send the first part', which the caller cannot do
    for a ticket already stored. The end of the body is now left out of the classification input, with a warning."""
    body = ("refund my double charge please. " * 4_000)[:99_950]
    ticket_id = created(api, {"subject": "Charged twice", "body": body})["id"]
    answer = api.post(f"/v1/tickets/{ticket_id}/messages", {"text": "Any news on this? It has been a week already."})
    assert answer.status_code == 201, answer.text
    view = answer.json()
    assert view["body"] == body and view["messages"][-1]["text"].startswith("Any news")  # stored in full
    warnings = view["current"]["classification"]["warnings"]
    assert any(w.startswith("the body was cut to its first ") and "to stay under the input limit" in w for w in warnings), warnings
    huge = api.post(f"/v1/tickets/{ticket_id}/messages", {"text": "still charged twice " * 5_000})  # 100,000 characters
    assert huge.status_code == 201, huge.text
    assert any(w.startswith("the newest message was cut") for w in huge.json()["current"]["classification"]["warnings"])
    assert api.post(f"/v1/tickets/{ticket_id}/escalations", {"note": "a week"}).status_code == 201


# ---------------------------------------------------------------- the LLM's circuit breaker on /healthz


def test_healthz_reports_degraded_while_the_llm_is_skipped(api: Api, monkeypatch: pytest.MonkeyPatch) -> None:
    """A down endpoint (a closed loopback port) opens the breaker after one failure; /healthz says so."""
    from agent.llm import CircuitBreaker, LLMClient, LLMUnavailable

    service = api.client.app.state.service
    assert api.client.get("/healthz").json()["llm"] is None  # proposal mode: no LLM
    llm = LLMClient(base_url="http://127.0.0.1:9/v1", model="m", timeout_s=1, max_attempts=1,
                    breaker=CircuitBreaker(failures=1))
    monkeypatch.setattr(service, "llm", llm)
    assert api.client.get("/healthz").json()["llm"]["state"] == "closed"
    with pytest.raises(LLMUnavailable):
        llm.chat([{"role": "user", "content": "hi"}])
    health = api.client.get("/healthz").json()
    assert health["status"] == "degraded" and health["llm"]["state"] == "open" and health["llm"]["retry_in_s"] > 0


def test_an_llm_urls_credentials_show_nowhere(api: Api, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    """An endpoint behind a gateway takes its credentials in the URL (user:password, sent as basic auth, or
    `?key=`): the open /healthz showed them to anyone, and every ticket's warning stored them in its revision."""
    from agent.llm import CircuitBreaker, LLMClient

    service = api.client.app.state.service
    url = "http://ops:hunter2@127.0.0.1:9/v1?key=hunter2"
    llm = LLMClient(base_url=url, model="m", timeout_s=1, max_attempts=1, breaker=CircuitBreaker(failures=1))
    monkeypatch.setattr(service, "llm", llm)
    monkeypatch.setattr(service, "settings", service.settings.model_copy(update={"mode": "hybrid"}))
    ticket = created(api)
    revisions = api.get(f"/v1/tickets/{ticket['id']}/revisions")
    health = api.client.get("/healthz")
    assert "127.0.0.1:9" in str(ticket["current"]["classification"]["warnings"])  # the warning still names the endpoint
    assert health.json()["llm"]["base_url"] == "http://ops:***@127.0.0.1:9/v1?key=***"
    for shown in (json.dumps(ticket), revisions.text, health.text, caplog.text):
        assert "hunter2" not in shown, shown


def test_an_embedding_endpoint_down_while_serving_is_a_503_naming_it(api: Api, monkeypatch: pytest.MonkeyPatch) -> None:
    """TRIAGE_EMBEDDING_BASE_URL's server gone after start-up (a closed loopback port): every classify and new ticket
    was a 500 'an unexpected error, report it'; now the 503 + Retry-After of a part that is down, naming it."""
    from agent.embeddings import OpenAIEmbedder
    from agent.local_llm import free_port

    url = f"http://127.0.0.1:{free_port()}/v1"
    embedder = OpenAIEmbedder(base_url=url, model="e5")
    embedder._client = embedder._client.with_options(max_retries=0)  # one refused connection is enough here
    monkeypatch.setattr(api.client.app.state.service, "embedder", embedder)
    for answer in (api.client.post("/v1/classify", json=TICKET), api.post("/v1/tickets", TICKET)):
        assert answer.status_code == 503 and answer.headers["Retry-After"] == "5", answer.text
        assert answer.json()["error"] == "embedding_unavailable" and f"the embedding endpoint {url} (model 'e5') failed" in answer.json()["detail"]


def test_healthz_names_an_llm_that_refuses_the_key(api: Api, monkeypatch: pytest.MonkeyPatch) -> None:
    """An endpoint that answers 401 to TRIAGE_LLM_API_KEY is up, so its breaker stays closed: /healthz said ok while
    every ticket fell back to the proposal. It is now degraded, with the refusal and the setting to fix."""
    from agent.llm import LLMClient

    llm = LLMClient(base_url="http://127.0.0.1:9/v1", model="m")
    monkeypatch.setattr(llm, "refused", "LLM at http://127.0.0.1:9/v1 refused the request (401): Incorrect API key; "
                        "the endpoint does not accept the key: set TRIAGE_LLM_API_KEY to a key it accepts")
    monkeypatch.setattr(api.client.app.state.service, "llm", llm)
    health = api.client.get("/healthz").json()
    assert health["status"] == "degraded" and health["llm"]["state"] == "closed"
    assert health["problems"] == [f"LLM: {llm.refused}"]


def test_healthz_names_an_embedded_llm_that_died(api: Api, monkeypatch: pytest.MonkeyPatch) -> None:
    """The embedded server's process (which `triage serve` runs and restarts) is part of what /healthz reports: while
    it is down the status is degraded with its exit named; once back, ok again with the restart counted."""
    from agent.llm import LLMClient

    view = {"running": False, "restarts": 0, "last_exit": "exited with code -9"}
    llm = LLMClient(base_url="http://127.0.0.1:9/v1", model="m", server_health=lambda: dict(view))
    monkeypatch.setattr(api.client.app.state.service, "llm", llm)
    down = api.client.get("/healthz").json()
    assert down["status"] == "degraded" and down["llm"]["server"] == view
    assert down["problems"] == ["embedded LLM: exited with code -9; it is being started again"]
    view.update(running=True, restarts=1)
    back = api.client.get("/healthz").json()
    assert back["status"] == "ok" and back["problems"] == [] and back["llm"]["server"]["restarts"] == 1


def test_healthz_says_which_part_is_down_instead_of_a_500(api: Api, monkeypatch: pytest.MonkeyPatch) -> None:
    """A remote Chroma or the records database gone while serving: /healthz answered 500 (the store) or ok (the
    records) although every ticket request would fail; it now answers 200, degraded, naming the part and the cause."""
    from sqlalchemy.exc import OperationalError

    healthy = api.client.get("/healthz").json()
    assert healthy["status"] == "ok" and healthy["problems"] == [] and healthy["store"]["tickets"] > 0
    service, records = api.client.app.state.service, api.client.app.state.records

    def store_down() -> dict[str, int]:
        raise ValueError("Could not connect to a Chroma server. Are you sure it is running?")

    def records_down() -> Iterator[object]:
        raise OperationalError("SELECT 1", {}, ConnectionRefusedError("connection refused\nsecond line"))

    monkeypatch.setattr(service.store, "counts", store_down)
    monkeypatch.setattr(records, "read", records_down)
    response = api.client.get("/healthz")
    assert response.status_code == 200, response.text
    health = response.json()
    assert health["status"] == "degraded" and health["store"] == {}
    assert health["problems"] == [
        "vector store: Could not connect to a Chroma server. Are you sure it is running?",
        "records database: connection refused",
    ]


# ---------------------------------------------------------------- channel as integrations send it


def test_a_channel_in_another_case_is_the_taxonomys_and_an_empty_one_is_inferred(api: Api) -> None:
    upper = api.client.post("/v1/classify", json={**TICKET, "channel": " Email "})
    assert upper.status_code == 200, upper.text
    assert upper.json()["labels"]["channel"] == {**upper.json()["labels"]["channel"], "label": "email", "source": "intake"}
    ticket = created(api, {**TICKET, "channel": "EMAIL"})
    assert ticket["channel"] == "email"  # stored as the taxonomy spells it
    empty = api.client.post("/v1/classify", json={**TICKET, "channel": ""})
    assert empty.status_code == 200 and empty.json()["labels"]["channel"]["source"] != "intake", empty.text
    unknown = api.client.post("/v1/classify", json={**TICKET, "channel": "fax"})
    assert unknown.status_code == 422 and "unknown channel 'fax'" in unknown.text


def test_escalating_a_ticket_at_the_top_tier_says_the_tier_stays(api: Api) -> None:
    ticket_id = created(api)["id"]
    to_top = api.post(f"/v1/tickets/{ticket_id}/escalations", {"tier": "L3"})
    assert to_top.status_code == 201 and to_top.json()["current"]["labels"]["tier"] == "L3", to_top.text
    assert not any("already at tier" in w for w in to_top.json()["current"]["classification"]["warnings"])
    again = api.post(f"/v1/tickets/{ticket_id}/escalations", {"note": "still down"})
    assert again.status_code == 201, again.text
    current = again.json()["current"]
    assert current["labels"]["tier"] == "L3" and current["note"] == "still down"
    assert any("already at tier L3, the highest tier" in w for w in current["classification"]["warnings"]), current["classification"]["warnings"]


def test_escalating_to_the_tier_a_ticket_has_says_so_without_calling_it_the_highest(api: Api) -> None:
    """At L2, an escalation asking for L2 read "already at tier L2, the highest this escalation reaches" (L3 is
    higher); it now says the tier is the one asked for."""
    ticket_id = created(api)["id"]
    assert api.post(f"/v1/tickets/{ticket_id}/escalations", {"tier": "L2"}).status_code == 201
    again = api.post(f"/v1/tickets/{ticket_id}/escalations", {"tier": "L2", "note": "customer called again"})
    assert again.status_code == 201, again.text
    warnings = again.json()["current"]["classification"]["warnings"]
    assert any(w.startswith("already at tier L2, the tier this escalation asks for") for w in warnings), warnings
    assert not any("highest" in w for w in warnings)


def test_an_escalation_tier_is_matched_in_any_case_like_a_channel(api: Api) -> None:
    """`{"tier": "l3"}` was a 422 'unknown tier' while a channel in any case is the taxonomy's."""
    ticket_id = created(api)["id"]
    response = api.post(f"/v1/tickets/{ticket_id}/escalations", {"tier": " l3 "})
    assert response.status_code == 201 and response.json()["current"]["labels"]["tier"] == "L3", response.text
    unknown = api.post(f"/v1/tickets/{ticket_id}/escalations", {"tier": "L9"})
    assert unknown.status_code == 422 and "unknown tier label 'L9'" in unknown.text, unknown.text


def test_a_review_edit_label_is_matched_in_any_case_like_an_escalation_tier(api: Api) -> None:
    """An edit review with `{"tier": "l1"}` or `{"service": "Billing_Payments"}` was a 422 'unknown label', while the
    same ticket's escalation to `l3` and its intake channel `Email` were taken as the taxonomy's ids."""
    ticket_id = created(api)["id"]
    response = api.post(f"/v1/tickets/{ticket_id}/reviews", {"action": "edit", "labels": {"tier": " l1 ", "service": "Billing_Payments"}}, scope="lead")
    assert response.status_code == 201, response.text
    assert response.json()["labels"]["tier"] == "L1" and response.json()["labels"]["service"] == "billing_payments"
    unknown = api.post(f"/v1/tickets/{ticket_id}/reviews", {"action": "edit", "labels": {"service": "billing"}}, scope="lead")
    assert unknown.status_code == 422 and "unknown service label 'billing'" in unknown.text, unknown.text


def test_a_ticket_is_found_by_the_id_the_integration_sent(api: Api) -> None:
    mine = created(api, {**TICKET, "ticket_id": "EXT-42"})
    created(api, {**TICKET, "ticket_id": "EXT-43"})
    found = api.get("/v1/tickets", external_id="EXT-42").json()["items"]
    assert [t["id"] for t in found] == [mine["id"]] and found[0]["external_id"] == "EXT-42"
    assert api.get("/v1/tickets", external_id="EXT-nope").json()["items"] == []


# ---------------------------------------------------------------- cursors as a client may send them back


def _cursor(values: object) -> str:
    return base64.urlsafe_b64encode(json.dumps(values).encode()).decode()


@pytest.mark.parametrize(
    "values",
    [["a", "b", "c"], [None, None, None], [[1], {}, 3], [1e400, 1, "x"], [10**30, 0.5, "tk_x"], [1, "NaN", "x"], [True, 0.5, "x"],
     [0, 0.5, "tk\u0000"], [None], [{"a": 1}], 7],
    ids=lambda v: json.dumps(v)[:24],
)
def test_an_edited_cursor_is_a_422_on_every_listing(api: Api, values: object) -> None:
    """A cursor of the right length but wrong kinds reached the query: `int('a')` was a 500 on the queue."""
    created(api)
    for path, scope in (("/v1/review-queue", "lead"), ("/v1/tickets", "bot")):
        response = api.get(path, scope=scope, cursor=_cursor(values))
        assert response.status_code == 422, (path, response.text)
        assert response.json()["detail"].startswith("bad cursor: pass the next_cursor of the previous page unchanged")


def test_a_real_cursor_still_pages_the_queue(api: Api) -> None:
    for _ in range(3):
        created(api, {"body": "refund charged twice"})  # a suggestion: in the queue
    first = api.get("/v1/review-queue", scope="lead", limit=2).json()
    assert first["next_cursor"] is not None
    second = api.get("/v1/review-queue", scope="lead", limit=2, cursor=first["next_cursor"])
    assert second.status_code == 200, second.text
    assert not {t["id"] for t in first["items"]} & {t["id"] for t in second.json()["items"]}


# ---------------------------------------------------------------- time filters


@pytest.mark.parametrize(
    ("path", "name", "moment"),
    [("/v1/stats", "until", "9999-12-31T23:59:59-14:00"), ("/v1/stats", "since", "0001-01-01T00:00:00+05:00"),
     ("/v1/review-queue", "created_after", "0001-01-01T00:00:00+05:00"), ("/v1/stats/queue", "created_before", "9999-12-31T23:59:59-14:00")],
)
def test_a_time_with_no_utc_value_is_a_422_that_names_it(api: Api, path: str, name: str, moment: str) -> None:
    """Year 9999 west of UTC (or year 1 east of it) overflowed when moved to UTC: a 500 on /v1/stats."""
    response = api.get(path, scope="lead", **{name: moment})
    assert response.status_code == 422, response.text
    assert f"query.{name}" in response.json()["detail"] and "outside the years 1 to 9999 in UTC" in response.json()["detail"]


@pytest.mark.parametrize(
    ("path", "after", "before"),
    [("/v1/review-queue", "created_after", "created_before"), ("/v1/stats/queue", "created_after", "created_before"), ("/v1/stats", "since", "until")],
)
def test_a_time_window_that_ends_before_it_starts_is_refused(api: Api, path: str, after: str, before: str) -> None:
    """Swapped bounds answered an empty queue, zero counts or empty stats, as if there were no tickets."""
    created(api)
    response = api.get(path, scope="lead", **{after: "2030-01-01", before: "2020-01-01T00:00:00+00:00"})
    assert response.status_code == 422, response.text
    assert response.json()["detail"].startswith(f"{after} (2030-01-01T00:00:00+00:00) is after {before} (2020-01-01T00:00:00+00:00)")
    assert "swap them" in response.json()["detail"]
    assert api.get(path, scope="lead", **{after: "2020-01-01", before: "2030-01-01"}).status_code == 200


# ---------------------------------------------------------------- taxonomy migration requests


@pytest.mark.parametrize("path", ["/v1/taxonomy/migration", "/v1/taxonomy/migration/jobs"])
@pytest.mark.parametrize("previous", ["", "  "])
def test_an_empty_previous_version_is_the_default_not_a_500(api: Api, path: str, previous: str) -> None:
    """`{"previous": ""}` skipped the 'no migration section' check and crashed on the missing section. The 422 said
    what was missing but not what to do (the CLI's twin did): it now names the setting and the restart."""
    response = api.post(path, {"previous": previous}, scope="admin")
    assert response.status_code == 422, response.text
    assert "has no `migration:` section to apply" in response.json()["detail"]
    assert "point TRIAGE_TAXONOMY_PATH at its YAML" in response.json()["detail"] and "restart the API" in response.json()["detail"]


# ---------------------------------------------------------------- label filters


def test_an_empty_label_filter_is_no_filter(api: Api) -> None:
    """`?service=` (a cleared form field) matched tickets whose label is "": an empty queue and zero counts."""
    created(api, {"body": "refund charged twice"})
    for path in ("/v1/review-queue", "/v1/stats/queue", "/v1/stats"):
        everything = api.get(path, scope="lead").json()
        emptied = api.get(path, scope="lead", service="", tier="", channel="").json()
        if path == "/v1/stats":
            everything, emptied = everything["totals"], emptied["totals"]
        assert emptied == everything, path
    assert api.get("/v1/stats/queue", scope="lead", service="").json()["total"] > 0


@pytest.mark.parametrize("path", ["/v1/stats/queue", "/v1/stats"])
def test_an_unknown_label_filter_on_the_stats_is_a_422_like_the_queue(api: Api, path: str) -> None:
    """The counts above the queue answered zeros for a typo the queue itself refuses."""
    response = api.get(path, scope="lead", service="biling_payments")
    assert response.status_code == 422, response.text
    assert "unknown service label 'biling_payments'" in response.json()["detail"] and "billing_payments" in response.json()["detail"]


# ---------------------------------------------------------------- NUL characters (PostgreSQL cannot store them)


def test_nul_characters_in_free_text_are_dropped_on_the_way_in(api: Api) -> None:
    """PostgreSQL's text and JSONB refuse NUL: a ticket, message, note, comment or draft holding one answered 503
    'database busy' there (and was lost) while SQLite stored it. Now no backend sees one; the words stay."""
    ticket = created(api, {"subject": "Charged\u0000 twice", "body": "refund\u0000 please", "messages": [{"text": "hello\u0000"}]})
    assert (ticket["subject"], ticket["body"], ticket["messages"][0]["text"]) == ("Charged twice", "refund please", "hello")
    ticket_id = ticket["id"]
    message = api.post(f"/v1/tickets/{ticket_id}/messages", {"text": "any\u0000 news?"})
    assert message.status_code == 201 and message.json()["messages"][-1]["text"] == "any news?", message.text
    escalated = api.post(f"/v1/tickets/{ticket_id}/escalations", {"note": "angry\u0000"})
    assert escalated.status_code == 201 and escalated.json()["current"]["note"] == "angry", escalated.text
    review = {"action": "accept", "comment": "fine\u0000", "draft": {"text": "Refunded\u0000.", "citations": ["kb-refund\u0000"]}}
    reviewed = api.post(f"/v1/tickets/{ticket_id}/reviews", review, scope="lead")
    assert reviewed.status_code == 201, reviewed.text
    assert reviewed.json()["current"]["note"] == "fine"
    assert reviewed.json()["current"]["classification"]["draft"] == {"text": "Refunded.", "citations": ["kb-refund"]}
    stored = api.get(f"/v1/tickets/{ticket_id}/revisions").json()
    assert "\\u0000" not in json.dumps(stored) and "\\u0000" not in api.get(f"/v1/tickets/{ticket_id}").text
    only_nul = api.post(f"/v1/tickets/{ticket_id}/messages", {"text": "\u0000\u0000"})
    assert only_nul.status_code == 422 and "the message has no text" in only_nul.json()["detail"]


@pytest.mark.parametrize(
    ("path", "params"),
    [("/v1/tickets/tk%00x", {}), ("/v1/tickets/tk%00x/revisions", {}), ("/v1/tickets", {"external_id": "EXT\u0000"}),
     ("/v1/taxonomy/versions/default%00", {}), ("/v1/taxonomy/migration/jobs/mj%00", {})],
)
def test_a_nul_in_the_url_is_a_422_that_says_so(api: Api, path: str, params: dict) -> None:
    """A lookup with %00 in the URL answered 503 'database busy, retry' on PostgreSQL."""
    response = api.client.get(path, params=params, headers=api.auth("admin"))
    assert response.status_code == 422, response.text
    assert response.json()["detail"].startswith("the URL holds a NUL character (%00)")


# ---------------------------------------------------------------- the integration's own ticket id


@pytest.mark.parametrize(("ticket_id", "needle"), [("x" * 201, "ticket_id has 201 characters, more than the 200"), ("EXT\u0000", "NUL")])
def test_a_ticket_id_the_records_cannot_keep_is_a_422_before_classifying(api: Api, ticket_id: str, needle: str) -> None:
    """`ticket_id` is kept in a 200-character column: PostgreSQL refused a longer one at the insert, after the
    classification, as 503 'database busy, retry' (SQLite stored it)."""
    newest = api.get("/v1/tickets", limit=1).json()["items"]
    response = api.post("/v1/tickets", {**TICKET, "ticket_id": ticket_id})
    assert response.status_code == 422, response.text
    assert needle in response.json()["detail"]
    assert api.get("/v1/tickets", limit=1).json()["items"] == newest  # nothing stored
    assert created(api, {**TICKET, "ticket_id": "y" * 200})["external_id"] == "y" * 200


def test_a_value_the_database_refuses_is_the_requests_422_not_database_down(api: Api, monkeypatch: pytest.MonkeyPatch) -> None:
    """A DataError (a value too long or out of range for its column) answered 503 'busy or unreachable; retry',
    though the same request can only fail again."""
    from sqlalchemy.exc import DataError

    def refuse(**_: object) -> None:
        raise DataError("SELECT ...", {}, Exception("value too long for type character varying(40)\nCONTEXT: secret row"))

    monkeypatch.setattr(api.client.app.state.lifecycle, "list_tickets", refuse)  # type: ignore[attr-defined]
    response = api.get("/v1/tickets")
    assert response.status_code == 422, response.text
    detail = response.json()["detail"]
    assert "value too long for type character varying(40)" in detail and "shorten or correct it and resend" in detail
    assert "CONTEXT" not in detail and "Retry-After" not in response.headers


# ---------------------------------------------------------------- bodies that are not a JSON object


def test_a_request_without_a_body_says_so(api: Api) -> None:
    """Was `body: Field required`, which reads as the ticket's `body` field."""
    for path in ("/v1/classify", "/v1/tickets"):
        response = api.client.post(path, headers={**api.auth("bot"), "content-type": "application/json"})
        assert response.status_code == 422, response.text
        assert response.json()["detail"].startswith("the request has no body; send the JSON object this endpoint takes")


def test_a_body_sent_with_no_content_type_names_the_header(api: Api) -> None:
    response = api.client.post("/v1/classify", content=b'{"body":"refund please"}', headers=api.auth("bot"))
    assert response.status_code == 422, response.text
    assert response.json()["detail"].startswith(
        "the body must be JSON sent with `content-type: application/json` (this request sent no content-type)"
    )


def test_broken_json_says_where_and_why(api: Api) -> None:
    response = api.client.post("/v1/classify", content=b'{"body": ', headers={**api.auth("bot"), "content-type": "application/json"})
    assert response.status_code == 422, response.text
    assert "the body is not valid JSON: Expecting value at character 9" in response.json()["detail"]


def test_a_number_too_long_to_read_is_a_422_not_a_bare_400(api: Api) -> None:
    """Valid JSON, but Python refuses to parse an integer of over 4,300 digits: it was FastAPI's generic 400."""
    body = b'{"action": "accept", "revision": ' + b"9" * 5000 + b"}"
    ticket_id = created(api)["id"]
    response = api.client.post(
        f"/v1/tickets/{ticket_id}/reviews", content=body, headers={**api.auth("lead"), "content-type": "application/json"}
    )
    assert response.status_code == 422, response.text
    assert response.json()["error"] == "invalid_request" and "cannot be read" in response.json()["detail"]


def test_json_nested_too_deeply_is_a_422_that_says_so(api: Api) -> None:
    """Was a 400 'There was an error parsing the body', which names neither the problem nor the fix."""
    nested = b'{"body": "refund", "messages": ' + b"[" * 100_000 + b"]" * 100_000 + b"}"
    response = api.client.post("/v1/tickets", content=nested, headers={**api.auth("bot"), "content-type": "application/json"})
    assert response.status_code == 422, response.text
    assert response.json()["detail"].startswith("the JSON body is nested too deeply to read")


# ---------------------------------------------------------------- ids in the path


@pytest.mark.parametrize(
    ("path", "scope"),
    [("/v1/tickets/{}", "bot"), ("/v1/tickets/{}/revisions", "bot"), ("/v1/taxonomy/versions/{}", "lead"),
     ("/v1/taxonomy/migration/jobs/{}", "admin")],
)
def test_a_404_for_a_very_long_id_quotes_only_its_start(api: Api, path: str, scope: str) -> None:
    """The 404 echoed a 10,000-character id whole."""
    response = api.get(path.format("x" * 10_000), scope=scope)
    assert response.status_code == 404, response.text
    detail = response.json()["detail"]
    assert len(detail) < 300 and "(10000 characters)" in detail, detail


@pytest.mark.parametrize("variant", [str.upper, lambda i: i + " ", lambda i: " " + i])
def test_ids_that_differ_in_case_or_spaces_are_other_tickets(api: Api, variant: object) -> None:
    ticket_id = created(api)["id"]
    response = api.get(f"/v1/tickets/{variant(ticket_id)}")  # type: ignore[operator]
    assert response.status_code == 404 and response.json()["error"] == "not_found", response.text


# ---------------------------------------------------------------- between a new taxonomy version and its migration


@pytest.fixture
def before_migration(tmp_path: Path) -> Iterator[tuple[Api, dict[str, str]]]:
    """Tickets a lead labelled under default.yaml, then the API on its next version (a rename, a merge, a split and a
    retirement, evals/migration_demo.py) before anyone ran the migration: the window a deployment goes through."""
    app, records, keys = app_factory(tmp_path)
    ids = {}
    try:
        with app(TAXONOMY_PATH) as client:
            v1 = Api(client, records, keys)
            for name, service in (("renamed", "it_help_desk"), ("split", "technical_support"), ("split2", "technical_support")):
                ids[name] = created(v1, {"body": "My work laptop says my account is locked and the app crashes."})["id"]
                edit = {"action": "edit", "labels": {"service": service, "tier": "L2"}}
                assert v1.post(f"/v1/tickets/{ids[name]}/reviews", edit, scope="lead").status_code == 201
        with app(write_v2(tmp_path / "default-v2.yaml")) as client:
            yield Api(client, records, keys), ids
    finally:
        records.close()


def test_before_the_migration_a_new_message_moves_a_leads_label_as_the_migration_will(before_migration: tuple[Api, dict[str, str]]) -> None:
    """A message on a ticket a lead labelled under the previous version wrote a revision stamped with the new
    version that still carried the old label (it_help_desk): a label outside the taxonomy in force, which the
    migration then counted as already current and never moved. A tier-only edit of it was refused as 'unknown
    service label it_help_desk', a label the lead had not sent."""
    api, ids = before_migration
    ticket_id = ids["renamed"]
    before = api.get(f"/v1/tickets/{ticket_id}/revisions").json()
    answer = api.post(f"/v1/tickets/{ticket_id}/messages", {"text": "Still locked out."})
    assert answer.status_code == 201, answer.text
    current = answer.json()["current"]["classification"]
    assert current["taxonomy_version"] == "default@2026.11.1.2"
    assert current["labels"]["service"]["label"] == "service_desk" and current["labels"]["service"]["source"] == "human"
    assert any("it_help_desk" in w and "service_desk" in w for w in current["warnings"]), current["warnings"]
    assert api.get(f"/v1/tickets/{ticket_id}/revisions").json()[: len(before)] == before  # history as it was
    tier_only = api.post(f"/v1/tickets/{ticket_id}/reviews", {"action": "edit", "labels": {"tier": "L3"}}, scope="lead")
    assert tier_only.status_code == 201, tier_only.text
    assert tier_only.json()["labels"] == {"service": "service_desk", "tier": "L3", "channel": current["labels"]["channel"]["label"]}


def test_before_the_migration_a_split_label_is_chosen_anew_and_sent_to_review(before_migration: tuple[Api, dict[str, str]]) -> None:
    api, ids = before_migration
    escalated = api.post(f"/v1/tickets/{ids['split']}/escalations", {"note": "urgent"})
    assert escalated.status_code == 201, escalated.text
    view = escalated.json()
    assert view["labels"]["service"] in ("software_application", "hardware") and view["labels"]["tier"] == "L3"
    assert view["decision"] == "needs_review" and view["in_queue"]
    accept = api.post(f"/v1/tickets/{ids['split2']}/reviews", {"action": "accept"}, scope="lead")
    assert accept.status_code == 422, accept.text
    assert "technical_support" in accept.json()["detail"] and "['software_application', 'hardware']" in accept.json()["detail"]
    edit = api.post(f"/v1/tickets/{ids['split2']}/reviews", {"action": "edit", "labels": {"service": "hardware"}}, scope="lead")
    assert edit.status_code == 201 and edit.json()["labels"]["service"] == "hardware", edit.text
    report = api.post("/v1/taxonomy/migration", {}, scope="admin").json()
    assert report["already_current"] == 2 and report["changed"] == 1, report  # `renamed` is still to move


def test_the_export_after_a_migration_writes_the_leads_labels_in_the_taxonomy_in_force(
    before_migration: tuple[Api, dict[str, str]], tmp_path: Path
) -> None:
    """`triage tickets export` after a committed migration wrote the ids the lead had picked under the previous
    version (`it_help_desk`), which the printed `triage eval --taxonomy` line then scored as wrong on every row. A
    renamed label is now written as the migration moved it; a split one, which the lead's label does not decide,
    is left empty (not scored) rather than the agent's re-asked choice."""
    from typer.testing import CliRunner

    from agent.cli import app

    api, ids = before_migration
    assert api.post("/v1/taxonomy/migration", {"commit": True}, scope="admin").json()["revisions_written"] == 3
    out = tmp_path / "reviewed.jsonl"
    env = {"TRIAGE_DATABASE_URL": api.records.url, "TRIAGE_TAXONOMY_PATH": str(tmp_path / "default-v2.yaml"),
           "TRIAGE_DATA_DIR": str(tmp_path / "data")}
    result = CliRunner().invoke(app, ["tickets", "export", "--out", str(out)], env=env)
    assert result.exit_code == 0, result.output
    rows = {row["id"]: row for row in map(json.loads, out.read_text(encoding="utf-8").splitlines())}
    assert set(rows) == set(ids.values())
    assert (rows[ids["renamed"]]["service"], rows[ids["renamed"]]["tier"]) == ("service_desk", "L2")
    assert (rows[ids["split"]]["service"], rows[ids["split"]]["tier"]) == ("", "L2")
