"""Speed of `triage eval --mode proposal` on 2 cores, the two protocols of the eval issue, through the real CLI.

1. **Banking77 protocol, end to end, cold**: 10,003 train rows (all of train.csv) + 3,080 test rows (40 per
   intent, the official test size), a fresh --out and an empty embedding cache, so the wall time includes process
   start, embedding both files, the cross-validated calibration, the store, the head and 3,080 classifications.
   The official test split is sealed, so the 3,080 test texts are train.csv rows (seeded sample) with a
   prefix that makes them new texts for every cache: same length and cost, accuracy meaningless (not reported).
2. **Long e-mail tickets, train embeddings cached**: the Tobi-Bueck 80/20 split (3,339 train / 835 test tickets,
   ~560 characters each). A first run fills the embedding cache with train (test rows are not in it); the
   timed run uses a fresh --out: the calibration and the head come from the cache too (keyed by the train file
   and the options), the store is rebuilt from the cached vectors, and every test ticket is embedded and
   classified through the graph. Reported: test tickets / wall time of the whole command, and the classify
   rate (metrics.json `throughput_per_s`).

    python -m evals.bench_speed            # both; writes evals/reports/speed.json (--only: that protocol's entry)
    python -m evals.bench_speed --runs 3   # each protocol three times, the median run reported (all walls kept)

Before the protocols it times two fixed workloads (`machine_probe`): the same VM type ran the same code 30 %
slower on one day than on another (evals/README.md, "Speed"), so a figure is only comparable with its probe.
"""

from __future__ import annotations

import argparse
import csv
import json
import platform
import random
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from agent.machine import usable_cores
from agent.settings import REPO_ROOT
from evals import splits

SPEED = splits.RUNS / "speed"
PROTOCOLS = ("banking77_cold", "tobi_train_cached")
REPORT = REPO_ROOT / "evals" / "reports" / "speed.json"


def banking77_protocol(out: Path) -> tuple[Path, Path]:
    """train.csv as train; 40 rows per intent (seeded) with a prefix as the 3,080-row test file."""
    rows = list(csv.DictReader((splits.DATASETS / "banking77" / "train.csv").open(encoding="utf-8")))
    by_intent: dict[str, list[dict[str, str]]] = {}
    for row in rows:
        by_intent.setdefault(row["category"], []).append(row)
    rng = random.Random(splits.SPLIT_SEED)
    test = []
    for intent in sorted(by_intent):
        pool = by_intent[intent]
        picked = rng.sample(pool, min(40, len(pool)))
        picked += [(rng.choice(pool), "Another customer writes") for _ in range(40 - len(picked))]  # classes under 40 rows
        for item in picked:
            row, prefix = item if isinstance(item, tuple) else (item, "Customer writes")
            test.append({"text": f"{prefix}: {row['text']}", "category": intent})
    train_path = splits.write_csv(out / "train.csv", rows, ["text", "category"])
    test_path = splits.write_csv(out / "test.csv", test, ["text", "category"])
    return train_path, test_path


def triage_eval(args: list[str]) -> float:
    """Run `triage eval` in a fresh process; wall seconds."""
    command = [sys.executable, "-m", "agent.cli", "eval", *args, "--quiet"]
    started = time.perf_counter()
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL, cwd=REPO_ROOT)
    return time.perf_counter() - started


def run_dir_timings(out: Path) -> dict[str, float]:
    return json.loads((out / "run.json").read_text())["timings"]


def classify_rate(out: Path) -> float:
    """metrics.json throughput_per_s: test rows / summed wall time of classify (the tickets' vectors embedded ahead
    in batches, timed apart as `embed_test_s`)."""
    return json.loads((out / "metrics.json").read_text())["throughput_per_s"]


PROBE_WORDS = (
    "invoice", "order", "refund", "password", "account", "server", "outage", "the", "our", "please", "error",
    "since", "yesterday", "customers", "cannot", "login", "payment", "card", "charged", "twice", "delivery",
    "integration", "api", "timeout", "dashboard", "report", "sync", "failed", "urgent", "update", "version",
)


def machine_probe() -> dict[str, float]:
    """This machine's speed today on two fixed workloads: the shipped embedder on 200 fixed ~90-word texts one by
    one (the largest cost of classifying a long ticket) and a pure-Python dict loop (the graph's own code)."""
    from agent.service import make_embedder
    from agent.settings import Settings

    embedder = make_embedder(Settings())
    rng = random.Random(0)
    texts = [" ".join(rng.choice(PROBE_WORDS) for _ in range(90)) for _ in range(200)]
    embedder.embed(texts[:5])  # onnxruntime's first runs allocate
    started = time.perf_counter()
    for text in texts:
        embedder.embed([text])
    embed_rate = len(texts) / (time.perf_counter() - started)
    started = time.perf_counter()
    counts: dict[str, int] = {}
    for i in range(10_000_000):
        word = PROBE_WORDS[i % len(PROBE_WORDS)]
        counts[word] = counts.get(word, 0) + 1
    return {"embed_texts_per_s": round(embed_rate, 1), "python_loop_s": round(time.perf_counter() - started, 2)}


