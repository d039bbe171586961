"""`triage eval` stopped by SIGTERM (`kill`, `timeout`, a CI job cancelled) unwinds like Ctrl-C: the cross-validation's
worker processes are stopped with it and the command says how to resume (a subprocess: the signal is real)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

from agent.settings import REPO_ROOT

SCRIPT = textwrap.dedent(
    """
    import os, signal, sys, threading, time
    from pathlib import Path

    import evals.runner
    from joblib import Parallel, delayed

    pids = Path(sys.argv[1])

    def work(i):
        (pids / str(os.getpid())).write_text("")
        time.sleep(60)
        return i

    def fake_run_eval(cfg, progress=True):  # the cross-validation's two worker processes, busy
        def stop_when_busy():
            while len(list(pids.iterdir())) < 2:
                time.sleep(0.05)
            os.kill(os.getpid(), signal.SIGTERM)
        threading.Thread(target=stop_when_busy, daemon=True).start()
        Parallel(n_jobs=2)(delayed(work)(i) for i in range(4))
        raise AssertionError("not stopped")

    evals.runner.run_eval = fake_run_eval
    from agent.cli import main
    sys.argv = ["triage", "eval", "--train", "t.csv", "--test", "t.csv", "--text", "text", "--label", "service=y",
                "--out", sys.argv[2], "--quiet"]
    main()
    """
)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # a worker that exited but is not reaped yet (its parent is gone: init reaps it) counts as stopped
    status = Path(f"/proc/{pid}/status")
    return not (status.is_file() and "\nState:\tZ" in status.read_text())


def test_sigterm_stops_the_cross_validation_workers_and_says_how_to_resume(tmp_path: Path) -> None:
    """QA: SIGTERM during the calibration ended `triage eval` at once (Python's default) and left its two joblib
    worker processes running as orphans, about 250 MB each, for as long as was watched (10 minutes)."""
    pids = tmp_path / "pids"
    pids.mkdir()
    out = tmp_path / "run"
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    log = tmp_path / "stderr.txt"
    workers: list[int] = []
    try:
        with log.open("w") as stderr:  # a file, not a pipe: orphaned workers would hold a pipe open
            returncode = subprocess.run(
                [sys.executable, "-c", SCRIPT, str(pids), str(out)], cwd=tmp_path, env=env, stdout=subprocess.DEVNULL, stderr=stderr, timeout=60
            ).returncode
        workers = [int(p.name) for p in pids.iterdir()]
        output = log.read_text()
        assert len(workers) >= 2, output
        assert returncode == 128 + signal.SIGTERM, (returncode, output)
        assert "interrupted:" in output and "run the same command again to resume" in output, output
        assert "Traceback" not in output, output
        deadline = time.monotonic() + 15
        while any(_alive(pid) for pid in workers) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert not [pid for pid in workers if _alive(pid)], "worker processes left running"
    finally:
        for pid in workers or [int(p.name) for p in pids.iterdir()]:  # only the workers this test started
            if _alive(pid):
                os.kill(pid, signal.SIGKILL)
