"""`triage eval` end to end in a subprocess: tiny CSV and JSONL files made here, proposal mode, real embedder + Chroma."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

TOPICS = {
    "Billing and Payments": ["I was charged twice for my invoice", "the payment on my credit card failed", "please refund the double charge on my bill", "why is there an extra fee on my invoice"],
    "Technical Support": ["the app crashes when I open settings", "error 500 when I save my project", "the sync button does nothing after the update", "I cannot install the software, setup fails"],
    "Returns & Exchanges": ["I want to return the shoes, they are too small", "how do I exchange the jacket for another size", "the parcel I sent back has not been refunded yet", "return label for my order please"],
}
TIERS = {"Billing and Payments": "L2", "Technical Support": "L3", "Returns & Exchanges": "L1"}
METRIC_KEYS = {"n", "mode", "axes", "oos", "latency_ms", "throughput_per_s", "usage"}
AXIS_KEYS = {"accuracy", "macro_f1", "ece", "out_of_taxonomy", "auto_apply"}
PLOTS = ["confusion_service.png", "coverage_precision_service.png", "reliability_service.png", "per_class_f1_service.png", "latency.png"]


def _rows(n_per_topic: int, offset: int) -> list[dict[str, str]]:
    rows = []
    for topic, phrases in TOPICS.items():
        for i in range(n_per_topic):
            phrase = phrases[(i + offset) % len(phrases)]
            rows.append(
                {
                    "id": f"{topic[:4].lower()}-{offset}-{i}",
                    "subject": f"Ticket {i}",
                    "body": f"Hello,\n{phrase}.\nOrder {1000 + i + offset}, thanks",  # multi-line field
                    "queue": topic,
                    "tier": TIERS[topic],
                }
            )
    return rows


def _write_csv(path: Path, rows: list[dict[str, str]]) -> Path:
    with path.open("w", encoding="utf-8", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return path


def _write_jsonl(path: Path, rows: list[dict[str, str]]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def _eval(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    environ = {**os.environ, **env} if env else None
    return subprocess.run([sys.executable, "-m", "agent.cli", "eval", *args, "--quiet"], capture_output=True, text=True, timeout=600, env=environ)


def _check_outputs(out: Path, *, n: int, axes: set[str], oos: bool) -> dict:
    metrics = json.loads((out / "metrics.json").read_text())
    assert set(metrics) == METRIC_KEYS
    assert metrics["n"] == n and metrics["mode"] == "proposal"
    assert set(metrics["axes"]) == axes
    for axis in axes:
        a = metrics["axes"][axis]
        assert set(a) == AXIS_KEYS
        assert set(a["auto_apply"]) == {"target_precision", "coverage", "precision"}
        assert 0.0 <= a["accuracy"] <= 1.0 and 0.0 <= a["macro_f1"] <= 1.0 and 0.0 <= a["ece"] <= 1.0
    assert set(metrics["latency_ms"]) == {"p50", "p95"}
    assert set(metrics["usage"]) == {"prompt_tokens", "completion_tokens"}
    assert metrics["throughput_per_s"] > 0
    if oos:
        assert set(metrics["oos"]) == {"recall", "in_scope_accuracy"}
    else:
        assert metrics["oos"] is None
    lines = (out / "predictions.jsonl").read_text().splitlines()
    assert len(lines) == n
    first = json.loads(lines[0])
    assert {"id", "gold", "prediction"} <= set(first)
    assert set(first["prediction"]["labels"]) == {"service", "channel", "tier"}
    report = (out / "report.md").read_text()
    assert "## Summary" in report
    for plot in PLOTS:
        assert (out / plot).stat().st_size > 1000, plot
    calibration = json.loads((out / "calibration.json").read_text())
    assert {"thresholds", "default", "out_of_scope_threshold", "llm_vote_weight"} <= set(calibration)
    assert "service" in calibration["thresholds"]
    return metrics


def test_eval_csv_auto_taxonomy_two_axes_and_resume(tmp_path: Path) -> None:
    train = _write_csv(tmp_path / "train.csv", _rows(8, 0))
    test_rows = _rows(3, 1)
    test_rows.append({"id": "odd-1", "subject": "", "body": "Where do I send a complaint about the staff?", "queue": "Complaints", "tier": "L1"})
    # rows nobody can score are left out or not scored, and named: never lost silently, never a crash
    test_rows.append({"id": "blank-1", "subject": " ", "body": "", "queue": "Technical Support", "tier": "L3"})
    test_rows.append({"id": "unlabelled-1", "subject": "", "body": "The app crashes when I open settings", "queue": "", "tier": ""})
    test = _write_csv(tmp_path / "test.csv", test_rows)
    out = tmp_path / "out"
    args = ["--train", str(train), "--test", str(test), "--text", "subject,body", "--label", "service=queue", "--label", "tier=tier", "--taxonomy", "auto", "--out", str(out)]
    run = _eval(*args)
    assert run.returncode == 0, run.stderr
    metrics = _check_outputs(out, n=11, axes={"service", "tier"}, oos=False)
    assert json.loads(run.stdout) == metrics
    assert metrics["axes"]["service"]["out_of_taxonomy"] == 1  # "Complaints" is not in train: an error, not a crash
    assert metrics["axes"]["service"]["accuracy"] >= 0.6
    report = (out / "report.md").read_text()
    assert "Returns & Exchanges" in report  # the report shows raw values, not slugified ids
    assert "embedder `all-MiniLM-L6-v2-int8`" in report  # English train file: `auto` keeps MiniLM
    assert "thresholds fitted by 5-fold cross-validation" in report  # a small train file: evals.calibration.default_folds
    assert json.loads((out / "details.json").read_text())["calibration"]["fitted_on"]["folds"] == 5
    assert "left out of test: 1 row(s) without text (`blank-1`)" in report and "blank-1" in run.stderr
    assert "not scored on service: 1 test row(s) with an empty label (`unlabelled-1`)" in report
    assert "not scored on tier: 1 test row(s)" in report
    # resumable: a second run skips the rows already predicted
    before = (out / "predictions.jsonl").read_text()
    again = _eval(*args)
    assert again.returncode == 0, again.stderr
    assert (out / "predictions.jsonl").read_text() == before
    # another configuration in the same directory is refused with a clear message
    other = _eval(*args, "--seed", "3")
    assert other.returncode == 2 and "new --out" in other.stderr


GERMAN = {
    "Billing and Payments": ["Mir wurde die Rechnung doppelt berechnet", "die Zahlung mit meiner Kreditkarte ist fehlgeschlagen"],
    "Technical Support": ["die App stürzt ab, wenn ich die Einstellungen öffne", "ich kann die Software nicht installieren"],
    "Returns & Exchanges": ["ich möchte die Schuhe zurückgeben, sie sind zu klein", "wie kann ich die Jacke umtauschen"],
}


def test_eval_on_a_multilingual_train_file_uses_the_multilingual_embedder(tmp_path: Path) -> None:
    german = [
        {"id": f"de-{topic[:4].lower()}-{i}", "subject": "", "body": f"Hallo, {phrase}. Bitte helfen Sie mir, danke", "queue": topic, "tier": TIERS[topic]}
        for topic, phrases in GERMAN.items()
        for i, phrase in enumerate(phrases * 2)
    ]
    train = _write_csv(tmp_path / "train.csv", _rows(6, 0) + german)  # 12 of 30 rows in German
    test = _write_csv(tmp_path / "test.csv", _rows(2, 1))
    out = tmp_path / "out"
    run = _eval("--train", str(train), "--test", str(test), "--text", "subject,body", "--label", "service=queue", "--taxonomy", "auto", "--out", str(out))
    assert run.returncode == 0, run.stderr
    metrics = _check_outputs(out, n=6, axes={"service"}, oos=False)
    assert metrics["axes"]["service"]["accuracy"] >= 0.5
    assert "embedder `use-multilingual-v3`" in (out / "report.md").read_text()


def test_eval_jsonl_default_taxonomy_oos_and_calibration_path(tmp_path: Path) -> None:
    mapping = {"Billing and Payments": "billing_payments", "Technical Support": "technical_support", "Returns & Exchanges": "returns_refunds"}
    train_rows = [{**r, "service": mapping[r["queue"]]} for r in _rows(8, 0)]
    train_rows += [{"id": f"o-{i}", "subject": "", "body": f"weather forecast for tomorrow {i}", "queue": "", "tier": "", "service": "oos"} for i in range(3)]
    test_rows = [{**r, "service": mapping[r["queue"]]} for r in _rows(2, 2)]
    test_rows += [{"id": "o-t", "subject": "", "body": "what is the capital of France", "queue": "", "tier": "", "service": "oos"}]
    train = _write_jsonl(tmp_path / "train.jsonl", train_rows)
    test = _write_jsonl(tmp_path / "test.jsonl", test_rows)
    out = tmp_path / "out"
    calibration = tmp_path / "cal" / "fitted.calibration.json"
    run = _eval(
        "--train", str(train), "--test", str(test), "--text", "subject,body", "--label", "service=service",
        "--oos-label", "oos", "--calibration", str(calibration), "--target-precision", "0.8", "--out", str(out),
    )
    assert run.returncode == 0, run.stderr
    metrics = _check_outputs(out, n=7, axes={"service"}, oos=True)
    assert metrics["axes"]["service"]["auto_apply"]["target_precision"] == 0.8
    assert metrics["axes"]["service"]["out_of_taxonomy"] == 0
    fitted = json.loads(calibration.read_text())
    assert fitted["out_of_scope_threshold"] is not None
    assert set(fitted["thresholds"]["service"]) <= {"*", "billing_payments", "technical_support", "returns_refunds"}


def test_eval_reports_bad_columns_clearly(tmp_path: Path) -> None:
    train = _write_csv(tmp_path / "train.csv", _rows(2, 0))
    run = _eval("--train", str(train), "--test", str(train), "--text", "nope", "--label", "service=queue", "--out", str(tmp_path / "o"))
    assert run.returncode == 2
    assert "lacks column" in run.stderr and "nope" in run.stderr


def test_hybrid_eval_with_the_embedded_llm_records_votes_the_weight_replay_reproduces(tmp_path: Path, capsys) -> None:  # noqa: ANN001
    """The hybrid path end to end (the embedded llama.cpp server started by the command itself), and the record
    `evals.vote_weight` measures vote weights from: replayed at the weight in force it gives the run's labels."""
    from evals import vote_weight

    train = _write_csv(tmp_path / "train.csv", _rows(6, 0))
    test = _write_csv(tmp_path / "test.csv", _rows(1, 1))
    out = tmp_path / "out"
    # a service weight above 0 (the embedded model's measured default is 0), so the replay has a vote to reproduce
    run = _eval(
        "--train", str(train), "--test", str(test), "--text", "subject,body", "--label", "service=queue", "--taxonomy", "auto",
        "--mode", "hybrid", "--limit", "2", "--out", str(out), env={"TRIAGE_LLM_VOTE_WEIGHT": '{"service": 0.15}'},
    )  # fmt: skip
    assert run.returncode == 0, run.stderr
    assert "vote weight: service 0.15, channel 0.15, tier 0.15" in (out / "report.md").read_text()
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["mode"] == "hybrid" and metrics["n"] == 2
    assert metrics["usage"]["prompt_tokens"] > 0  # the LLM was really asked
    records = [json.loads(line) for line in (out / "predictions.jsonl").read_text().splitlines()]
    for record in records:
        vote = record["vote"]
        assert set(vote["proposal"]["service"]) <= {"Billing_and_Payments", "Technical_Support", "Returns_Exchanges"}
        assert abs(sum(vote["proposal"]["service"].values()) - 1.0) < 0.01
    assert vote_weight.main([str(out), "--weights", "0,0.15,1", "--json", str(tmp_path / "w.json")]) == 0
    (result,) = json.loads((tmp_path / "w.json").read_text())
    assert result["reproduced"] == "2/2" and result["rows"] == 2
    assert result["weight_in_force"] == 0.15  # as the run recorded it, not this process's setting
    assert [w["weight"] for w in result["weights"]] == [0.0, 0.15, 1.0]
