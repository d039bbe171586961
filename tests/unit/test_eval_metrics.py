"""Eval metrics on hand-made predictions whose answers are worked out by hand."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from evals import metrics as m
from evals.calibration import NEVER, FittedCalibration, fit_thresholds, precision_threshold
from evals.datasets import LabelCodec, parse_label_specs, slugify
from evals.report import compute_metrics

GOLD = ["a", "a", "a", "b", "b", "c"]
PRED = ["a", "a", "b", "b", "c", "c"]


def test_accuracy_and_out_of_taxonomy_count_as_errors() -> None:
    assert m.accuracy(GOLD, PRED) == pytest.approx(4 / 6)
    assert m.accuracy([None, "a"], ["a", "a"]) == pytest.approx(0.5)  # a gold label the taxonomy lacks is an error
    assert m.accuracy([], []) == 0.0


def test_per_class_and_macro_f1() -> None:
    scores = {s.label: s for s in m.per_class(GOLD, PRED)}
    # a: tp 2, predicted 2, gold 3 -> P 1, R 2/3, F1 0.8
    assert scores["a"].precision == pytest.approx(1.0)
    assert scores["a"].recall == pytest.approx(2 / 3)
    assert scores["a"].f1 == pytest.approx(0.8)
    # b: tp 1, predicted 2, gold 2 -> 0.5 / 0.5 / 0.5 ; c: tp 1, predicted 2, gold 1 -> 0.5 / 1 / 2/3
    assert scores["b"].f1 == pytest.approx(0.5)
    assert scores["c"].f1 == pytest.approx(2 / 3)
    assert m.macro_f1(GOLD, PRED) == pytest.approx((0.8 + 0.5 + 2 / 3) / 3)


def test_macro_f1_matches_sklearn() -> None:
    from sklearn.metrics import f1_score

    gold = ["x", "y", "y", "z", "z", "z", "x", "w"]
    pred = ["x", "y", "z", "z", "z", "y", "y", "x"]
    assert m.macro_f1(gold, pred) == pytest.approx(f1_score(gold, pred, average="macro"))


def test_ece_perfect_and_overconfident() -> None:
    # all rows at confidence 0.75 with 3 of 4 right: perfectly calibrated
    assert m.expected_calibration_error([0.75] * 4, [True, True, True, False]) == pytest.approx(0.0)
    # confidence 0.95 but half right: ECE = |0.5 - 0.95| = 0.45
    assert m.expected_calibration_error([0.95] * 4, [True, False, True, False]) == pytest.approx(0.45)
    # two bins: 0.2 (1 of 2 right -> gap 0.3) and 0.9 (2 of 2 right -> gap 0.1): (2*0.3 + 2*0.1) / 4 = 0.2
    assert m.expected_calibration_error([0.2, 0.2, 0.9, 0.9], [True, False, True, True]) == pytest.approx(0.2)


def test_auto_apply_per_class_thresholds_and_blocked_rows() -> None:
    pred = ["a", "a", "b", "b", "b"]
    conf = [0.95, 0.6, 0.8, 0.7, 0.99]
    correct = [True, True, False, True, True]
    thresholds = {"a": 0.9, "b": 0.75}
    coverage, precision, n = m.auto_apply(pred, conf, correct, thresholds.__getitem__)
    # applied: row0 (a .95), row2 (b .8, wrong), row4 (b .99) -> coverage 3/5, precision 2/3
    assert (coverage, n) == (pytest.approx(0.6), 3)
    assert precision == pytest.approx(2 / 3)
    coverage, precision, n = m.auto_apply(pred, conf, correct, thresholds.__getitem__, blocked=[False, False, True, False, False])
    assert (coverage, precision, n) == (pytest.approx(0.4), pytest.approx(1.0), 2)


def test_coverage_precision_curve_takes_ties_together() -> None:
    curve = m.coverage_precision_curve([0.9, 0.9, 0.5, 0.1], [True, False, True, True])
    assert curve == [(0.9, 0.5, 0.5), (0.5, 0.75, pytest.approx(2 / 3)), (0.1, 1.0, 0.75)]


def test_oos_metrics() -> None:
    gold_oos = [True, True, True, True, False, False, False, False, False]
    flagged = [True, True, True, False, True, False, False, False, False]
    correct = [False, False, False, False, True, True, True, False, True]
    stats = m.oos_metrics(gold_oos, flagged, correct)
    assert stats["recall"] == pytest.approx(0.75)
    # in-scope rows: flagged (wrong), right, right, wrong, right -> 3 / 5
    assert stats["in_scope_accuracy"] == pytest.approx(0.6)
    assert stats["false_flag_rate"] == pytest.approx(0.2)


def test_latency_percentiles() -> None:
    values = list(range(1, 101))
    assert m.percentile(values, 50) == pytest.approx(50.5)
    assert m.percentile(values, 95) == pytest.approx(95.05)


def test_precision_threshold_lowest_confidence_that_keeps_target() -> None:
    conf = [0.99, 0.95, 0.9, 0.8, 0.7, 0.6]
    correct = [True, True, True, True, False, False]
    # top-4 all right (1.0), top-5 0.8, top-6 0.67: for target 0.8 the lowest threshold is 0.7
    assert precision_threshold(conf, correct, 0.8) == pytest.approx(0.7)
    assert precision_threshold(conf, correct, 0.9) == pytest.approx(0.8)
    assert precision_threshold(conf, [False] * 6, 0.5) == NEVER
    # Laplace smoothing: 4/4 right -> (4+1)/(4+2) = 0.83 < 0.9, so nothing reaches 0.9
    assert precision_threshold(conf, correct, 0.9, smoothing=1.0) == NEVER


def test_fit_thresholds_global_and_per_class() -> None:
    predicted = ["a"] * 20 + ["b"] * 3
    conf = [1.0 - i * 0.01 for i in range(20)] + [0.99, 0.98, 0.97]
    correct = [True] * 18 + [False, False] + [False, False, False]
    th = fit_thresholds(predicted, conf, correct, 0.85, min_support=15)
    assert set(th) == {"*", "a"}  # b has too few predictions for its own threshold
    assert th["a"] == pytest.approx(0.81)  # 20 rows: (18+1)/(20+2) = 0.864 >= 0.85
    assert th["*"] <= 1.0


def test_slugify_and_codec_roundtrip() -> None:
    assert slugify("Technical Support") == "Technical_Support"
    assert slugify("reverted_card_payment?") == "reverted_card_payment"
    assert slugify("Prüfung & Ärger") == "Prufung_Arger"
    codec = LabelCodec.derive({"service": ["Technical Support", "Technical-Support", "Billing and Payments", "x"]})
    ids = codec.ids("service")
    assert len(ids) == len(set(ids)) == 4
    for raw in ["Technical Support", "Billing and Payments", "x"]:
        assert codec.decode("service", codec.encode("service", raw)) == raw
    assert codec.encode("service", "never seen") is None


def test_parse_label_specs() -> None:
    assert parse_label_specs(["service=queue", "tier=tier"]) == {"service": "queue", "tier": "tier"}
    with pytest.raises(ValueError):
        parse_label_specs(["colour=queue"])
    assert parse_label_specs([" Service =queue"]) == {"service": "queue"}  # the axis apart from case and spaces


def test_a_label_spec_with_an_axis_the_agent_lacks_says_which_axis_to_use() -> None:
    """--label intent=category only said 'axis must be one of [...]', not how to score an intent column."""
    with pytest.raises(ValueError, match=r"'intent' is not one of the agent's axes service, channel, tier; .* --label service=category"):
        parse_label_specs(["intent=category"])
    with pytest.raises(ValueError, match=r"axis 'service' is given twice \(service=queue, service=topic\)"):
        parse_label_specs(["service=queue", "service=topic"])
    with pytest.raises(ValueError):
        parse_label_specs(["service"])


def _record(i: int, gold: str | None, pred: str, conf: float, *, oos: bool = False, flagged: bool = False) -> dict:
    return {
        "id": str(i),
        "gold": {"service": "oos" if oos else (gold or "zzz")},
        "gold_id": {"service": None if oos else gold},
        "oos_gold": oos,
        "wall_ms": 10.0 * (i + 1),
        "prediction": {
            "labels": {"service": {"label": pred, "confidence": conf}},
            "out_of_scope": flagged,
            "decision": "suggest",
            "usage": {"prompt_tokens": 3, "completion_tokens": 1},
        },
    }


def test_compute_metrics_end_to_end_on_records() -> None:
    records = [
        _record(0, "a", "a", 0.95),
        _record(1, "a", "b", 0.60),
        _record(2, "b", "b", 0.92),
        _record(3, None, "a", 0.97),  # gold label outside the taxonomy
        _record(4, None, "a", 0.99, oos=True, flagged=True),
        _record(5, None, "b", 0.96, oos=True, flagged=False),
    ]
    codec = LabelCodec.for_ids({"service": ["a", "b"]})
    fitted = FittedCalibration(thresholds={"service": {"*": 0.9}})
    metrics, details = compute_metrics(records, axes=["service"], codec=codec, fitted=fitted, mode="proposal", target=0.9, oos=True)
    svc = metrics["axes"]["service"]
    assert metrics["n"] == 6
    assert svc["accuracy"] == pytest.approx(0.5)  # in-scope rows 0-3: right, wrong, right, out-of-taxonomy
    assert svc["out_of_taxonomy"] == 1
    # auto-applied (conf >= 0.9, not flagged): rows 0, 2, 3, 5 -> 4 of 6 rows, 2 right
    assert svc["auto_apply"] == {"target_precision": 0.9, "coverage": pytest.approx(0.6667, abs=1e-4), "precision": 0.5}
    assert metrics["oos"] == {"recall": 0.5, "in_scope_accuracy": 0.5}
    assert metrics["latency_ms"]["p50"] == pytest.approx(35.0)
    assert metrics["throughput_per_s"] == pytest.approx(6 / 0.21, rel=1e-3)
    assert metrics["usage"] == {"prompt_tokens": 18, "completion_tokens": 6}
    assert not math.isnan(svc["ece"])
    # the pictures' numbers, without ticket text, for the UI to draw committed reports
    axis = details["axes"]["service"]
    assert sum(c["count"] for c in axis["confusion"]) == 4 and {"gold": "a", "pred": "a", "count": 1} in axis["confusion"]
    assert sum(b["count"] for b in axis["reliability"]) == 4
    assert axis["coverage_curve"][-1]["coverage"] == 1.0 and len(axis["coverage_curve"]) <= 50


def test_each_test_label_the_taxonomy_lacks_is_a_class_of_its_own_in_macro_f1() -> None:
    """QA: two labels train lacked ('warranty', 'gift card') were pooled into one `<out of taxonomy>` class, so
    macro-F1 averaged over 3 classes where sklearn's average="macro" on the raw labels averages over 4 (0.6667, not
    0.5); spellings apart from case and spaces are still one label."""
    from sklearn.metrics import f1_score

    def row(i: int, raw: str, gold: str | None, pred: str) -> dict:
        return {**_record(i, gold, pred, 0.5), "gold": {"service": raw}}

    records = [row(0, "a", "a", "a"), row(1, "b", "b", "b"), row(2, "Warranty", None, "a"), row(3, "gift card", None, "b"), row(4, "WARRANTY ", None, "a")]
    codec = LabelCodec.for_ids({"service": ["a", "b"]})
    metrics, details = compute_metrics(records, axes=["service"], codec=codec, fitted=FittedCalibration(thresholds={"service": {"*": 0.9}}), mode="proposal", target=0.9, oos=False)
    raw_gold, pred = ["a", "b", "warranty", "gift card", "warranty"], ["a", "b", "a", "b", "a"]
    assert metrics["axes"]["service"]["macro_f1"] == pytest.approx(round(f1_score(raw_gold, pred, average="macro"), 4))
    assert metrics["axes"]["service"]["out_of_taxonomy"] == 3
    names = {c["label"]: c["support"] for c in details["axes"]["service"]["per_class"]}
    assert names == {"a": 1, "b": 1, "<out of taxonomy> warranty": 2, "<out of taxonomy> gift card": 1}
    from types import SimpleNamespace

    from evals.report import render_report

    details["context"] = {"train": "t.csv", "test": "v.csv", "n_train": 4, "dropped_oos_train": 0, "taxonomy": "x@1", "embedder": "e", "head": {}, "timings": {}}
    report = render_report(metrics, details, [], SimpleNamespace(test="v.csv", limit=None, seed=0, target_precision=0.9))  # type: ignore[arg-type]
    assert "| <out of taxonomy> warranty | 2 | 0 | 0.000 | 0.000 | 0.000 | - |" in report  # no threshold: not a label


def test_thinned_curve_keeps_at_most_the_points_asked_and_the_last() -> None:
    conf = [i / 1000 for i in range(1000)]
    curve = m.thinned_curve(conf, [c > 0.3 for c in conf], points=50)
    assert len(curve) <= 50 and curve[-1]["coverage"] == 1.0 and curve[-1]["precision"] == pytest.approx(0.699)
    assert curve[0]["precision"] == 1.0 and curve == sorted(curve, key=lambda p: p["coverage"])


def test_a_written_calibration_loads_back_and_a_broken_one_is_refused_at_load(tmp_path) -> None:  # noqa: ANN001
    from agent.service import CalibrationError, load_calibration

    path = tmp_path / "calibration.json"
    FittedCalibration(thresholds={"service": {"*": 0.8, "billing": NEVER}}, out_of_scope_threshold=1.2, out_of_scope_score="similarity+confidence").write(path)
    loaded = load_calibration(path)
    assert loaded.threshold("service", "billing") == NEVER and loaded.out_of_scope_score == "similarity+confidence"
    assert load_calibration(tmp_path / "missing.json").default == 0.9  # none on disk: the default threshold
    path.write_text('{"llm_vote_weight": {"tier": 0.3}}', encoding="utf-8")
    assert load_calibration(path).llm_vote_weight == {"tier": 0.3}  # per axis; the others: the setting's
    for broken, says in (
        ("{not json", "unusable"),
        ('["a list"]', "JSON object"),
        ('{"out_of_scope_score": "vibes"}', "'vibes' is not one of"),
        ('{"thresholds": {"service": {"billing": "high"}}}', "thresholds.service: 'billing'"),
        ('{"llm_vote_weight": 3}', "llm_vote_weight"),
        ('{"llm_vote_weight": {"priority": 0.2}}', "llm_vote_weight"),
        ('{"llm_vote_weight": {"tier": 1.5}}', "llm_vote_weight"),
        ('{"default": -1}', "default"),
        ('{"confidence_models": {"service": {"features": ["top"], "coef": [1], "intercept": 0}}}', "re-fit it"),
        ('{"confidence_models": {"service": {"features": ["top", "nearest", "nearest_agrees", "nearest_if_agrees"], "coef": [1, 2], "intercept": 0}}}', "4 numeric"),
    ):
        path.write_text(broken, encoding="utf-8")
        with pytest.raises(CalibrationError, match=says) as err:
            load_calibration(path)
        assert str(path) in str(err.value) and "triage eval" in str(err.value)


def test_a_missing_calibration_is_a_warning_by_default_and_an_error_when_named(tmp_path, caplog) -> None:  # noqa: ANN001
    """A taxonomy written anew has no calibration beside it: every label then auto-applied on uncalibrated confidence
    without a word; a TRIAGE_CALIBRATION_PATH with a typo did the same. A new version of a taxonomy (README, "Changing
    the taxonomy") has no file beside it either, and the warning did not say that the previous version's calibration
    is taken, in the new ids, once TRIAGE_CALIBRATION_PATH names it."""
    from agent.service import CalibrationError, load_calibration

    with caplog.at_level("WARNING", logger="agent.service"):
        assert load_calibration(tmp_path / "mine.calibration.json").default == 0.9
    assert "no calibration file at" in caplog.text and "mine.calibration.json" in caplog.text and "triage eval" in caplog.text
    assert "point TRIAGE_CALIBRATION_PATH at the previous version's file" in caplog.text
    with pytest.raises(CalibrationError, match=r"TRIAGE_CALIBRATION_PATH names .*typo.json, which is not a file"):
        load_calibration(tmp_path / "typo.json", named=True)


def test_a_cached_calibration_that_no_longer_loads_is_fitted_again(tmp_path) -> None:  # noqa: ANN001
    from evals.runner import read_cached_calibration

    path = tmp_path / "calibration-abc.json"
    assert read_cached_calibration(path) is None
    FittedCalibration(thresholds={"service": {"*": 0.8}}).write(path)
    assert read_cached_calibration(path).threshold("service", "x") == 0.8
    path.write_text('{"confidence_models": {"service": {"features": ["an older set"], "coef": [1], "intercept": 0}}}', encoding="utf-8")
    assert read_cached_calibration(path) is None


def test_the_report_names_every_row_the_run_could_not_use() -> None:
    from evals.report import _left_out

    lines = _left_out({
        "train_without_text": ["row-3"], "train_without_label": 12, "train_unknown_labels": {"service": {"Compte / Konto": 12}},
        "test_without_text": [f"t{i}" for i in range(12)], "test_without_label": {"service": ["t-x"], "tier": []},
    })
    assert lines == [
        "- left out of train: 1 row(s) without text (`row-3`)",
        "- left out of train: 12 row(s) with no label on any scored axis",
        "- train service labels that are not in the taxonomy, not learned: 'Compte / Konto' × 12 (`--taxonomy auto` takes the train file's labels)",
        "- left out of test: 12 row(s) without text (`t0`, `t1`, `t2`, `t3`, `t4`, `t5`, `t6`, `t7`, `t8`, `t9` and 2 more)",
        "- not scored on service: 1 test row(s) with an empty label (`t-x`)",
    ]
    assert _left_out({}) == []


def test_an_llm_run_resumes_only_with_the_same_model_and_vote_weights() -> None:
    from pathlib import Path

    from agent.settings import Settings
    from evals.runner import EvalConfig, llm_identity

    def fingerprint(mode: str, **settings: object) -> str:
        cfg = EvalConfig(train=Path("t.csv"), test=Path("v.csv"), text=["text"], labels={"service": "y"}, out=Path("o"), mode=mode)
        return cfg.fingerprint("train-sha", "test-sha", "minilm", llm_identity(Settings(**settings)))

    assert fingerprint("proposal") == fingerprint("proposal", llm_vote_weight=0.5, llm_model="other")  # no LLM in it
    assert fingerprint("hybrid") != fingerprint("hybrid", llm_vote_weight={"service": 0.3})
    assert fingerprint("hybrid") != fingerprint("hybrid", llm_base_url="http://gpu-host:8000/v1")
    assert fingerprint("llm") == fingerprint("llm", llm_vote_weight=0.5)  # the LLM alone: its weight is always 1
    assert fingerprint("llm") != fingerprint("llm", llm_model="qwen2.5:7b")


def test_an_edited_taxonomy_file_is_a_new_run_and_a_new_calibration(tmp_path: Path) -> None:
    """The cached calibration and head, and a run directory, were keyed by the taxonomy's path only: after adding a
    label to the file, a new --out reused a head that never learned it, and the old --out resumed silently."""
    import shutil

    from agent.settings import REPO_ROOT, Settings
    from evals.runner import EvalConfig, run_fingerprint, taxonomy_sha

    data = tmp_path / "d.csv"
    data.write_text("text,y\nmy card never arrived,technical_support\nrefund the double charge,billing_payments\n", encoding="utf-8")
    taxonomy = tmp_path / "taxonomy.yaml"
    shutil.copy(REPO_ROOT / "knowledge_base" / "taxonomies" / "default.yaml", taxonomy)
    cfg = EvalConfig(train=data, test=data, text=["text"], labels={"service": "y"}, out=tmp_path / "o", taxonomy=str(taxonomy))
    settings = Settings(taxonomy_path=taxonomy)
    before = (run_fingerprint(cfg, settings), cfg.calibration_fingerprint("t", "e", taxonomy_sha(cfg, settings)))
    taxonomy.write_text(taxonomy.read_text(encoding="utf-8").replace("name: default", "name: edited", 1), encoding="utf-8")
    after = (run_fingerprint(cfg, settings), cfg.calibration_fingerprint("t", "e", taxonomy_sha(cfg, settings)))
    assert before[0] != after[0] and before[1] != after[1]
    in_force = EvalConfig(**{**cfg.__dict__, "taxonomy": None})  # no --taxonomy: the file in force counts the same way
    assert taxonomy_sha(in_force, settings) == taxonomy_sha(cfg, settings) is not None
    auto = EvalConfig(**{**cfg.__dict__, "taxonomy": "auto"})  # auto: the labels come from train alone
    assert taxonomy_sha(auto, settings) is None


def test_plots_of_unusual_label_sets_print_no_warnings(tmp_path: Path) -> None:
    """CJK labels printed one matplotlib warning per glyph per plot, and a test file of only out-of-scope rows an
    'identical low and high xlims' warning from an empty confusion matrix."""
    import warnings

    from evals import plots

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        plots.confusion_matrix(["汇率", "卡片丢失"], ["汇率", "汇率"], tmp_path / "c.png", title="cjk")
        plots.confusion_matrix([], [], tmp_path / "empty.png", title="none in scope")
    assert (tmp_path / "c.png").stat().st_size > 1000 and (tmp_path / "empty.png").stat().st_size > 1000


def test_a_resumed_run_appends_after_a_line_cut_by_a_killed_run(tmp_path: Path) -> None:
    """The first row a resumed run wrote joined the line a killed run had cut, so it was unreadable on every later
    resume (classified again each time) and predictions.jsonl was not valid JSONL."""
    import json

    from evals.runner import drop_cut_line, read_predictions

    path = tmp_path / "predictions.jsonl"
    path.write_text('{"id": "a", "x": 1}\n{"id": "b", "x"', encoding="utf-8")  # killed mid-write
    drop_cut_line(path)
    with path.open("a", encoding="utf-8") as fh:
        fh.write('{"id": "b", "x": 2}\n')
    assert read_predictions(path) == {"a": {"id": "a", "x": 1}, "b": {"id": "b", "x": 2}}
    assert [json.loads(line)["id"] for line in path.read_text(encoding="utf-8").splitlines()] == ["a", "b"]
    drop_cut_line(path)  # a whole file is left as it is
    assert path.read_text(encoding="utf-8").count("\n") == 2
    cut_first = tmp_path / "cut.jsonl"
    cut_first.write_text('{"id": "a"', encoding="utf-8")
    drop_cut_line(cut_first)
    assert cut_first.read_text(encoding="utf-8") == ""


def test_an_llm_run_whose_llm_gave_no_answer_says_so() -> None:
    """QA: a hybrid run against an endpoint that was down (TRIAGE_LLM_BASE_URL on a closed port) labelled every row
    from the proposal alone and reported it as a hybrid run, with no word on the console or in report.md."""
    from types import SimpleNamespace

    from evals.report import render_report
    from evals.runner import unanswered_by_llm

    def row(i: int, confidence: float | None) -> dict:
        return {**_record(i, "a", "a", 0.9), "vote": {"proposal": {}, "llm": {"service": "a" if confidence else None}, "llm_confidence": confidence}}

    records = [row(0, 0.8), row(1, None), row(2, None), {**_record(3, "a", "a", 0.9), "prediction": None, "error": "x"}]
    assert unanswered_by_llm(records, "hybrid") == ["1", "2"]
    assert unanswered_by_llm(records, "proposal") == []
    codec = LabelCodec.for_ids({"service": ["a", "b"]})
    metrics, details = compute_metrics(records, axes=["service"], codec=codec, fitted=FittedCalibration(thresholds={"service": {"*": 0.9}}), mode="hybrid", target=0.9, oos=False)
    llm = {"model": "m", "base_url": "http://127.0.0.1:9/v1", "vote_weight": {"service": 0.0, "channel": 0.15, "tier": 0.15}}
    details["context"] = {"train": "t.csv", "test": "v.csv", "n_train": 4, "dropped_oos_train": 0, "taxonomy": "x@1", "embedder": "e", "head": {},
                          "timings": {}, "llm": llm, "llm_unanswered": ["1", "2"]}
    report = render_report(metrics, details, [], SimpleNamespace(test="v.csv", limit=None, seed=0, target_precision=0.9))  # type: ignore[arg-type]
    assert "**the LLM gave no answer for 2 of 4 rows** (`1`, `2`): their labels are the proposal's alone" in report
    details["context"]["llm_unanswered"] = []
    assert "no answer" not in render_report(metrics, details, [], SimpleNamespace(test="v.csv", limit=None, seed=0, target_precision=0.9))  # type: ignore[arg-type]
    assert "(4 labelled rows stored)" in report


def test_an_llm_run_report_does_not_say_train_was_stored() -> None:
    """QA: --mode llm leaves the store empty (the LLM alone), but report.md said '400 labelled rows stored'."""
    from types import SimpleNamespace

    from evals.report import render_report

    records = [_record(0, "a", "a", 0.9)]
    codec = LabelCodec.for_ids({"service": ["a", "b"]})
    metrics, details = compute_metrics(records, axes=["service"], codec=codec, fitted=FittedCalibration(), mode="llm", target=0.9, oos=False)
    details["context"] = {"train": "t.csv", "test": "v.csv", "n_train": 4, "dropped_oos_train": 0, "taxonomy": "x@1", "embedder": "e", "head": {}, "timings": {}}
    report = render_report(metrics, details, [], SimpleNamespace(test="v.csv", limit=None, seed=0, target_precision=0.9))  # type: ignore[arg-type]
    assert "(4 labelled rows read for the labels, none stored: the LLM alone)" in report
