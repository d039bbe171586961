"""The CI accuracy gate: a fixed Banking77 subset (1540 train / 462 test rows, 77 intents), proposal mode.

Fails when accuracy or macro-F1 drops more than evals.gate.TOLERANCE below the committed reference
evals/reports/gate/metrics.json. `EVALS_GATE_DEGRADE=1` swaps in a deliberately worse head, to see it fail
(evals/README.md shows that run). The data comes from ../shared/datasets beside the clone.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from evals import gate, splits

pytestmark = pytest.mark.integration


@pytest.mark.skipif(not (splits.DATASETS / "banking77" / "train.csv").is_file(), reason="../shared/datasets is not beside this clone")
def test_accuracy_gate(tmp_path: Path) -> None:
    reference = json.loads((gate.REFERENCE / "metrics.json").read_text(encoding="utf-8"))
    metrics = gate.run_gate(tmp_path, degrade=os.environ.get("EVALS_GATE_DEGRADE") == "1")
    assert metrics["n"] == reference["n"]
    failures = gate.compare(metrics, reference)
    assert not failures, "accuracy gate failed:\n" + "\n".join(failures)


def test_gate_compare_flags_a_drop() -> None:
    ref = {"axes": {"service": {"accuracy": 0.80, "macro_f1": 0.79}}}
    assert gate.compare({"axes": {"service": {"accuracy": 0.785, "macro_f1": 0.78}}}, ref) == []
    failures = gate.compare({"axes": {"service": {"accuracy": 0.70, "macro_f1": 0.78}}}, ref)
    assert len(failures) == 1 and "accuracy" in failures[0]
