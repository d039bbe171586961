"""UI test fixtures: one real API (uvicorn subprocess, proposal mode, a private copy of the seeded store, real
SQLite records) for the whole session, lead/bot keys made by the real `triage keys create`, and helpers to
run the Streamlit app with `AppTest` against it.

The seeded store is the one `tests/integration` built in this session when it ran first (ingest takes minutes
on 2 cores; it is done once), else a fresh `triage ingest`.
"""

from __future__ import annotations

import csv
import json
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest
from streamlit.testing.v1 import AppTest

from agent.local_llm import ServerExited, free_port, stop_process, wait_until_ok
from agent.settings import REPO_ROOT
from tests.integration.conftest import TRIAGE, cli_env
from tests.records_support import copy_seeded
from tests.ui.tickets import TICKETS

APP = REPO_ROOT / "ui" / "app.py"
EMPTY_FIRST = "unseeded_api"  # tests using this fixture run before any test seeds tickets


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Within tests/ui only: the tests of the store without tickets first (seeding is one-way), the rest in order."""

    def empty_store(item: pytest.Item) -> bool:
        names = getattr(item, "fixturenames", ())
        return EMPTY_FIRST in names and "api" not in names

    slots = [i for i, item in enumerate(items) if "tests/ui/" in str(item.fspath).replace(os.sep, "/")]
    ui = [items[i] for i in slots]
    ordered = [it for it in ui if empty_store(it)] + [it for it in ui if not empty_store(it)]
    for slot, item in zip(slots, ordered, strict=True):
        items[slot] = item


def wait_http(url: str, process: subprocess.Popen[bytes], log: Path, timeout: float = 180.0) -> None:
    try:
        if wait_until_ok(url, timeout, process=process, interval_s=0.5):
            return
    except ServerExited as exc:
        pytest.fail(f"{url} exited with {exc.returncode}:\n{log.read_text(errors='replace')[-3000:]}")
    pytest.fail(f"{url} did not come up in {timeout:.0f} s:\n{log.read_text(errors='replace')[-3000:]}")


def stop(process: subprocess.Popen[bytes]) -> None:
    """A test server: more grace than the app gives its children, as a shared CI machine is slow to tear down."""
    stop_process(process, grace_s=20)


@pytest.fixture(scope="session")
def seeded_store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A seeded store (Chroma + trained head): TRIAGE_TEST_SEEDED_DIR if set (a developer's already seeded
    data dir, to skip the ingest), else the integration tests' one if this session has it, else a new one."""
    given = os.environ.get("TRIAGE_TEST_SEEDED_DIR")
    if given:
        return Path(given)
    for candidate in sorted(tmp_path_factory.getbasetemp().glob("seeded*/data")):
        if any((candidate / "models").glob("proposal-*.pkl")):
            return candidate
    data_dir = tmp_path_factory.mktemp("seeded") / "data"
    done = subprocess.run([TRIAGE, "ingest"], env=cli_env(data_dir), capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr
    return data_dir


@dataclass
class LiveApi:
    """The API under test: its URL, its data directory, keys by name, and the tickets seeded so far."""

    url: str
    data_dir: Path
    keys: dict[str, str] = field(default_factory=dict)
    tickets: list[dict] = field(default_factory=list)

    def key(self, scope: str, name: str | None = None) -> str:
        name = name or f"ui-{scope}"
        if name not in self.keys:
            done = subprocess.run(
                [TRIAGE, "keys", "create", "--scope", scope, "--name", name], env=cli_env(self.data_dir), capture_output=True, text=True, timeout=120
            )
            assert done.returncode == 0, done.stderr
            self.keys[name] = done.stdout.strip().splitlines()[-1]
        return self.keys[name]

    def http(self, scope: str = "lead") -> httpx.Client:
        return httpx.Client(base_url=self.url, headers={"Authorization": f"Bearer {self.key(scope)}"}, timeout=60)


@pytest.fixture(scope="session")
def unseeded_api(seeded_store: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveApi]:
    """The real API on a free port with a copy of the seeded store and empty records (no ticket yet).

    Its calibration auto-applies only above 0.99, so most seeded tickets wait for a lead whatever thresholds
    the shipped calibration file holds (the queue is what these tests look at)."""
    data_dir = copy_seeded(seeded_store, tmp_path_factory.mktemp("ui-api") / "data")
    calibration = data_dir.parent / "calibration.json"
    calibration.write_text(json.dumps({"thresholds": {}, "default": 0.99}))
    with serving(data_dir, TRIAGE_CALIBRATION_PATH=str(calibration)) as live:
        yield live


@contextmanager
def serving(data_dir: Path, **env: str) -> Iterator[LiveApi]:
    """A real API (uvicorn subprocess, proposal mode) on a free port over `data_dir`; `env` sets TRIAGE_* variables."""
    port = free_port()
    log = data_dir.parent / f"api-{port}.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "uvicorn", "--factory", "agent.api:create_app", "--host", "127.0.0.1", "--port", str(port)],
            cwd=REPO_ROOT, env=cli_env(data_dir, TRIAGE_MODE="proposal", **env), stdout=out, stderr=subprocess.STDOUT,
        )
    try:
        wait_http(f"http://127.0.0.1:{port}/healthz", process, log)
        yield LiveApi(url=f"http://127.0.0.1:{port}", data_dir=data_dir)
    finally:
        stop(process)


