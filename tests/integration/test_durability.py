"""`kill -9` of the API in the middle of a burst of writes loses nothing it acknowledged.

A real uvicorn process (proposal mode, the default SQLite records) takes concurrent
`POST /v1/tickets`; once enough are acknowledged it is killed with SIGKILL while requests are still in flight.
After a restart every 201-acknowledged ticket is there with its revision, unchanged, and resending the
unanswered requests with their Idempotency-Key creates no duplicate.
"""

from __future__ import annotations

import os
import signal
import subprocess
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
from sqlalchemy import text

from agent.auth import create_key
from agent.local_llm import free_port
from agent.records import Records
from tests.integration.conftest import cli_env
from tests.records_support import copy_seeded, database_url, uvicorn_command, wait_http

CLIENTS = 12
KILL_AFTER = 40  # acknowledged tickets before the kill
TOPICS = ["my card was charged twice", "the VPN is down", "I forgot my password", "my parcel never arrived",
          "the app crashes on start", "please cancel my subscription"]


def start(env: dict[str, str], port: int, log: Path) -> subprocess.Popen:
    process = subprocess.Popen(uvicorn_command(port), env=env, stdout=log.open("ab"), stderr=subprocess.STDOUT)
    wait_http(f"http://127.0.0.1:{port}/healthz", process=process)
    return process


# SQLite is the default and the backend whose durability rests on our settings (WAL, synchronous=FULL, commit
# before the answer); PostgreSQL works the same way here (`-k durability` with "postgresql" added takes ~30 s more)
@pytest.mark.parametrize("backend", ["sqlite"])
def test_kill_9_mid_burst_loses_no_acknowledged_write(
    backend: str, seeded_data_dir: Path, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    data_dir = copy_seeded(seeded_data_dir, tmp_path / "data")
    url = database_url(backend, request, data_dir) if backend == "postgresql" else None
    extra = {"TRIAGE_MODE": "proposal", "TRIAGE_API_WORKERS": "2", **({"TRIAGE_DATABASE_URL": url} if url else {})}
    env = cli_env(data_dir, **extra)
    records = Records(url or f"sqlite:///{data_dir / 'triage.db'}")
    records.upgrade()
    key, _ = create_key(records, scope="bot", name="burst")
    records.close()

    port = free_port()
    base = f"http://127.0.0.1:{port}"
    log = tmp_path / "uvicorn.log"
    server = start(env, port, log)
    acked: dict[str, dict] = {}  # idempotency key -> the 201 body
    unanswered: dict[str, dict] = {}  # idempotency key -> the request body
    lock = threading.Lock()
    killed = threading.Event()

    def client(worker: int) -> None:
        with httpx.Client(base_url=base, headers={"Authorization": f"Bearer {key}"}, timeout=60) as http:
            for i in range(10_000):
                if killed.is_set():
                    return
                idem = f"w{worker}-{i}"
                body = {"subject": f"burst {worker}-{i}", "body": f"{TOPICS[(worker + i) % len(TOPICS)]} (#{worker}-{i})"}
                try:
                    response = http.post("/v1/tickets", json=body, headers={"Idempotency-Key": idem})
                except httpx.HTTPError:
                    with lock:
                        unanswered[idem] = body
                    return
                if response.status_code != 201:
                    with lock:
                        unanswered[idem] = body
                    continue
                with lock:
                    acked[idem] = response.json()
                    if len(acked) >= KILL_AFTER and not killed.is_set():
                        os.kill(server.pid, signal.SIGKILL)  # mid-burst: the other clients are waiting on answers
                        killed.set()

    try:
        with ThreadPoolExecutor(CLIENTS) as pool:
            list(pool.map(client, range(CLIENTS)))
        assert killed.is_set(), "the burst ended before the kill"
        assert server.wait(timeout=30) == -signal.SIGKILL
        assert unanswered, "some requests should have been in flight at the kill"

        server = start(env, port, log)
        with httpx.Client(base_url=base, headers={"Authorization": f"Bearer {key}"}, timeout=60) as http:
            for idem, answer in acked.items():
                ticket = http.get(f"/v1/tickets/{answer['id']}")
                assert ticket.status_code == 200, (idem, ticket.text)
                revisions = http.get(f"/v1/tickets/{answer['id']}/revisions").json()
                assert [(r["seq"], r["reason"]) for r in revisions] == [(1, "new_ticket")]
                assert revisions[0]["classification"] == answer["current"]["classification"]
                assert ticket.json()["current_seq"] == 1 and ticket.json()["labels"] == answer["labels"]
            # what was never answered is safe to resend: committed ones come back, the others are created once
            for idem, body in unanswered.items():
                resent = http.post("/v1/tickets", json=body, headers={"Idempotency-Key": idem})
                assert resent.status_code == 201, resent.text
            total = len(http.get("/v1/tickets", params={"limit": 200}).json()["items"])
        assert total == len(acked) + len(unanswered)
    finally:
        if server.poll() is None:
            server.send_signal(signal.SIGINT)
            try:
                server.wait(timeout=30)
            except subprocess.TimeoutExpired:
                server.kill()
    if backend == "sqlite":
        check = Records(f"sqlite:///{data_dir / 'triage.db'}")
        with check.engine.connect() as conn:
            assert conn.exec_driver_sql("PRAGMA integrity_check").scalar() == "ok"
            assert conn.execute(text("SELECT count(*) FROM revisions")).scalar() == total
        check.close()
