"""`make run` needs only Python 3.11 and the pinned packages: it says so up front when the interpreter is missing or
another version, and never asks for (or, as root, installs) the Debian packages only the tests drive."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from agent.settings import REPO_ROOT

pytestmark = pytest.mark.skipif(shutil.which("make") is None, reason="make is not installed")


@pytest.fixture
def project(tmp_path: Path) -> Path:
    """The Makefile and the files its stamp depends on, in a folder whose path has a space."""
    root = tmp_path / "my project"
    root.mkdir()
    for name in ("Makefile", "pyproject.toml", "requirements.lock"):
        shutil.copy(REPO_ROOT / name, root / name)
    return root


def make(root: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["make", "--no-print-directory", *args], cwd=root, capture_output=True, text=True, timeout=60)


def test_a_missing_python_is_named_with_the_fix(project: Path) -> None:
    done = make(project, "PYTHON=/nowhere/python3", "run")
    assert done.returncode != 0
    assert "/nowhere/python3 not found: install Python 3.11, or name it: make PYTHON=/path/to/python3.11 run" in done.stderr
    assert not (project / ".venv").exists()


def test_another_python_version_is_refused_before_any_install(project: Path) -> None:
    fake = project / "python3.12"
    fake.write_text("#!/bin/sh\ncase \"$2\" in *platform*) echo 3.12.4;; *) exit 1;; esac\n", encoding="utf-8")
    fake.chmod(0o755)
    done = make(project, f"PYTHON={fake}", "run")
    assert done.returncode != 0
    assert "is Python 3.12.4; this project needs 3.11: make PYTHON=python3.11 run" in done.stderr
    assert not (project / ".venv").exists()


def test_run_does_not_need_the_test_only_debian_packages(project: Path) -> None:
    (project / ".venv" / "bin").mkdir(parents=True)
    (project / ".venv" / ".installed").touch()  # installed: the stamp is newer than its inputs
    done = make(project, "-n", "run")
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == [".venv/bin/triage ingest", ".venv/bin/triage serve"]
