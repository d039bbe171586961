"""`triage` as a user runs it: a real subprocess, the embedded LLM started and stopped by the command."""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import time
from pathlib import Path

import httpx
import pytest

from agent.local_llm import free_port
from tests.integration.conftest import TRIAGE, cli_env

ARGS = ["classify", "--subject", "Charged twice", "--body", "My card was charged twice for order 1234, please refund one.", "--json"]


def run_cli(args: list[str], data_dir: Path, timeout: int = 300, prefix: list[str] | None = None, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*(prefix or []), TRIAGE, *args], env=cli_env(data_dir, **env), capture_output=True, text=True, timeout=timeout)


def test_classify_json_with_the_embedded_llm(seeded_data_dir: Path) -> None:
    done = run_cli([*ARGS, "--channel", "email"], seeded_data_dir)
    assert done.returncode == 0, done.stderr
    body = json.loads(done.stdout)
    assert body["labels"]["service"]["label"] in {"billing_payments", "returns_refunds"}
    assert body["labels"]["channel"]["source"] == "intake"
    assert "llm:" in body["model"]


# a new network namespace has only a loopback interface, and it starts down: bring it up, nothing else
OFFLINE = ["unshare", "-rn", "sh", "-c", 'ip link set lo up && exec "$0" "$@"']


@pytest.mark.skipif(shutil.which("unshare") is None or shutil.which("ip") is None, reason="needs util-linux and iproute2")
def test_classify_works_with_networking_cut_off(seeded_data_dir: Path) -> None:
    probe = subprocess.run([*OFFLINE, "python3", "-c", "import socket; socket.create_connection(('1.1.1.1', 53), 2)"], capture_output=True)
    assert probe.returncode != 0, "the namespace should have no route out"
    done = run_cli(ARGS, seeded_data_dir, prefix=OFFLINE)
    assert done.returncode == 0, done.stderr
    body = json.loads(done.stdout)
    assert body["labels"]["service"]["label"] in {"billing_payments", "returns_refunds"}
    assert not any("unreachable" in w for w in body["warnings"])


def test_unreachable_llm_still_exits_0_with_proposal_labels(seeded_data_dir: Path) -> None:
    closed = f"http://127.0.0.1:{free_port()}/v1"
    done = run_cli(ARGS, seeded_data_dir, TRIAGE_LLM_BASE_URL=closed, TRIAGE_LLM_MAX_ATTEMPTS="2")
    assert done.returncode == 0, done.stderr
    body = json.loads(done.stdout)
    assert body["decision"] == "needs_review"
    assert body["labels"]["service"]["source"] == "proposal"
    assert any("LLM failed" in w and "unreachable after" in w for w in body["warnings"])


def test_file_and_stdin_input(seeded_data_dir: Path, tmp_path: Path) -> None:
    ticket = tmp_path / "ticket.json"
    ticket.write_text(json.dumps({"subject": "Password", "body": "I forgot my password and cannot log in", "channel": "chat"}))
    done = run_cli(["classify", "--file", str(ticket), "--json", "--mode", "proposal"], seeded_data_dir)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["labels"]["channel"]["label"] == "chat"
    piped = subprocess.run(
        [TRIAGE, "classify", "--json", "--mode", "proposal"], input="The VPN is down for the whole office",
        env=cli_env(seeded_data_dir), capture_output=True, text=True, timeout=300,
    )
    assert piped.returncode == 0, piped.stderr
    assert json.loads(piped.stdout)["labels"]["channel"]["source"] != "intake"


def test_human_output_and_clear_errors(seeded_data_dir: Path, tmp_path: Path) -> None:
    done = run_cli(["classify", "--subject", "Refund", "--body", "Please refund my order", "--mode", "proposal"], seeded_data_dir)
    assert done.returncode == 0 and "decision:" in done.stdout and "route:" in done.stdout
    bad_channel = run_cli(["classify", "--body", "hi", "--channel", "pigeon"], seeded_data_dir)
    assert bad_channel.returncode == 2 and "unknown channel 'pigeon'" in bad_channel.stderr
    empty = run_cli(["classify", "--body", " "], seeded_data_dir)
    assert empty.returncode == 2 and "no text" in empty.stderr
    broken = tmp_path / "broken.yaml"
    broken.write_text("name: x\naxes: [")
    invalid = run_cli(["taxonomy", "validate", str(broken)], seeded_data_dir)
    assert invalid.returncode == 2 and "not valid YAML" in invalid.stderr
    # a new version's migration is checked against the version it follows, offline
    from evals.migration_demo import DEFAULT, DEMO_STEPS, STEPS, write_v2

    good = run_cli(["taxonomy", "validate", str(write_v2(tmp_path / "v2.yaml", steps=DEMO_STEPS)), "--previous", str(DEFAULT)], seeded_data_dir)
    assert good.returncode == 0, good.stderr
    assert "service cloud: merge -> infrastructure" in good.stdout
    assert "service technical_support: split -> one of ['software_application', 'hardware'] (2 rules, otherwise the agent chooses)" in good.stdout
    incomplete = run_cli(["taxonomy", "validate", str(write_v2(tmp_path / "v2-bad.yaml", steps=STEPS[:2])), "--previous", str(DEFAULT)], seeded_data_dir)
    assert incomplete.returncode == 2 and "['technical_support', 'feedback_complaints']" in incomplete.stderr
    assert "Traceback" not in bad_channel.stderr + empty.stderr + invalid.stderr + incomplete.stderr


