"""Keys, scopes and error bodies of the real app (real service on the seeded store, real SQLite records)."""

from __future__ import annotations

import re
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from agent.records import ApiKeyRow, Records
from agent.service import TriageService
from tests.integration.conftest import TRIAGE, cli_env
from tests.records_support import Api, copy_seeded, proposal_settings, running_api

TICKET = {"subject": "Password", "body": "I forgot my password and cannot log in.", "channel": "chat"}
# the least scope each endpoint needs; an endpoint missing here fails test_every_endpoint_is_listed
NEEDS = {
    ("POST", "/v1/classify"): "bot",
    ("POST", "/v1/tickets"): "bot",
    ("GET", "/v1/tickets"): "bot",
    ("GET", "/v1/tickets/{ticket_id}"): "bot",
    ("GET", "/v1/tickets/{ticket_id}/revisions"): "bot",
    ("POST", "/v1/tickets/{ticket_id}/messages"): "bot",
    ("POST", "/v1/tickets/{ticket_id}/escalations"): "bot",
    ("GET", "/v1/taxonomy"): "bot",
    ("POST", "/v1/tickets/{ticket_id}/reviews"): "lead",
    ("POST", "/v1/tickets/{ticket_id}/reclassifications"): "lead",
    ("GET", "/v1/review-queue"): "lead",
    ("GET", "/v1/stats"): "lead",
    ("GET", "/v1/stats/queue"): "lead",
    ("GET", "/v1/taxonomy/versions"): "lead",
    ("GET", "/v1/taxonomy/versions/{ref}"): "lead",
    ("POST", "/v1/taxonomy/migration"): "admin",
    ("POST", "/v1/taxonomy/migration/jobs"): "admin",
    ("GET", "/v1/taxonomy/migration/jobs"): "admin",
    ("GET", "/v1/taxonomy/migration/jobs/{job_id}"): "admin",
    ("POST", "/v1/keys"): "admin",
    ("GET", "/v1/keys"): "admin",
    ("DELETE", "/v1/keys/{key_id}"): "admin",
}
OPEN = {("GET", "/healthz")}
# stateless classification stores nothing and is open without a key by default (TRIAGE_ANONYMOUS_CLASSIFY);
# a key that is sent is still checked (tests/integration/test_api.py)
ANONYMOUS_BY_DEFAULT = {("POST", "/v1/classify")}
SCOPE_ORDER = ["bot", "lead", "admin"]


