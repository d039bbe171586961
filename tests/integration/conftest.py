"""Integration fixtures: the real parts. A store seeded by the real `triage ingest` (packaged ONNX model,
on-disk Chroma), the real llama.cpp server over HTTP with the packaged GGUF, the real FastAPI app."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from agent.local_llm import LocalLLMServer
from agent.service import TriageService, make_llm
from agent.settings import REPO_ROOT, Settings

TRIAGE = str(Path(sys.executable).parent / "triage")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "integration" in str(item.fspath):
            item.add_marker(pytest.mark.integration)


def cli_env(data_dir: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TRIAGE_")}
    env.update({"TRIAGE_DATA_DIR": str(data_dir), **extra})
    return env


@pytest.fixture(scope="session")
def seeded_data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    data_dir = tmp_path_factory.mktemp("seeded") / "data"
    done = subprocess.run([TRIAGE, "ingest"], env=cli_env(data_dir), capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr
    assert "tickets: +" in done.stdout
    return data_dir


@pytest.fixture(scope="session")
def llm_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalLLMServer]:
    log = tmp_path_factory.mktemp("llm") / "llm.log"
    with LocalLLMServer(log_path=log) as server:
        yield server


@pytest.fixture(scope="session")
def settings_seeded(seeded_data_dir: Path) -> Settings:
    return Settings(data_dir=seeded_data_dir, taxonomy_path=REPO_ROOT / "knowledge_base" / "taxonomies" / "default.yaml")


@pytest.fixture(scope="session")
def service(settings_seeded: Settings, llm_server: LocalLLMServer) -> TriageService:
    return TriageService(settings_seeded, llm=make_llm(settings_seeded, llm_server.base_url, server=llm_server))
