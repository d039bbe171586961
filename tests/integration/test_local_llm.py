"""The embedded llama.cpp server: real process, real HTTP, schema-constrained JSON, no orphans."""

from __future__ import annotations

import os
import signal
import socket
import time

import httpx
import pytest

from agent.contracts import TicketIn
from agent.llm import LLMClient, LLMUnavailable
from agent.local_llm import LocalLLMServer, free_port, packaged_gguf_path
from agent.nodes.validate import extract_json
from agent.service import make_llm
from agent.settings import REPO_ROOT, Settings
from agent.taxonomy import answer_model, load_taxonomy


def test_packaged_model_is_found_on_disk() -> None:
    path = packaged_gguf_path()
    assert path.suffix == ".gguf" and path.stat().st_size > 50_000_000


def test_schema_constrained_answers_validate_against_the_taxonomy(llm_server: LocalLLMServer) -> None:
    taxonomy = load_taxonomy(REPO_ROOT / "knowledge_base" / "taxonomies" / "default.yaml")
    model = answer_model(taxonomy, with_channel=True)
    client = LLMClient(base_url=llm_server.base_url, model="SmolLM2-135M-Instruct", structured="json_object")
    for text in ("My VPN keeps dropping every hour", "I want a copy of my last invoice", "Ransomware note on all file shares"):
        reply = client.chat(
            [{"role": "user", "content": f"Classify this ticket into service, channel, tier. Ticket: {text}"}],
            schema=model.model_json_schema(),
            max_tokens=160,
        )
        answer = model.model_validate(extract_json(reply.text))
        assert answer.service in taxonomy.axes["service"].ids
        assert reply.usage.prompt_tokens > 0 and reply.usage.completion_tokens > 0


def test_a_remote_llama_cpp_python_server_answers_with_the_default_structured_mode(llm_server: LocalLLMServer) -> None:
    """The same server run by someone else (`python -m llama_cpp.server`) and named by TRIAGE_LLM_BASE_URL: `auto`
    sends an endpoint json_schema, which llama-cpp-python answers with a 500, so every ticket fell back to the
    proposal. The client now asks it in json_object, and the answer validates."""
    taxonomy = load_taxonomy(REPO_ROOT / "knowledge_base" / "taxonomies" / "default.yaml")
    model = answer_model(taxonomy, with_channel=True)
    client = make_llm(Settings(llm_model="SmolLM2-135M-Instruct"), llm_server.base_url)  # no server: an endpoint
    assert client is not None and client.structured == "json_schema"
    reply = client.chat(
        [{"role": "user", "content": "Classify this ticket into service, channel, tier. Ticket: I want a copy of my last invoice"}],
        schema=model.model_json_schema(),
        max_tokens=160,
    )
    assert model.model_validate(extract_json(reply.text)).service in taxonomy.axes["service"].ids
    assert client.structured == "json_object" and client.health()["state"] == "closed"


def test_server_stops_with_its_owner_and_frees_the_port(tmp_path) -> None:  # noqa: ANN001
    server = LocalLLMServer(log_path=tmp_path / "llm.log").start()
    process = server._process
    assert process is not None and process.poll() is None
    port = server.port
    server.stop()
    assert process.poll() is not None
    with socket.socket() as sock:
        assert sock.connect_ex(("127.0.0.1", port)) != 0