def test_serve_answers_curl_and_ctrl_c_stops_everything(seeded_data_dir: Path) -> None:
    created = run_cli(["keys", "create", "--scope", "bot", "--name", "curl"], seeded_data_dir)
    assert created.returncode == 0, created.stderr
    bot_key = created.stdout.strip()
    port = free_port()
    process = subprocess.Popen(
        [TRIAGE, "serve", "--port", str(port)], env=cli_env(seeded_data_dir), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    try:
        base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"{base}/healthz", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.5)
        response = httpx.post(
            f"{base}/v1/classify",
            json={"subject": "Charged twice", "body": "My card was charged twice for order 1234, please refund one.", "channel": "email"},
            headers={"Authorization": f"Bearer {bot_key}"},
            timeout=120,
        )
        assert response.status_code == 200, response.text
        assert response.json()["labels"]["channel"]["source"] == "intake"
        children = subprocess.run(["pgrep", "-P", str(process.pid)], capture_output=True, text=True).stdout.split()
        assert children, "the embedded LLM server should run as a child of `triage serve`"
    finally:
        process.send_signal(signal.SIGINT)
        process.wait(timeout=60)
    time.sleep(1)
    for pid in children:
        assert not Path(f"/proc/{pid}").exists() or "zombie" in Path(f"/proc/{pid}/status").read_text().lower()


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_a_signal_during_start_up_stops_it_there(tmp_path: Path, sig: signal.Signals) -> None:
    """An empty data directory is seeded at start-up (minutes on 2 cores); before, a signal then was held until the
    seeding, the head's training and the port's binding were done, and only then honoured."""
    data_dir = tmp_path / "data"
    process = subprocess.Popen(
        [TRIAGE, "serve", "--no-ui", "--port", str(free_port())], env=cli_env(data_dir), stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT, text=True, preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and not (data_dir / "chroma" / "chroma.sqlite3").exists():
            time.sleep(0.5)  # the LLM is up and the seeding has begun
        time.sleep(2)
        children = subprocess.run(["pgrep", "-P", str(process.pid)], capture_output=True, text=True).stdout.split()
        assert children, "the embedded LLM server should run as a child of `triage serve`"
        process.send_signal(sig)
        output, _ = process.communicate(timeout=300)
    finally:
        process.kill()
    assert process.returncode == 128 + sig, output
    assert "stopped during start-up" in output and "Application startup complete" not in output, output[-2000:]
    assert "Traceback" not in output
    time.sleep(1)
    for pid in children:
        assert not Path(f"/proc/{pid}").exists() or "zombie" in Path(f"/proc/{pid}/status").read_text().lower()


def test_ctrl_c_stops_serve_in_seconds_while_a_request_waits_on_a_hanging_llm(seeded_data_dir: Path) -> None:
    """Ctrl-C on `triage serve` while a ticket waited on a slow LLM waited for that request (uvicorn's graceful
    shutdown has no limit by default), up to the LLM client's attempts x timeout: minutes, with the port, the UI and
    the embedded LLM held. It now gives in-flight requests a few seconds, then stops."""
    import socket
    import threading

    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(16)
    held: list[socket.socket] = []

    def accept_and_hang() -> None:  # an OpenAI-compatible endpoint that takes the request and never answers
        while True:
            try:
                held.append(listener.accept()[0])
            except OSError:
                return

    threading.Thread(target=accept_and_hang, daemon=True).start()
    hanging = f"http://127.0.0.1:{listener.getsockname()[1]}/v1"
    port = free_port()
    process = subprocess.Popen(
        [TRIAGE, "serve", "--no-ui", "--port", str(port)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        env=cli_env(seeded_data_dir, TRIAGE_LLM_BASE_URL=hanging, TRIAGE_LLM_TIMEOUT_S="120", TRIAGE_LLM_MAX_ATTEMPTS="3"),
    )
    try:
        base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"{base}/healthz", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.5)
        before = len(held)

        def classify() -> None:
            try:
                httpx.post(f"{base}/v1/classify", json={"subject": "VPN", "body": "The VPN drops every hour."}, timeout=600)
            except httpx.HTTPError:
                pass

        threading.Thread(target=classify, daemon=True).start()
        while len(held) == before and time.monotonic() < deadline:
            time.sleep(0.1)  # the request reached the LLM and waits there
        assert len(held) > before, "the classify request should have reached the hanging LLM"
        process.send_signal(signal.SIGINT)
        started = time.monotonic()
        output, _ = process.communicate(timeout=90)
        stopped_in = time.monotonic() - started
    finally:
        process.kill()
        listener.close()
        for conn in held:
            conn.close()
    assert stopped_in < 30, f"serve took {stopped_in:.0f} s to stop after Ctrl-C\n{output[-2000:]}"
    assert "Traceback" not in output, output[-3000:]