def timed_runs(n: int, args: list[str], out: Path, reset: Callable[[], None]) -> dict[str, Any]:
    """`triage eval ARGS --out OUT` timed `n` times, `reset` restoring the starting state before each: the run
    with the median wall time (the lower middle one for an even count) with its own timings, and every wall time."""
    runs = []
    for _ in range(n):
        reset()
        shutil.rmtree(out, ignore_errors=True)
        wall = triage_eval([*args, "--out", str(out)])
        runs.append({"wall_s": round(wall, 1), "classify_per_s": classify_rate(out), "timings": run_dir_timings(out)})
    typical = sorted(runs, key=lambda r: r["wall_s"])[(n - 1) // 2]
    return {**typical, "wall_s_runs": [r["wall_s"] for r in runs]}


def cpu_model() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines() if Path("/proc/cpuinfo").is_file() else []:
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or "cpu"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", choices=["banking77", "tobi", "probe"], help="run one protocol, or only the machine probe (seconds)")
    parser.add_argument("--runs", type=int, default=1, help="time each protocol N times and report the median run (this host varies by up to 30 %%)")
    args = parser.parse_args(argv)
    if args.runs < 1:
        parser.error("--runs must be at least 1")
    results: dict[str, object] = {
        "machine": f"{platform.machine()}, {usable_cores()} cores, {cpu_model()}, Python {platform.python_version()}",
        "command": "python -m evals.bench_speed",
        "date": time.strftime("%Y-%m-%d", time.gmtime()),
        "probe": machine_probe(),
    }
    print(json.dumps({"probe": results["probe"]}), flush=True)
    if args.only == "probe":
        return 0
    if args.only in (None, "banking77"):
        base = SPEED / "banking77"
        shutil.rmtree(base, ignore_errors=True)
        train, test = banking77_protocol(base)
        cold = timed_runs(  # each run cold: no embedding cache, a fresh --out
            args.runs,
            ["--train", str(train), "--test", str(test), "--text", "text", "--label", "service=category",
             "--taxonomy", "auto", "--cache-dir", str(base / "cache")],
            base / "run",
            reset=lambda: shutil.rmtree(base / "cache", ignore_errors=True),
        )
        results["banking77_cold"] = {"train": 10003, "test": 3080, **cold, "target_s": 180}
        print(json.dumps(results["banking77_cold"]), flush=True)
    if args.only in (None, "tobi"):
        base = SPEED / "tobi"
        shutil.rmtree(base, ignore_errors=True)
        train, test = splits.tobi_queue(base / "split")
        common = ["--train", str(train), "--test", str(test), "--text", "subject,body", "--label", "service=queue",
                  "--taxonomy", "auto", "--cache-dir", str(base / "cache")]
        warm = triage_eval([*common, "--limit", "1", "--out", str(base / "warm")])  # embeds train (+ 1 test row)
        shutil.copytree(base / "cache", base / "cache-warm")  # each timed run starts from this: train cached, test not
        n_test = sum(1 for _ in csv.DictReader(test.open(encoding="utf-8")))

        def restore_warm_cache() -> None:
            shutil.rmtree(base / "cache", ignore_errors=True)
            shutil.copytree(base / "cache-warm", base / "cache")

        typical = timed_runs(args.runs, common, base / "run", reset=restore_warm_cache)
        results["tobi_train_cached"] = {
            "train": sum(1 for _ in csv.DictReader(train.open(encoding="utf-8"))), "test": n_test, "warm_up_s": round(warm, 1),
            **typical, "tickets_per_s_end_to_end": round(n_test / typical["wall_s"], 1),
            "target_per_s": 20,
        }
        print(json.dumps(results["tobi_train_cached"]), flush=True)
    write_report(results)
    return 0


def write_report(results: dict[str, Any]) -> None:
    """speed.json: each protocol with the date and probe of the run that measured it; `--only` replaces its own
    protocol and keeps the others (a probe-only run writes nothing)."""
    protocols = {k: {**v, "date": results["date"], "probe": results["probe"]} for k, v in results.items() if k in PROTOCOLS}
    if not protocols:
        return
    kept = json.loads(REPORT.read_text(encoding="utf-8")) if REPORT.is_file() else {}
    REPORT.write_text(json.dumps({**kept, **{k: results[k] for k in ("machine", "command")}, **protocols}, indent=2) + "\n", encoding="utf-8")


if __name__ == "__main__":
    raise SystemExit(main())
