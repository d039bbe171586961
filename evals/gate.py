"""The CI accuracy gate: a fixed Banking77 subset in proposal mode, compared with the committed reference.

    python -m evals.gate                # run it, print the comparison, exit 1 when it fails
    python -m evals.gate --degrade      # the same with a deliberately worse head (word n-grams only, C=0.05, no kNN vote): must fail
    python -m evals.gate --update       # re-write the reference evals/reports/gate/ (after a measured improvement)

The subset: Banking77 train.csv split 80/20 (stratified, seed 20240601, as the bench), then 20 rows per intent of
the train side and 6 per intent of the test side (1540 + 462 rows, 77 intents). Fine-grained, so a worse feature
set or a broken calibration shows at once; about a minute on 2 cores.
"""

from __future__ import annotations

import argparse
import json
import random
import shutil
import sys
from dataclasses import replace
from pathlib import Path
from typing import Any

from agent.proposal import HeadOptions
from agent.settings import REPO_ROOT
from evals import splits
from evals.runner import EvalConfig, run_eval

REFERENCE = REPO_ROOT / "evals" / "reports" / "gate"
TOLERANCE = 0.02
TRAIN_PER_CLASS = 20
TEST_PER_CLASS = 6
# A deliberately worse model for the demonstration: no character n-grams, no dense embedding, weak regularisation.
DEGRADED = HeadOptions(char=False, dense=False, C=0.05, knn_weight=0.0)


def gate_files(out: Path) -> tuple[Path, Path]:
    rows = splits._load(splits.DATASETS / "banking77" / "train.csv")
    for i, r in enumerate(rows):
        r["id"] = f"b77-{i}"
    train, test = splits.stratified_split(rows, lambda r: r["category"], 0.2, splits.SPLIT_SEED)

    def per_class(part: list[dict[str, str]], k: int, seed: int) -> list[dict[str, str]]:
        rng = random.Random(seed)
        by: dict[str, list[dict[str, str]]] = {}
        for r in part:
            by.setdefault(r["category"], []).append(r)
        picked = []
        for name in sorted(by):
            group = list(by[name])
            rng.shuffle(group)
            picked += group[:k]
        return picked

    cols = ["id", "text", "category"]
    return (
        splits.write_csv(out / "train.csv", per_class(train, TRAIN_PER_CLASS, 1), cols),
        splits.write_csv(out / "test.csv", per_class(test, TEST_PER_CLASS, 2), cols),
    )


def run_gate(out: Path, *, degrade: bool = False, progress: bool = False, cache_dir: Path | None = None) -> dict[str, Any]:
    train, test = gate_files(out / "data")
    cfg = EvalConfig(
        train=train, test=test, text=["text"], labels={"service": "category"}, out=out / "run", taxonomy="auto", mode="proposal", cache_dir=cache_dir
    )
    if degrade:
        cfg = replace(cfg, head=DEGRADED)
    return run_eval(cfg, progress=progress)


def compare(metrics: dict[str, Any], reference: dict[str, Any], tolerance: float = TOLERANCE) -> list[str]:
    """The gate's failures (empty = pass): accuracy and macro-F1 may not drop more than `tolerance` below reference."""
    failures = []
    for axis, ref in reference["axes"].items():
        got = metrics["axes"][axis]
        for key in ("accuracy", "macro_f1"):
            if got[key] < ref[key] - tolerance:
                failures.append(f"{axis} {key} {got[key]:.4f} < reference {ref[key]:.4f} - {tolerance} (committed in evals/reports/gate/metrics.json)")
    return failures


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--degrade", action="store_true", help="use a deliberately worse head (the gate must fail)")
    parser.add_argument("--update", action="store_true", help="write this run as the new committed reference")
    parser.add_argument("--out", type=Path, default=splits.RUNS / "gate")
    args = parser.parse_args(argv)
    if args.out.exists():
        shutil.rmtree(args.out / "run", ignore_errors=True)
    metrics = run_gate(args.out, degrade=args.degrade, progress=True, cache_dir=splits.RUNS / ".cache")
    if args.update:
        REFERENCE.mkdir(parents=True, exist_ok=True)
        for name in ("metrics.json", "report.md", "details.json", "calibration.json"):
            shutil.copy2(args.out / "run" / name, REFERENCE / name)
        print(f"reference written to {REFERENCE}")
        return 0
    reference = json.loads((REFERENCE / "metrics.json").read_text(encoding="utf-8"))
    failures = compare(metrics, reference)
    for axis, got in metrics["axes"].items():
        ref = reference["axes"][axis]
        print(f"{axis}: accuracy {got['accuracy']:.4f} (reference {ref['accuracy']:.4f}), macro-F1 {got['macro_f1']:.4f} (reference {ref['macro_f1']:.4f}), tolerance {TOLERANCE}")
    if failures:
        print("GATE FAILED:\n  " + "\n  ".join(failures))
        return 1
    print("gate passed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