@pytest.fixture(scope="module")
def data_dir(seeded_data_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return copy_seeded(seeded_data_dir, tmp_path_factory.mktemp("auth") / "data")


@pytest.fixture(scope="module")
def api(data_dir: Path) -> Iterator[Api]:
    service = TriageService(proposal_settings(data_dir, api_workers=1, queue_limit=1))
    with running_api(service, f"sqlite:///{data_dir / 'triage.db'}") as running:
        yield running


def openapi_operations(api: Api) -> set[tuple[str, str]]:
    paths = api.client.get("/openapi.json").json()["paths"]
    return {(method.upper(), path) for path, item in paths.items() for method in item}


def call(api: Api, method: str, path: str, headers: dict[str, str]) -> int:
    url = path.replace("{ticket_id}", "tk_missing").replace("{key_id}", "key_missing").replace("{ref}", "missing@0")
    body = {"/v1/keys": {"scope": "bot", "name": "x"}, "/v1/tickets/{ticket_id}/reviews": {"action": "accept"},
            "/v1/tickets/{ticket_id}/messages": {"text": "hi"}}.get(path, TICKET if method == "POST" else None)
    return api.client.request(method, url, json=body if method == "POST" else None, headers=headers).status_code


def test_every_endpoint_is_listed_and_documented(api: Api) -> None:
    assert api.client.get("/docs").status_code == 200
    assert openapi_operations(api) == set(NEEDS) | OPEN


def test_healthz_is_open_and_everything_else_needs_a_key(api: Api) -> None:
    assert api.client.get("/healthz").status_code == 200
    for method, path in NEEDS:
        response = api.client.request(method, path.replace("{ticket_id}", "t").replace("{key_id}", "k").replace("{ref}", "r"), json={})
        if (method, path) in ANONYMOUS_BY_DEFAULT:
            assert response.status_code == 422, (method, path, response.text)  # past auth, to validation
            continue
        assert response.status_code == 401, (method, path, response.text)
        assert response.headers["WWW-Authenticate"] == "Bearer"
        assert "triage keys create" in response.json()["detail"]
    wrong = api.client.get("/v1/tickets", headers={"Authorization": "Bearer trg_not-a-key"})
    assert wrong.status_code == 401 and wrong.json()["error"] == "unauthorized"
    basic = api.client.get("/v1/tickets", headers={"Authorization": "Basic dXNlcjpwYXNz"})
    assert basic.status_code == 401


@pytest.mark.parametrize("scope", SCOPE_ORDER)
def test_each_scope_reaches_exactly_its_endpoints(api: Api, scope: str) -> None:
    for (method, path), needed in NEEDS.items():
        status = call(api, method, path, api.auth(scope))
        if SCOPE_ORDER.index(scope) < SCOPE_ORDER.index(needed):
            assert status == 403, (scope, method, path, status)
        else:
            assert status not in (401, 403), (scope, method, path, status)


def test_an_admin_manages_keys_over_the_api(api: Api) -> None:
    created = api.post("/v1/keys", {"scope": "lead", "name": "carol"}, scope="admin")
    assert created.status_code == 201
    secret, key_id = created.json()["key"], created.json()["id"]
    listed = api.get("/v1/keys", scope="admin").json()
    assert key_id in {k["id"] for k in listed} and secret not in str(listed) and all("key" not in k for k in listed)
    lead = {"Authorization": f"Bearer {secret}"}
    assert api.client.get("/v1/review-queue", headers=lead).status_code == 200
    assert api.client.delete(f"/v1/keys/{key_id}", headers=api.auth("admin")).json()["revoked_at"] is not None
    assert api.client.get("/v1/review-queue", headers=lead).status_code == 401
    assert api.client.delete("/v1/keys/key_missing", headers=api.auth("admin")).status_code == 404
    bad_scope = api.post("/v1/keys", {"scope": "root", "name": "x"}, scope="admin")
    assert bad_scope.status_code == 422 and "scope" in bad_scope.json()["detail"]


def test_a_lead_reads_the_served_taxonomy_versions_and_their_content(api: Api) -> None:
    in_force = api.get("/v1/taxonomy", scope="bot").json()
    versions = api.get("/v1/taxonomy/versions", scope="lead").json()
    ref = f"{in_force['name']}@{in_force['version']}"
    assert ref in [v["ref"] for v in versions]
    served = api.get(f"/v1/taxonomy/versions/{ref}", scope="lead")
    assert served.status_code == 200 and served.json() == in_force
    missing = api.get("/v1/taxonomy/versions/nope@9", scope="lead")
    assert missing.status_code == 404 and "GET /v1/taxonomy/versions" in missing.json()["detail"]


def test_the_reviewer_is_the_key_name(api: Api) -> None:
    ticket = api.post("/v1/tickets", TICKET).json()
    reviewed = api.post(f"/v1/tickets/{ticket['id']}/reviews", {"action": "accept"}, scope="admin").json()
    assert reviewed["current"]["actor"] == "user:admin-tester" and reviewed["current"]["review"]["reviewer"] == "admin-tester"
    assert ticket["created_by"] == "bot-tester"


def test_oversized_bodies_get_a_json_413(api: Api) -> None:
    big = b'{"body": "' + b"x" * 1_100_000 + b'"}'
    declared = api.client.post("/v1/tickets", content=big, headers={**api.auth("bot"), "Content-Type": "application/json"})
    assert declared.status_code == 413 and "TRIAGE_MAX_BODY_BYTES" in declared.json()["detail"]

    def chunks() -> Iterator[bytes]:  # no Content-Length: counted while it streams in
        yield b'{"body": "'
        for _ in range(20):
            yield b"y" * 60_000
        yield b'"}'

    streamed = api.client.post("/v1/tickets", content=chunks(), headers={**api.auth("bot"), "Content-Type": "application/json"})
    assert streamed.status_code == 413 and streamed.json()["error"] == "payload_too_large"


def test_bad_fields_get_a_422_that_names_them(api: Api) -> None:
    response = api.post("/v1/tickets", {"body": "x", "priority": "high"})
    body = response.json()
    assert response.status_code == 422 and body["error"] == "invalid_request" and "priority" in body["detail"]
    assert any(e["loc"][-1] == "priority" for e in body["errors"])
    not_json = api.client.post("/v1/tickets", content=b"{", headers={**api.auth("bot"), "Content-Type": "application/json"})
    assert not_json.status_code == 422 and "JSON" in not_json.text
    assert api.client.get("/nowhere").json() == {"error": "not_found", "detail": "no such path /nowhere; the endpoints are listed at /docs"}


def test_a_full_classifier_answers_503_with_retry_after(api: Api) -> None:
    """1 worker + 1 waiting slot (the fixture's settings): with both taken, the next request is refused at once."""
    pool = api.client.app.state.pool
    gate = threading.Event()
    blockers = [api.client.portal.start_task_soon(pool.run, gate.wait, 30) for _ in range(2)]
    try:
        busy = api.post("/v1/tickets", TICKET)
        assert busy.status_code == 503 and busy.json()["error"] == "busy"
        assert int(busy.headers["Retry-After"]) >= 1
        assert api.client.get("/healthz").status_code == 200  # reads are not stuck behind the classifier
        assert api.get("/v1/tickets").status_code == 200
    finally:
        gate.set()
        for blocker in blockers:
            blocker.result(timeout=30)
    assert api.post("/v1/tickets", TICKET).status_code == 201


def test_an_unexpected_error_is_a_json_500_without_a_traceback(data_dir: Path) -> None:
    from agent.api import create_app

    service = TriageService(proposal_settings(data_dir))
    app = create_app(service.settings, service, records=Records(f"sqlite:///{data_dir / 'boom.db'}"))

    @app.get("/boom")
    def boom() -> None:
        raise RuntimeError("secret internals")

    with TestClient(app, raise_server_exceptions=False) as client:
        response = client.get("/boom")
    assert response.status_code == 500 and response.json()["error"] == "internal_error"
    assert "secret internals" not in response.text and "Traceback" not in response.text
    assert re.search(r"logged as \[[0-9a-f]{8}\]", response.json()["detail"])


def test_cli_prints_a_new_key_once_and_stores_its_hash(tmp_path: Path) -> None:
    env = cli_env(tmp_path / "data")
    done = subprocess.run([TRIAGE, "keys", "create", "--scope", "lead", "--name", "dana"], env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    secret = done.stdout.strip()
    assert re.fullmatch(r"trg_[A-Za-z0-9_\-]{40,}", secret) and "shown once" in done.stderr
    listed = subprocess.run([TRIAGE, "keys", "list"], env=env, capture_output=True, text=True, timeout=120)
    assert "dana" in listed.stdout and secret not in listed.stdout
    records = Records(f"sqlite:///{tmp_path / 'data' / 'triage.db'}")
    try:
        with records.read() as session:
            row = session.query(ApiKeyRow).one()
        assert row.name == "dana" and row.scope == "lead" and secret not in row.key_hash
    finally:
        records.close()
