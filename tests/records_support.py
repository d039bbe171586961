"""Helpers for the lifecycle, auth, durability and Chroma-server tests: the real parts, set up quickly."""

from __future__ import annotations

import shutil
import subprocess
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from fastapi.testclient import TestClient

from agent.api import create_app
from agent.auth import SCOPES, create_key
from agent.local_llm import ServerExited, wait_until_ok
from agent.records import Records
from agent.service import TriageService
from agent.settings import REPO_ROOT, Settings

TAXONOMY_PATH = REPO_ROOT / "knowledge_base" / "taxonomies" / "default.yaml"


def copy_seeded(seeded_data_dir: Path, dest: Path) -> Path:
    """A private copy of the seeded store (Chroma + trained head), for tests that write to it or serve from it."""
    dest.mkdir(parents=True, exist_ok=True)
    for part in ("chroma", "models"):
        shutil.copytree(seeded_data_dir / part, dest / part)
    return dest


def proposal_settings(data_dir: Path, **extra: object) -> Settings:
    return Settings(data_dir=data_dir, taxonomy_path=TAXONOMY_PATH, mode="proposal", **extra)


def database_url(kind: str, request: pytest.FixtureRequest, tmp_dir: Path) -> str:
    if kind == "sqlite":
        return f"sqlite:///{tmp_dir / 'triage.db'}"
    return request.getfixturevalue("postgres").create_database()


@dataclass
class Api:
    """A real app around a real service and real records, with one key per scope."""

    client: TestClient
    records: Records
    keys: dict[str, str]

    def auth(self, scope: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.keys[scope]}"}

    def post(self, path: str, body: dict, scope: str = "bot", **headers: str) -> httpx.Response:
        return self.client.post(path, json=body, headers={**self.auth(scope), **headers})

    def get(self, path: str, scope: str = "bot", **params: object) -> httpx.Response:
        return self.client.get(path, params=params, headers=self.auth(scope))


@contextmanager
def running_api(service: TriageService, url: str, settings: Settings | None = None) -> Iterator[Api]:
    records = Records(url)
    records.upgrade()
    keys = {scope: create_key(records, scope=scope, name=f"{scope}-tester")[0] for scope in SCOPES}
    try:
        with TestClient(create_app(settings or service.settings, service, records=records)) as client:
            yield Api(client, records, keys)
    finally:
        records.close()


def wait_http(url: str, *, timeout_s: float = 120, process: subprocess.Popen[bytes] | None = None) -> None:
    try:
        if wait_until_ok(url, timeout_s, process=process):
            return
    except ServerExited as exc:
        raise AssertionError(f"the server exited with {exc.returncode} before answering {url}") from None
    raise AssertionError(f"{url} did not answer within {timeout_s} s")


def uvicorn_command(port: int) -> list[str]:
    return [sys.executable, "-m", "uvicorn", "agent.api:create_app", "--factory", "--host", "127.0.0.1",
            "--port", str(port), "--log-level", "warning"]


AppOn = Callable[[Path], TestClient]


def app_factory(tmp_path: Path) -> tuple[AppOn, Records, dict[str, str]]:
    """(app on a taxonomy file, the records, one key per scope) over one data directory: the real app in proposal
    mode with the hashing embedder and an on-disk Chroma holding the seed tickets and articles, so a test can serve
    one taxonomy version, then the next, over the same history. The caller closes the records."""
    from agent.store import VectorStore, make_client
    from tests.conftest import ARTICLES, SEED
    from tests.fakes import HashEmbedder

    records = Records(f"sqlite:///{tmp_path / 'triage.db'}")
    records.upgrade()
    keys = {scope: create_key(records, scope=scope, name=f"{scope}-tester")[0] for scope in SCOPES}
    embedder = HashEmbedder()

    def app_on(taxonomy: Path) -> TestClient:
        settings = Settings(data_dir=tmp_path / "data", taxonomy_path=taxonomy, mode="proposal")
        store = VectorStore(make_client(path=settings.chroma_dir), embedder)
        store.upsert_tickets(SEED)
        store.upsert_articles(ARTICLES)
        return TestClient(create_app(settings, TriageService(settings, embedder=embedder, store=store), records=records))

    return app_on, records, keys
