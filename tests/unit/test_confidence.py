"""The confidence model: features, what `decide` reports with it, how cross-validation fits it."""

from __future__ import annotations

import random

import numpy as np

from agent.confidence import FEATURES, ConfidenceModel, confidence_features
from agent.contracts import EvidenceTicket
from agent.nodes.decide import axis_label
from evals.calibration import FittedCalibration, OutOfFold, fit_axis_thresholds, fit_confidence_model


def neighbour(label: str, score: float) -> EvidenceTicket:
    return EvidenceTicket(id=f"t-{label}-{score}", score=score, labels={"service": label})


def test_features_say_how_close_the_nearest_ticket_is_and_whether_it_agrees() -> None:
    dist = {"billing": 0.6, "network": 0.3, "cloud": 0.1}
    assert confidence_features(dist, [neighbour("billing", 0.97), neighbour("network", 0.5)], "service") == [0.6, 0.97, 1.0, 0.97]
    assert confidence_features(dist, [neighbour("network", 0.9)], "service") == [0.6, 0.9, 0.0, 0.0]
    assert confidence_features(dist, [], "service") == [0.6, 0.0, 0.0, 0.0]
    assert confidence_features({}, [], "service") == [0.0, 0.0, 0.0, 0.0]


def test_the_model_reports_its_probability_but_never_changes_the_label() -> None:
    model = ConfidenceModel(coef=(1.0, 0.0, 0.0, 4.0), intercept=-3.0)
    assert ConfidenceModel.from_json(model.to_json()) == model and model.to_json()["features"] == list(FEATURES)
    dist = {"billing": 0.5, "network": 0.4, "cloud": 0.1}
    far = model.rescale(dist, [neighbour("network", 0.6)], "service")  # nearest disagrees: low
    near = model.rescale(dist, [neighbour("billing", 0.99)], "service")  # a near-duplicate agrees: high
    assert far["billing"] < 0.2 < 0.8 < near["billing"]
    assert abs(sum(far.values()) - 1.0) < 1e-9 and far["network"] / far["cloud"] == 4.0  # the rest keeps its order
    label = axis_label(dist, llm_label=None, fallback="general", shown=far)
    assert label.label == "billing" and label.confidence == round(far["billing"], 4)  # still the top label
    # the rest's shares (0.68, 0.17) would outrank it: capped at the chosen label's confidence, order kept
    assert [(a.label, a.confidence) for a in label.alternatives] == [("network", label.confidence), ("cloud", label.confidence)]


def test_cross_validation_fits_a_model_that_trusts_agreeing_near_duplicates() -> None:
    """Out-of-fold rows where an agreeing near-duplicate means right and the top probability means little: the
    model learns it, the file carries it, and a class where nothing is learnable keeps its plain thresholds."""
    rng = random.Random(0)
    proposals, neighbours, gold = [], [], []
    for _ in range(600):
        duplicate = rng.random() < 0.3
        right = rng.random() < (0.97 if duplicate else 0.4)
        top = rng.uniform(0.4, 0.7)
        proposals.append({"service": {"billing": top, "network": 1 - top}})
        neighbours.append([neighbour("billing", 0.98) if duplicate else neighbour("network", rng.uniform(0.4, 0.7))])
        gold.append("billing" if right else "network")
    oof = OutOfFold(proposals=proposals, nearest=np.zeros(600), neighbours=neighbours)
    fit = fit_axis_thresholds(oof, {"service": gold}, ["service"], 0.9)["service"]
    assert fit.confidence_model is not None
    assert fit.confidence_model.probability([0.5, 0.98, 1.0, 0.98]) > 0.85 > 0.5 > fit.confidence_model.probability([0.5, 0.6, 0.0, 0.0])
    assert fit.thresholds["billing"] < 1.0  # the duplicates alone reach 90 %: auto-applied
    written = FittedCalibration.from_fits({"service": fit}, {"n": 600})
    assert written.confidence_model("service").to_json() == fit.confidence_model.to_json() and written.fitted_on["service_cv_accuracy"] == fit.accuracy
    without = fit_axis_thresholds(oof, {"service": gold}, ["service"], 0.9, confidence_model=False)["service"]
    assert without.confidence_model is None and without.thresholds["billing"] > 1.0  # the top probability alone never gets there


def test_no_model_when_right_or_wrong_is_too_rare_to_learn() -> None:
    assert fit_confidence_model([[0.9, 0.9, 1.0, 0.9]] * 100, [True] * 95 + [False] * 5) is None
    assert fit_confidence_model([[0.9, 0.9, 1.0, 0.9]] * 30 + [[0.2, 0.3, 0.0, 0.0]] * 30, [True] * 30 + [False] * 30) is not None


def test_alternatives_never_outrank_the_chosen_label_on_a_vague_ticket() -> None:
    """QA F3: 'need info' routed orders_delivery at 0.213 while account_management showed 0.468."""
    dist = {"orders_delivery": 0.30, "account_management": 0.29, "general_information": 0.24, "billing_payments": 0.17}
    shown = {"orders_delivery": 0.213, "account_management": 0.468, "general_information": 0.225, "billing_payments": 0.094}
    label = axis_label(dist, llm_label=None, fallback="general_information", shown=shown)
    assert label.label == axis_label(dist, llm_label=None, fallback="general_information").label == "orders_delivery"
    assert label.confidence == 0.213
    confidences = [a.confidence for a in label.alternatives]
    assert [a.label for a in label.alternatives] == ["account_management", "general_information", "billing_payments"]
    assert confidences == sorted(confidences, reverse=True) and max(confidences) <= label.confidence
    assert confidences[-1] == 0.094  # below the cap: its share of the rest, unchanged


def test_alternatives_below_the_chosen_label_keep_their_share() -> None:
    model = ConfidenceModel(coef=(1.0, 0.0, 0.0, 4.0), intercept=-3.0)
    dist = {"billing": 0.5, "network": 0.4, "cloud": 0.1}
    near = model.rescale(dist, [neighbour("billing", 0.99)], "service")
    label = axis_label(dist, llm_label=None, fallback="general", shown=near)
    assert [(a.label, a.confidence) for a in label.alternatives] == [("network", round(near["network"], 4)), ("cloud", round(near["cloud"], 4))]


def test_an_axis_with_one_train_label_is_never_auto_applied() -> None:
    """QA: a tier column that was all L2 in train fitted thresholds that looked perfect out of fold (every answer L2
    and right), and the test run auto-applied every ticket at precision 0.53 against a 0.9 target."""
    oof = OutOfFold(proposals=[{"tier": {"L2": 1.0}} for _ in range(200)], nearest=np.zeros(200), neighbours=[[] for _ in range(200)])
    fit = fit_axis_thresholds(oof, {"tier": ["L2"] * 200}, ["tier"], 0.9)["tier"]
    assert fit.thresholds == {"*": 1.001} and fit.confidence_model is None
    two = fit_axis_thresholds(oof, {"tier": ["L2"] * 199 + ["L1"]}, ["tier"], 0.9)["tier"]
    assert two.thresholds["*"] <= 1.0  # two labels learned: the usual fit (reached at confidence 1.0)
