"""The real FastAPI app around the real service (seeded Chroma, llama.cpp over HTTP)."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from agent.api import create_app
from agent.service import TriageService

CONTRACT_KEYS = {
    "ticket_id", "labels", "decision", "rationale", "evidence", "route", "draft", "out_of_scope",
    "taxonomy_version", "model", "latency_ms", "usage", "warnings",
}


@pytest.fixture(scope="module")
def client(service: TriageService) -> TestClient:
    with TestClient(create_app(service.settings, service)) as test_client:
        yield test_client


def test_health_reports_the_store_and_model(client: TestClient) -> None:
    body = client.get("/healthz").json()
    assert body["status"] == "ok" and body["store"]["tickets"] > 1000 and body["store"]["articles"] > 100


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
