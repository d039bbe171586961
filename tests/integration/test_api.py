"""The real FastAPI app around the real service (seeded Chroma, llama.cpp over HTTP)."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from agent.api import create_app
from agent.auth import create_key
from agent.records import Records
from agent.service import TriageService

CONTRACT_KEYS = {
    "ticket_id", "labels", "decision", "rationale", "evidence", "route", "draft", "out_of_scope",
    "taxonomy_version", "model", "latency_ms", "usage", "warnings",
}


@pytest.fixture(scope="module")
def client(service: TriageService) -> TestClient:
    """The app as a bot sees it: every request carries a bot-scope key (only /healthz is open)."""
    records = Records.open(service.settings)
    key, _ = create_key(records, scope="bot", name="api-tests")
    with TestClient(create_app(service.settings, service, records=records)) as test_client:
        test_client.headers["Authorization"] = f"Bearer {key}"
        yield test_client
    records.close()


def test_health_reports_the_store_and_model(client: TestClient) -> None:
    body = client.get("/healthz").json()
    assert body["status"] == "ok" and body["store"]["tickets"] > 1000 and body["store"]["articles"] > 100


def test_stateless_classify_is_open_by_default_but_checks_a_sent_key(client: TestClient) -> None:
    anonymous = client.post("/v1/classify", json={"body": "hi", "channel": "fax"}, headers={"Authorization": ""})
    assert anonymous.status_code == 422  # got past auth to input validation
    wrong = client.post("/v1/classify", json={"body": "hi"}, headers={"Authorization": "Bearer not-a-key"})
    assert wrong.status_code == 401
    stored = client.post("/v1/tickets", json={"body": "My card was charged twice."}, headers={"Authorization": ""})
    assert stored.status_code == 401 and "Bearer" in stored.json()["detail"]
    assert client.get("/healthz", headers={"Authorization": ""}).status_code == 200


def test_classify_needs_a_bot_key_when_configured(service: TriageService) -> None:
    closed = service.settings.model_copy(update={"anonymous_classify": False})
    records = Records.open(service.settings)
    try:
        with TestClient(create_app(closed, service, records=records)) as test_client:
            response = test_client.post("/v1/classify", json={"body": "My card was charged twice."})
            assert response.status_code == 401 and "Bearer" in response.json()["detail"]
    finally:
        records.close()


def test_classify_returns_the_contract(client: TestClient) -> None:
    response = client.post(
        "/v1/classify",
        json={"subject": "Charged twice", "body": "My card was charged twice for order 1234, please refund one.", "channel": "email"},
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert set(body) == CONTRACT_KEYS
    assert set(body["labels"]) == {"service", "channel", "tier"}
    assert body["labels"]["channel"] == {"label": "email", "confidence": 1.0, "source": "intake", "alternatives": []}
    assert {"tickets", "articles"} == set(body["evidence"])
    assert set(body["evidence"]["tickets"][0]) >= {"id", "score", "labels"}
    assert set(body["usage"]) == {"prompt_tokens", "completion_tokens"}


def test_messages_thread_is_accepted(client: TestClient) -> None:
    response = client.post(
        "/v1/classify",
        json={"subject": "Login", "body": "I can't log in.", "messages": [{"author": "customer", "text": "Now the whole site is down for everyone."}]},
    )
    assert response.status_code == 200


@pytest.mark.parametrize(
    ("payload", "needle"),
    [
        ({"subject": "x", "body": "y", "channel": "fax"}, "unknown channel 'fax'"),
        ({"subject": "", "body": "   "}, "no text"),
        ({"body": "y", "priority": "high"}, "priority"),
        ({"body": "x" * 100_001}, "body"),
    ],
)
def test_bad_input_is_a_clear_422(client: TestClient, payload: dict, needle: str) -> None:
    response = client.post("/v1/classify", json=payload)
    assert response.status_code == 422
    assert needle in response.text


def test_openapi_documents_the_endpoints(client: TestClient) -> None:
    assert client.get("/docs").status_code == 200
    paths = client.get("/openapi.json").json()["paths"]
    assert {"/healthz", "/v1/classify"} <= set(paths)
