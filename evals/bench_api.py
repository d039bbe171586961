"""Load benchmark of the HTTP API: `python -m evals.bench_api` (defaults: 1,000 `POST /v1/tickets`, concurrency 50).

It serves a private copy of the seeded store (`triage ingest` first) with a real uvicorn process in proposal
mode on loopback, with the default records (SQLite, WAL, synchronous=FULL: every 201 is on disk), sends the
requests from an asyncio client on the same machine, checks that every 201 left exactly one stored ticket,
and writes latency percentiles, throughput and the machine to evals/reports/api_load.json.

The client shares the CPU with the server, and the numbers include the full write path (classification,
one transaction with ticket + revision, fsync): read them as a floor for one small machine, not a ceiling.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

import httpx

from agent.auth import create_key
from agent.machine import usable_cores
from agent.records import Records
from agent.settings import REPO_ROOT, Settings

REPORT = REPO_ROOT / "evals" / "reports" / "api_load.json"
WARMUP = 20


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def machine() -> dict[str, object]:
    model = ""
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        model = next((line.split(":", 1)[1].strip() for line in cpuinfo.read_text().splitlines() if line.startswith("model name")), "")
    cores = usable_cores()
    return {
        "arch": platform.machine(),
        "cpus": cores,
        "cpu_model": model,
        "description": f"{cores}-core {platform.machine()}",
        "python": platform.python_version(),
        "os": platform.platform(),
    }


def tickets(n: int, seed_path: Path) -> list[dict[str, str]]:
    """n distinct tickets built from the shipped seed texts (so retrieval and the head do real work)."""
    rows = [json.loads(line) for line in seed_path.read_text(encoding="utf-8").splitlines() if line.strip()]
    out = []
    for i in range(n):
        row = rows[(i * 7919) % len(rows)]
        out.append({"subject": str(row.get("subject", ""))[:200], "body": f"{str(row.get('body', ''))[:2000]} (load test #{i})"})
    return out


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))
    return ordered[index]


async def burst(base: str, key: str, bodies: list[dict[str, str]], concurrency: int, prefix: str) -> tuple[list[float], dict[str, int], float]:
    queue: asyncio.Queue[tuple[int, dict[str, str]]] = asyncio.Queue()
    for item in enumerate(bodies):
        queue.put_nowait(item)
    latencies: list[float] = []
    statuses: dict[str, int] = {}
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(base_url=base, headers={"Authorization": f"Bearer {key}"}, timeout=120, limits=limits) as client:

        async def worker() -> None:
            while not queue.empty():
                i, body = queue.get_nowait()
                started = time.perf_counter()
                try:
                    response = await client.post("/v1/tickets", json=body, headers={"Idempotency-Key": f"{prefix}-{i}"})
                    status = str(response.status_code)
                except httpx.HTTPError as exc:
                    status = type(exc).__name__
                latencies.append((time.perf_counter() - started) * 1000)
                statuses[status] = statuses.get(status, 0) + 1

        started = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        wall = time.perf_counter() - started
    return latencies, statuses, wall


def wait_ready(base: str, process: subprocess.Popen, timeout_s: float = 180) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit(f"the API exited with {process.returncode} before it was ready")
        try:
            if httpx.get(f"{base}/healthz", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            time.sleep(0.3)
    raise SystemExit(f"the API did not answer {base}/healthz within {timeout_s} s")


def run(requests: int, concurrency: int, workers: int, source: Path, out: Path) -> dict[str, object]:
    if not (source / "chroma").is_dir() or not (source / "models").is_dir():
        raise SystemExit(f"no seeded store in {source}: run `triage ingest` (or `make run`) first, or pass --data-dir")
    settings = Settings()
    with tempfile.TemporaryDirectory(prefix="bench-api-") as tmp:
        data_dir = Path(tmp) / "data"
        for part in ("chroma", "models"):
            shutil.copytree(source / part, data_dir / part)
        records = Records(f"sqlite:///{data_dir / 'triage.db'}")
        records.upgrade()
        key, _ = create_key(records, scope="bot", name="bench")
        port = free_port()
        base = f"http://127.0.0.1:{port}"
        env = {k: v for k, v in os.environ.items() if not k.startswith("TRIAGE_")}
        env.update(
            TRIAGE_DATA_DIR=str(data_dir), TRIAGE_MODE="proposal", TRIAGE_API_WORKERS=str(workers),
            TRIAGE_QUEUE_LIMIT=str(max(concurrency, settings.queue_limit)), TRIAGE_TAXONOMY_PATH=str(settings.taxonomy_path),
        )
        command = [sys.executable, "-m", "uvicorn", "agent.api:create_app", "--factory", "--host", "127.0.0.1", "--port", str(port),
                   "--log-level", "warning", "--no-access-log"]
        process = subprocess.Popen(command, env=env)
        try:
            wait_ready(base, process)
            bodies = tickets(requests + WARMUP, settings.knowledge_base_dir / "seed" / "tickets.jsonl")
            asyncio.run(burst(base, key, bodies[:WARMUP], min(concurrency, WARMUP), "warm"))
            load_before = os.getloadavg()
            latencies, statuses, wall = asyncio.run(burst(base, key, bodies[WARMUP:], concurrency, "load"))
            load_after = os.getloadavg()
        finally:
            process.send_signal(signal.SIGINT)
            try:
                process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                process.kill()
        with records.engine.connect() as conn:
            stored = conn.exec_driver_sql("SELECT count(*) FROM tickets").scalar()
            revisions = conn.exec_driver_sql("SELECT count(*) FROM revisions").scalar()
        records.close()
    ok = statuses.get("201", 0)
    report: dict[str, object] = {
        "endpoint": "POST /v1/tickets",
        "mode": "proposal",
        "requests": requests,
        "concurrency": concurrency,
        "errors": requests - ok,
        "status_counts": statuses,
        "latency_ms": {
            "p50": round(percentile(latencies, 50), 1),
            "p95": round(percentile(latencies, 95), 1),
            "p99": round(percentile(latencies, 99), 1),
            "mean": round(statistics.fmean(latencies), 1),
            "max": round(max(latencies), 1),
        },
        "throughput_rps": round(requests / wall, 1),
        "wall_s": round(wall, 2),
        "stored": {"tickets": stored, "revisions": revisions, "expected": requests + WARMUP},
        "server": {
            "uvicorn_processes": 1,
            "classification_workers": workers,
            "records": "SQLite, WAL, synchronous=FULL",
            "store": "Chroma PersistentClient (seeded copy)",
            "warmup_requests": WARMUP,
        },
        "machine": machine(),
        "load_average_1m": {"before": round(load_before[0], 2), "after": round(load_after[0], 2)},
        "client": "httpx.AsyncClient on the same machine, one connection per concurrent worker",
        "when": datetime.now(UTC).isoformat(timespec="seconds"),
    }
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    return report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=1000)
    parser.add_argument("--concurrency", type=int, default=50)
    parser.add_argument("--workers", type=int, default=Settings().api_workers, help="classification threads (TRIAGE_API_WORKERS)")
    parser.add_argument("--data-dir", type=Path, default=Settings().data_dir, help="a seeded data dir to copy (default: data/)")
    parser.add_argument("--out", type=Path, default=REPORT)
    args = parser.parse_args()
    report = run(args.requests, args.concurrency, args.workers, args.data_dir, args.out)
    latency = report["latency_ms"]
    print(
        f"{report['requests']} x POST /v1/tickets, concurrency {report['concurrency']}, proposal mode, "
        f"{report['machine']['description']}: errors {report['errors']}, p50 {latency['p50']} ms, "  # type: ignore[index]
        f"p95 {latency['p95']} ms, p99 {latency['p99']} ms, {report['throughput_rps']} req/s "  # type: ignore[index]
        f"(load avg {report['load_average_1m']}) -> {args.out}"
    )
    if report["errors"] or report["stored"]["tickets"] != report["stored"]["expected"]:  # type: ignore[index]
        raise SystemExit(f"errors or missing rows: {report['status_counts']}, stored {report['stored']}")


if __name__ == "__main__":
    main()
