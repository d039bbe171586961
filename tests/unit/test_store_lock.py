"""One writing process per local vector store: a second `ingest`, `serve` or `taxonomy migrate --commit` on the same
data directory is refused with the holder named, instead of both writing Chroma's index (which loses entries)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from agent.cli import app
from agent.local_llm import free_port
from agent.settings import Settings
from agent.store_lock import StoreBusy, lock_path, store_writer
from evals.migration_demo import write_v2
from tests.unit.test_serve_startup import assert_error, env, runner  # noqa: F401 - fixtures

HOLD = """
import sys, time
from agent.settings import Settings
from agent.store_lock import store_writer
with store_writer(Settings(data_dir=sys.argv[1]), "triage serve"):
    print("held", flush=True)
    time.sleep(60)
"""


def test_a_second_writer_is_told_who_holds_the_store(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path / "data")
    with store_writer(settings, "triage serve"):
        with pytest.raises(StoreBusy, match=rf"in use by `triage serve` \(pid {os.getpid()}\): stop it first, or run this with its own TRIAGE_DATA_DIR"):
            with store_writer(settings, "triage ingest"):
                pass
    with store_writer(settings, "triage ingest"):  # released on exit
        assert lock_path(settings).read_text() == f"`triage ingest` (pid {os.getpid()})"


def test_a_chroma_server_needs_no_lock(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path / "data", chroma_url="http://127.0.0.1:9")
    with store_writer(settings, "triage serve"), store_writer(settings, "triage ingest"):
        assert not lock_path(settings).exists()


def test_ingest_and_serve_are_refused_while_another_process_writes_the_store(
    runner: CliRunner, env: dict[str, str], tmp_path: Path  # noqa: F811 - fixtures
) -> None:
    holder = subprocess.Popen([sys.executable, "-c", HOLD, env["TRIAGE_DATA_DIR"]], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
        v2 = {**env, "TRIAGE_TAXONOMY_PATH": str(write_v2(tmp_path / "v2.yaml"))}  # one with a `migration:`
        for command, where in ((["ingest"], env), (["serve", "--no-ui", "--port", str(free_port())], env),
                               (["taxonomy", "migrate", "--commit"], v2)):
            result = runner.invoke(app, command, env=where)
            assert_error(result, f"in use by `triage serve` (pid {holder.pid})", "TRIAGE_DATA_DIR")
    finally:
        holder.kill()
        holder.wait()
    assert not (tmp_path / "data" / "chroma").exists()  # nothing was opened, nothing seeded
