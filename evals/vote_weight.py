"""Replay the LLM's vote at other weights on finished llm/hybrid runs, without calling the LLM again.

`decide` mixes the proposal's distribution with the LLM's vote: (1 - w) * proposal + w * vote. Every hybrid row of
`triage eval` records both (`vote` in predictions.jsonl), so the label each weight would give is exact arithmetic
(`agent.nodes.decide.combine`). This is how the vote weight is measured, not guessed (evals/README.md, "Hybrid").

    python -m evals.vote_weight evals/runs/tobi_queue/hybrid evals/runs/tier/hybrid
    python -m evals.vote_weight RUN_DIR --weights 0,0.1,0.15,0.3 --json weights.json

A run directory of a cross-validated config (fold*/predictions.jsonl) is read whole. Rows without a gold label on
the axis, out-of-scope rows and rows recorded before votes were kept are left out (the count is printed).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from agent.nodes.decide import combine
from agent.settings import Settings, vote_weight_for
from evals.runner import run_predictions

DEFAULT_WEIGHTS = (0.0, 0.05, 0.1, 0.15, 0.2, 0.3, 0.5, 1.0)


def run_records(run_dir: Path) -> list[dict[str, Any]]:
    records = list(run_predictions(run_dir).values())
    if not records:
        raise FileNotFoundError(f"no predictions.jsonl in {run_dir} (nor in its fold*/ folders): run `triage eval --mode hybrid --out {run_dir}` first")
    return records


def weight_in_force(run_dir: Path, axis: str) -> float:
    """The weight `decide` used on `axis`: as the run recorded it (details.json, runs since 2026-12-05), else the
    run's calibration's `llm_vote_weight` where it sets one, else the setting's (agent.settings.vote_weight_for)."""
    for path in [run_dir / "details.json", *sorted(run_dir.glob("fold*/details.json"))]:
        if path.is_file():
            llm = (json.loads(path.read_text(encoding="utf-8")).get("context") or {}).get("llm") or {}
            if axis in (llm.get("vote_weight") or {}):
                return float(llm["vote_weight"][axis])
    for path in [run_dir / "calibration.json", *sorted(run_dir.glob("fold*/calibration.json"))]:
        if path.is_file():
            weight = json.loads(path.read_text(encoding="utf-8")).get("llm_vote_weight")
            if weight is not None:
                return vote_weight_for(axis, weight, Settings().llm_vote_weight)
    return vote_weight_for(axis, Settings().llm_vote_weight)


def top_label(distribution: dict[str, float]) -> str | None:
    return max(distribution, key=lambda label: distribution[label]) if distribution else None


def label_at(record: dict[str, Any], axis: str, weight: float) -> str | None:
    """The label `decide` gives a recorded row on `axis` at vote weight `weight` (0: the proposal alone)."""
    vote = record["vote"]
    confidence = vote["llm_confidence"]
    return top_label(combine(vote["proposal"].get(axis, {}), vote["llm"].get(axis), 0.5 if confidence is None else confidence, weight))


def replay(records: list[dict[str, Any]], axis: str, weights: tuple[float, ...]) -> dict[str, Any]:
    """Accuracy on `axis` at each weight, and how the labels moved against the proposal alone (weight 0)."""
    rows = [r for r in records if r.get("vote") and not r.get("oos_gold") and r.get("gold_id", {}).get(axis)]
    result: dict[str, Any] = {"axis": axis, "rows": len(rows), "left_out": len(records) - len(rows), "weights": []}
    if not rows:
        return result
    alone = [label_at(r, axis, 0.0) for r in rows]
    gold = [r["gold_id"][axis] for r in rows]
    for weight in weights:
        labels = [label_at(r, axis, weight) for r in rows]
        right = [label == g for label, g in zip(labels, gold, strict=True)]
        was_right = [label == g for label, g in zip(alone, gold, strict=True)]
        result["weights"].append(
            {
                "weight": weight,
                "accuracy": round(sum(right) / len(rows), 4),
                "changed": sum(a != b for a, b in zip(labels, alone, strict=True)),
                "right_to_wrong": sum(w and not r for w, r in zip(was_right, right, strict=True)),
                "wrong_to_right": sum(r and not w for w, r in zip(was_right, right, strict=True)),
            }
        )
    return result


def reproduced(records: list[dict[str, Any]], axis: str, weight: float) -> tuple[int, int]:
    """(rows whose replay at the weight in force gives the label the run recorded, rows replayed): a check that
    the replay is the graph's own arithmetic."""
    rows = [r for r in records if r.get("vote") and r.get("prediction")]
    same = sum(label_at(r, axis, weight) == r["prediction"]["labels"][axis]["label"] for r in rows)
    return same, len(rows)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("runs", nargs="+", type=Path, help="run directories of `triage eval --mode hybrid` (or llm)")
    parser.add_argument("--weights", default=",".join(str(w) for w in DEFAULT_WEIGHTS), help="comma-separated vote weights in [0, 1]")
    parser.add_argument("--json", type=Path, help="also write the results to this file")
    args = parser.parse_args(argv)
    try:
        weights = tuple(float(w) for w in args.weights.split(","))
    except ValueError:
        parser.error("--weights takes numbers separated by commas, e.g. 0,0.1,0.15")
    if any(not 0.0 <= w <= 1.0 for w in weights):
        parser.error("every weight must lie in [0, 1]")
    results = []
    for run_dir in args.runs:
        try:
            records = run_records(run_dir)
        except FileNotFoundError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
        axes = sorted({a for r in records if r.get("vote") for a in r["vote"]["proposal"]})
        if not axes:
            print(f"error: {run_dir} has no recorded votes (a proposal run, or made before votes were kept): re-run it with --mode hybrid", file=sys.stderr)
            return 2
        for axis in axes:
            in_force = weight_in_force(run_dir, axis)
            result = {"run": str(run_dir), "weight_in_force": in_force, **replay(records, axis, weights)}
            same, total = reproduced(records, axis, in_force)
            result["reproduced"] = f"{same}/{total}"
            results.append(result)
            print(f"\n{run_dir} · {axis}: {result['rows']} rows ({result['left_out']} left out); replay at the weight in force ({in_force}) gives the run's label on {same} of {total}")
            print("| weight | accuracy | labels changed vs proposal | right → wrong | wrong → right |\n|---:|---:|---:|---:|---:|")
            for w in result["weights"]:
                print(f"| {w['weight']} | {w['accuracy']:.4f} | {w['changed']} | {w['right_to_wrong']} | {w['wrong_to_right']} |")
    if args.json:
        args.json.write_text(json.dumps(results, indent=1) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
