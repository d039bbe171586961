"""The Evals page on reports written by the real `triage eval` (proposal mode, a small slice of the seed tickets)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.ui.conftest import app_test, run_page, texts

pytestmark = pytest.mark.integration
def test_evals_draws_a_run_and_compares_two(reports: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    at = run_page(app_test(monkeypatch, "http://127.0.0.1:9", None, TRIAGE_UI_REPORTS_DIR=str(reports)), "views/evals.py")
    assert set(at.selectbox(key="evals_a").options) == {"run-a", "run-b"}
    at.selectbox(key="evals_a").set_value("run-a").run()
    summary = at.dataframe[0].value
    assert set(summary["axis"]) == {"service", "tier"} and set(summary["run"]) == {"run-a"}
    metrics = json.loads((reports / "run-a" / "metrics.json").read_text())
    assert summary.loc[summary["axis"] == "service", "accuracy"].item() == metrics["axes"]["service"]["accuracy"]
    # readable headers, each with what it means (they read `macro_f1`, `ece`, `target_precision`)
    headers = json.loads(at.dataframe[0].proto.columns)
    assert {key: headers[key]["label"] for key in ("macro_f1", "ece", "coverage", "target_precision")} == {
        "macro_f1": "macro-F1", "ece": "calibration error", "coverage": "auto-apply coverage", "target_precision": "precision target"}
    assert all(headers[key].get("help") for key in ("accuracy", "macro_f1", "ece", "coverage", "precision", "target_precision"))
    titles = " ".join(str(c.proto.spec) for c in at.get("vega_lite_chart"))
    for picture in ("confusion matrix", "coverage vs precision", "reliability diagram", "per-class F1"):
        assert f"service: {picture}" in titles or f"service · {picture}" in titles, picture
    assert not at.image
    at.toggle(key="evals_report").set_value(True).run()
    shown = {img.caption for image in at.image for img in image.proto.imgs}  # the run's own PNGs, on demand
    assert {p.name for p in (reports / "run-a").glob("*.png")} == shown and "confusion_service.png" in shown

    at.selectbox(key="evals_b").set_value("run-b").run()
    assert not at.exception
    compared = at.dataframe[1].value
    assert {"A", "B", "B − A"} <= set(compared.columns)
    assert not at.warning  # both runs embedded their test file ahead: their latencies compare
    coverage = compared[(compared["axis"] == "service") & (compared["metric"] == "auto-apply coverage")]
    b = json.loads((reports / "run-b" / "metrics.json").read_text())["axes"]["service"]["auto_apply"]["coverage"]
    assert coverage["B"].item() == b and coverage["B − A"].item() == round(b - metrics["axes"]["service"]["auto_apply"]["coverage"], 4)
    assert "run-b" in str([c.proto.spec for c in at.get("vega_lite_chart")])


def test_evals_without_reports_says_where_it_looked(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    at = run_page(app_test(monkeypatch, "http://127.0.0.1:9", None, TRIAGE_UI_REPORTS_DIR=str(tmp_path)), "views/evals.py")
    assert f"No eval report under `{tmp_path}`" in texts(at).replace("\\", "")


@pytest.mark.parametrize(
    "metrics",
    ["[]", '{"axes": {"service": null}}', '{"axes": ["service", "tier"]}', '{"axes": {"service": {"auto_apply": 0.9}}}', '{"axes": {}, "latency_ms": 12}'],
)
def test_a_malformed_metrics_json_is_a_message_naming_it(metrics: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Valid JSON of the wrong shape (hand-edited, another tool's file) is refused when read, not a traceback mid-page."""
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "metrics.json").write_text(metrics)
    at = run_page(app_test(monkeypatch, "http://127.0.0.1:9", None, TRIAGE_UI_REPORTS_DIR=str(tmp_path)), "views/evals.py")
    assert [e.value.split(": ")[0] for e in at.error] == ["The report `broken` cannot be read"]
    assert str(tmp_path / "broken" / "metrics.json") in at.error[0].value