def test_a_supervised_server_that_dies_is_started_again_on_its_port(tmp_path) -> None:  # noqa: ANN001
    """Killed from outside (the OOM killer's SIGKILL), the server came back only with a restart of `triage serve`;
    supervised, it is started again on the same port, so clients keep their base URL, and `stop` ends both."""
    server = LocalLLMServer(log_path=tmp_path / "llm.log", startup_timeout_s=60).start().supervise(interval_s=0.2)
    client = make_llm(Settings(llm_breaker_failures=1, llm_max_attempts=1), server.base_url, server=server)
    assert client is not None
    try:
        first = server._process
        assert first is not None and server.health() == {"running": True, "restarts": 0, "last_exit": None}
        os.kill(first.pid, signal.SIGKILL)
        first.wait()
        with pytest.raises(LLMUnavailable):  # while it is down: the request fails and opens the breaker
            client.chat([{"role": "user", "content": "hi"}], max_tokens=4)
        deadline = time.monotonic() + 90
        while server.health()["restarts"] == 0 and time.monotonic() < deadline:
            time.sleep(0.2)
        health = server.health()
        assert health["restarts"] == 1 and health["running"], health
        assert health["last_exit"] == f"exited with code {-signal.SIGKILL}"
        assert server._process is not None and server._process.pid != first.pid
        assert httpx.get(f"{server.base_url}/models", timeout=10).status_code == 200
        assert client.health()["state"] == "closed"  # the restart closed it: no cool-down after the server is back
        assert client.chat([{"role": "user", "content": "hi"}], max_tokens=4).usage.completion_tokens > 0
        watcher, second = server._watcher, server._process
    finally:
        server.stop()
    assert watcher is not None and not watcher.is_alive()
    assert second.poll() is not None and server.health()["running"] is False


def test_a_restart_that_fails_is_named_and_tried_again(tmp_path) -> None:  # noqa: ANN001
    """A server that cannot come back (its model file damaged meanwhile) is reported with the cause, and tried again
    after a back-off until it can."""
    server = LocalLLMServer(log_path=tmp_path / "llm.log", startup_timeout_s=60).start().supervise(interval_s=0.2)
    good, bogus = server.model_path, tmp_path / "damaged.gguf"
    bogus.write_bytes(b"not a model")
    try:
        server.model_path = bogus
        assert server._process is not None
        os.kill(server._process.pid, signal.SIGKILL)
        deadline = time.monotonic() + 60
        while not (server.health()["last_exit"] or "").startswith("restart failed") and time.monotonic() < deadline:
            time.sleep(0.2)
        health = server.health()
        assert not health["running"] and health["restarts"] == 0
        assert "restart failed: embedded LLM server exited with code 1: ValueError: Failed to load model" in health["last_exit"]
        server.model_path = good
        while not server.health()["running"] and time.monotonic() < deadline + 60:
            time.sleep(0.2)
        assert server.health()["running"] and server.health()["restarts"] == 1
    finally:
        server.stop()


def test_closed_port_is_unavailable_not_a_crash() -> None:
    client = LLMClient(base_url=f"http://127.0.0.1:{free_port()}/v1", model="x", max_attempts=2, timeout_s=2)
    with pytest.raises(LLMUnavailable, match="unreachable after 2 attempts"):
        client.chat([{"role": "user", "content": "hi"}])


def test_a_bad_gguf_path_says_so(tmp_path) -> None:  # noqa: ANN001
    bogus = tmp_path / "broken.gguf"
    bogus.write_bytes(b"not a model")
    with pytest.raises(RuntimeError, match="exited with code 1: ValueError: Failed to load model from file"):
        LocalLLMServer(model_path=bogus, log_path=tmp_path / "llm.log", startup_timeout_s=60).start()


def test_a_port_taken_before_the_server_binds_it_is_chosen_again(tmp_path) -> None:  # noqa: ANN001
    server = LocalLLMServer(log_path=tmp_path / "llm.log", startup_timeout_s=60)
    taken = server.port
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", taken))
        squatter.listen()
        with server:  # before: "exited with code 3", the whole start-up lost to a race on a port nobody named
            assert server.port != taken
            assert httpx.get(f"{server.base_url}/models", timeout=10).status_code == 200


def test_ticket_contract_rejects_unknown_fields() -> None:
    with pytest.raises(ValueError):
        TicketIn.model_validate({"subject": "x", "body": "y", "priority": "urgent"})
