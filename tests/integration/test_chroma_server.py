"""Chroma in server mode: a real `chroma run` on loopback, `TRIAGE_CHROMA_URL` set, ingest, classify and a
review that teaches, all through HTTP to that server (nothing in a local PersistentClient)."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import chromadb
import pytest
from chromadb.config import Settings as ChromaSettings

from agent.local_llm import free_port
from agent.service import TriageService
from agent.settings import REPO_ROOT
from tests.integration.conftest import TRIAGE, cli_env
from tests.records_support import proposal_settings, running_api, wait_http

CHROMA = str(Path(sys.executable).parent / "chroma")
SEED_ROWS = 150
ARTICLE_ROWS = 20


@contextmanager
def chroma_server(path: Path) -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    """A real `chroma run` on a free loopback port: its URL and process, stopped on exit."""
    port = free_port()
    log = (path / "server.log").open("wb")
    process = subprocess.Popen(
        [CHROMA, "run", "--path", str(path / "db"), "--host", "127.0.0.1", "--port", str(port)], stdout=log, stderr=subprocess.STDOUT
    )
    try:
        wait_http(f"http://127.0.0.1:{port}/api/v2/heartbeat", timeout_s=60, process=process)
        yield f"http://127.0.0.1:{port}", process
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
        log.close()


@pytest.fixture(scope="module")
def chroma_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with chroma_server(tmp_path_factory.mktemp("chroma-server")) as (url, _):
        yield url


def head(source: Path, dest: Path, rows: int) -> Path:
    lines = [line for line in source.read_text(encoding="utf-8").splitlines() if line.strip()][:rows]
    dest.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return dest


def test_ingest_classify_and_learn_against_a_chroma_server(chroma_url: str, tmp_path: Path) -> None:
    kb = REPO_ROOT / "knowledge_base"
    seed = head(kb / "seed" / "tickets.jsonl", tmp_path / "seed.jsonl", SEED_ROWS)
    articles = head(kb / "articles" / "articles.jsonl", tmp_path / "articles.jsonl", ARTICLE_ROWS)
    data_dir = tmp_path / "data"
    env = cli_env(data_dir, TRIAGE_CHROMA_URL=chroma_url)
    done = subprocess.run(
        [TRIAGE, "ingest", "--seed", str(seed), "--articles", str(articles)], env=env, capture_output=True, text=True, timeout=600
    )
    assert done.returncode == 0, done.stderr
    assert f"tickets: +{SEED_ROWS}" in done.stdout
    assert not (data_dir / "chroma").exists(), "server mode must not create a local store"

    remote = chromadb.HttpClient(host="127.0.0.1", port=int(chroma_url.rsplit(":", 1)[1]), settings=ChromaSettings(anonymized_telemetry=False))
    assert remote.get_collection("tickets").count() == SEED_ROWS
    assert remote.get_collection("articles").count() == ARTICLE_ROWS

    classified = subprocess.run(
        [TRIAGE, "classify", "--mode", "proposal", "--json", "--subject", "Charged twice", "--body", "My card was charged twice, refund one please."],
        env=env, capture_output=True, text=True, timeout=300,
    )
    assert classified.returncode == 0, classified.stderr
    seeded_ids = {json.loads(line)["id"] for line in seed.read_text().splitlines()}
    evidence = json.loads(classified.stdout)["evidence"]["tickets"]
    assert evidence and {e["id"] for e in evidence} <= seeded_ids

    service = TriageService(proposal_settings(data_dir, chroma_url=chroma_url))
    with running_api(service, f"sqlite:///{data_dir / 'triage.db'}") as api:
        assert api.client.get("/healthz").json()["store"] == {"tickets": SEED_ROWS, "articles": ARTICLE_ROWS}
        ticket = api.post("/v1/tickets", {"subject": "VPN", "body": "Nobody in the office can reach the VPN since 9am."}).json()
        assert ticket["current"]["classification"]["evidence"]["tickets"]
        reviewed = api.post(f"/v1/tickets/{ticket['id']}/reviews", {"action": "edit", "labels": {"service": "network", "tier": "L3"}}, scope="lead")
        assert reviewed.status_code == 201, reviewed.text
    taught = remote.get_collection("tickets").get(ids=[ticket["id"]], include=["metadatas"])
    assert taught["metadatas"][0]["verified"] is True and json.loads(taught["metadatas"][0]["labels"])["service"] == "network"


def test_a_chroma_server_that_goes_down_while_serving_is_a_503_naming_it(tmp_path: Path) -> None:
    """The API opens the store once, at start-up; a Chroma server that stopped afterwards made every classify,
    new ticket and message a 500 'an unexpected error, report it'. It is now the 503 + Retry-After of a part that is
    down, naming the server, with nothing stored; /healthz names it too."""
    kb = REPO_ROOT / "knowledge_base"
    data_dir = tmp_path / "data"
    with chroma_server(tmp_path) as (url, process):
        service = TriageService(proposal_settings(data_dir, chroma_url=url))
        service.ingest(seed_path=head(kb / "seed" / "tickets.jsonl", tmp_path / "seed.jsonl", 40),
                       articles_path=head(kb / "articles" / "articles.jsonl", tmp_path / "articles.jsonl", 5), progress=False)
        with running_api(service, f"sqlite:///{data_dir / 'triage.db'}") as api:
            ticket = api.post("/v1/tickets", {"subject": "VPN", "body": "Nobody can reach the VPN."}).json()
            process.send_signal(signal.SIGTERM)
            process.wait(timeout=30)
            answers = [
                api.client.post("/v1/classify", json={"body": "The VPN is down"}),
                api.post("/v1/tickets", {"subject": "VPN", "body": "The VPN is down again."}),
                api.post(f"/v1/tickets/{ticket['id']}/messages", {"text": "Still down."}),
            ]
            for answer in answers:
                assert answer.status_code == 503 and answer.headers["Retry-After"] == "5", answer.text
                body = answer.json()
                assert body["error"] == "store_unavailable" and f"the Chroma server at {url} did not answer" in body["detail"]
            assert api.get(f"/v1/tickets/{ticket['id']}").json()["messages"] == []  # nothing stored
            assert [t["id"] for t in api.get("/v1/tickets").json()["items"]] == [ticket["id"]]
            health = api.client.get("/healthz").json()
            assert health["status"] == "degraded" and health["problems"][0].startswith(f"vector store (the Chroma server at {url}): ")
