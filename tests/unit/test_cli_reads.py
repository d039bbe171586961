"""The CLI's read commands (`tickets list|show|export`, `history`) read the records and nothing else: they imported
the write side (the graph, the classifier head, scikit-learn, Chroma) and took ~6 s on 2 cores before printing a
line. One fresh interpreter runs them all on an empty records database and says which heavy modules got loaded."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from agent.settings import REPO_ROOT

HEAVY = ("sklearn", "chromadb", "langgraph", "onnxruntime", "openai", "agent.service", "agent.lifecycle", "agent.proposal")

SCRIPT = """
import json, sys
from typer.testing import CliRunner
from agent.cli import app
codes = {}
for args in (["tickets", "list"], ["tickets", "list", "--queue"], ["tickets", "show", "tk_none"], ["history", "tk_none"],
             ["tickets", "export", "--out", sys.argv[1]]):
    result = CliRunner().invoke(app, args)
    codes[" ".join(args[:2])] = [result.exit_code, result.output.strip().splitlines()[:1]]
print(json.dumps({"codes": codes, "loaded": sorted(m for m in sys.argv[2:] if m in sys.modules)}))
"""


def test_read_commands_load_no_model(tmp_path: Path) -> None:
    env = {**os.environ, "TRIAGE_DATA_DIR": str(tmp_path / "data"), "PYTHONPATH": str(REPO_ROOT)}
    run = subprocess.run(
        [sys.executable, "-c", SCRIPT, str(tmp_path / "reviewed.csv"), *HEAVY], env=env, capture_output=True, text=True, timeout=120, check=False
    )
    assert run.returncode == 0, run.stderr
    report = json.loads(run.stdout.strip().splitlines()[-1])
    codes = report["codes"]
    assert codes["tickets list"][0] == 0 and codes["history tk_none"][0] != 0, codes  # the commands ran, each as usual
    assert "no ticket 'tk_none'" in codes["tickets show"][1][0], codes
    assert report["loaded"] == [], f"a read command imported {report['loaded']}"


def test_a_data_dir_the_cli_creates_is_readable_by_its_user_only(tmp_path: Path) -> None:
    """The records and the store hold every ticket's text; `data/` was created 755 (the SQLite file 644), so every
    local user could read a help desk's customers' tickets."""
    from typer.testing import CliRunner

    from agent.cli import app

    data_dir = tmp_path / "fresh" / "data"
    result = CliRunner().invoke(app, ["tickets", "list"], env={"TRIAGE_DATA_DIR": str(data_dir)})
    assert result.exit_code == 0, result.output
    assert data_dir.stat().st_mode & 0o777 == 0o700