@pytest.fixture(scope="session")
def api(unseeded_api: LiveApi) -> LiveApi:
    """The same API with the tickets of tests/ui/tickets.py posted through `POST /v1/tickets` (bot key)."""
    if not unseeded_api.tickets:
        with unseeded_api.http("bot") as http:
            for ticket in TICKETS:
                response = http.post("/v1/tickets", json=ticket)
                assert response.status_code == 201, response.text
                unseeded_api.tickets.append(response.json())
    return unseeded_api


SERVICES = ("billing_payments", "returns_refunds", "cancellation_retention", "orders_delivery", "account_management", "technical_support")


def _write(path: Path, rows: list[dict]) -> Path:
    with path.open("w", encoding="utf-8", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=["id", "subject", "body", "service", "tier"])
        writer.writeheader()
        writer.writerows(rows)
    return path


@pytest.fixture(scope="session")
def reports(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Two runs of `triage eval` on the same split with different precision targets, under one reports root."""
    per_service: dict[str, list[dict]] = {s: [] for s in SERVICES}
    for line in (REPO_ROOT / "knowledge_base" / "seed" / "tickets.jsonl").read_text(encoding="utf-8").splitlines():
        row = json.loads(line)
        service = row["labels"].get("service")
        if service in per_service and len(per_service[service]) < 12 and row["labels"].get("tier"):
            per_service[service].append({"id": row["id"], "subject": row.get("subject", ""), "body": row["body"], "service": service, "tier": row["labels"]["tier"]})
    base = tmp_path_factory.mktemp("evals")
    train = _write(base / "train.csv", [r for rows in per_service.values() for r in rows[:6]])
    test = _write(base / "test.csv", [r for rows in per_service.values() for r in rows[6:]])
    root = base / "reports"
    for name, target in (("run-a", "0.9"), ("run-b", "0.7")):
        done = subprocess.run(
            [sys.executable, "-m", "agent.cli", "eval", "--train", str(train), "--test", str(test), "--text", "subject,body",
             "--label", "service=service", "--label", "tier=tier", "--mode", "proposal", "--target-precision", target,
             "--out", str(root / name), "--quiet"],
            capture_output=True, text=True, timeout=600,
        )
        assert done.returncode == 0, done.stderr
    return root


def app_test(monkeypatch: pytest.MonkeyPatch, url: str, key: str | None, **env: str) -> AppTest:
    """The whole app (ui/app.py with its navigation) pointed at `url` with `key`; `env` sets more TRIAGE_* variables."""
    monkeypatch.setenv("TRIAGE_API_URL", url)
    if key is None:
        monkeypatch.delenv("TRIAGE_API_KEY", raising=False)
    else:
        monkeypatch.setenv("TRIAGE_API_KEY", key)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    return AppTest.from_file(str(APP), default_timeout=60)


def run_page(at: AppTest, page: str | None = None, **query: str) -> AppTest:
    """Run the app once (navigation needs it), then the page, and fail on any exception shown."""
    at.run()
    if page is not None:
        at.switch_page(page)
        for name, value in query.items():
            at.query_params[name] = value
        at.run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def texts(at: AppTest) -> str:
    """Everything a lead reads on the page (markdown, captions, alerts, titles), markdown escapes removed."""
    parts = []
    for kind in ("title", "header", "subheader", "markdown", "caption", "error", "warning", "info", "success"):
        parts += [str(e.value) for e in getattr(at, kind)]
    return re.sub(r"\\([\\`*_{}\[\]()#+\-.!|<>$~:=&])", r"\1", "\n".join(parts))
