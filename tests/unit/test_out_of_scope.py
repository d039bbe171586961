"""The learned in-scope score: its features, its JSON model, the calibration that carries it, and its fit on
train by holding whole classes out (a synthetic set where the unknown classes really are apart)."""

from __future__ import annotations

import numpy as np
import pytest

from agent.contracts import EvidenceTicket
from agent.out_of_scope import FEATURES, TOP_K, InScopeModel, in_scope_features
from agent.proposal import HeadOptions
from agent.settings import REPO_ROOT
from agent.state import Calibration
from agent.taxonomy import load_taxonomy
from evals.calibration import fit_oos_threshold
from evals.datasets import EvalRow
from evals.runner import derive_taxonomy


def ticket(score: float, service: str) -> EvidenceTicket:
    return EvidenceTicket(id=f"t{score}", score=score, labels={"service": service})


def test_features_read_the_neighbours_and_the_first_axis_of_the_proposal() -> None:
    neighbours = [ticket(0.9, "a"), ticket(0.8, "b"), ticket(0.7, "a")]
    proposal = {"service": {"a": 0.6, "b": 0.3, "c": 0.1}, "tier": {"L1": 1.0}}
    f = dict(zip(FEATURES, in_scope_features(neighbours, proposal), strict=True))
    assert f["nearest"] == 0.9 and f["mean_top3"] == pytest.approx(0.8) and f["mean_top8"] == pytest.approx(2.4 / TOP_K)
    assert f["nearest_same_label"] == 0.9 and f["share_same_label"] == 2 / TOP_K and f["nearest_other_label"] == 0.8
    assert f["top"] == 0.6 and f["margin"] == pytest.approx(0.3) and f["nearest_plus_top"] == pytest.approx(1.5)
    assert f["distinct_labels"] == 2 and f["top3_mass"] == pytest.approx(1.0) and f["spread"] == 0.9  # 5 empty slots
    assert in_scope_features([], {}) == [0.0] * len(FEATURES)  # nothing retrieved, no proposal


def separable(n: int = 300, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    inside = rng.normal(1.0, 0.3, size=(n, len(FEATURES)))
    outside = rng.normal(0.0, 0.3, size=(n, len(FEATURES)))
    return np.vstack([inside, outside]), np.r_[np.ones(n), np.zeros(n)]


def test_the_model_learns_survives_its_json_and_refuses_a_broken_one() -> None:
    x, y = separable()
    model = InScopeModel.fit(x, y)
    assert model.probability([1.0] * len(FEATURES)) > 0.9 > 0.1 > model.probability([0.0] * len(FEATURES))
    again = InScopeModel.from_json(model.to_json())
    assert again.probability(x[0]) == pytest.approx(model.probability(x[0]), abs=1e-4)
    broken = model.to_json() | {"features": ["nearest"]}
    with pytest.raises(ValueError, match="names the features"):
        InScopeModel.from_json(broken)
    net = model.to_json()["networks"][0]
    with pytest.raises(ValueError, match="do not fit its features"):
        InScopeModel.from_json(model.to_json() | {"networks": [net | {"output_weights": [1.0]}]})
    with pytest.raises(ValueError, match="malformed"):
        InScopeModel.from_json(model.to_json() | {"mean": [float("nan")] * len(FEATURES)})
    with pytest.raises(ValueError, match="malformed"):
        InScopeModel.from_json(model.to_json() | {"networks": "none"})


def test_the_model_averages_its_networks_and_reads_a_one_network_file_written_before() -> None:
    x, y = separable()
    model = InScopeModel.fit(x, y, members=3)
    assert len(model.nets) == 3 and len({n.output_bias for n in model.nets}) == 3  # three seeds, three networks
    z = (x[0] - np.array(model.mean)) / np.array(model.scale)
    assert model.probability(x[0]) == pytest.approx(np.mean([n.probability(z) for n in model.nets]))
    raw = model.to_json()
    older = {k: v for k, v in raw.items() if k != "networks"} | raw["networks"][0]  # the format of one network
    single = InScopeModel.from_json(older)
    assert len(single.nets) == 1 and single.probability(x[0]) == pytest.approx(model.nets[0].probability(z), abs=1e-4)
    with pytest.raises(ValueError, match="both in-scope and out-of-scope"):
        InScopeModel.fit(x[:10], np.ones(10))


def test_a_calibration_scores_with_its_model_and_refuses_a_learned_rule_without_one() -> None:
    x, y = separable()
    model = InScopeModel.fit(x, y).to_json()
    calibration = Calibration(out_of_scope_threshold=0.5, out_of_scope_score="learned", out_of_scope_model=model)
    near = [ticket(0.95, "a")] * TOP_K
    far = [ticket(0.2, "a"), ticket(0.19, "b"), ticket(0.18, "c")]
    sure, unsure = {"service": {"a": 0.97, "b": 0.03}}, {"service": {"a": 0.3, "b": 0.3, "c": 0.4}}
    assert 0.0 <= calibration.in_scope(far, unsure) < calibration.in_scope(near, sure) <= 1.0
    assert Calibration(out_of_scope_score="similarity+confidence").in_scope(near, sure) == pytest.approx(0.95 + 0.97)
    with pytest.raises(ValueError, match="needs an out_of_scope_model"):
        Calibration(out_of_scope_threshold=0.5, out_of_scope_score="learned")
    with pytest.raises(ValueError, match="out_of_scope_model"):
        Calibration(out_of_scope_threshold=0.5, out_of_scope_score="learned", out_of_scope_model={"features": []})


def clustered(classes: int, per_class: int, seed: int = 0) -> tuple[list[str], np.ndarray, list[str]]:
    """Texts, unit vectors around one random centre per class, and the class names."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(classes, 32))
    vectors, texts, labels = [], [], []
    for k in range(classes):
        for i in range(per_class):
            vectors.append(centres[k] + rng.normal(scale=0.6, size=32))
            texts.append(f"topic{k} word{k}x item {i} {'common ' * (i % 3)}")
            labels.append(f"c{k}")
    v = np.array(vectors)
    return texts, (v / np.linalg.norm(v, axis=1, keepdims=True)).astype(np.float32), labels


def test_fit_oos_threshold_trains_the_model_on_held_out_classes_and_falls_back_when_train_is_small() -> None:
    texts, vectors, classes = clustered(classes=20, per_class=30)
    base = load_taxonomy(REPO_ROOT / "knowledge_base" / "taxonomies" / "default.yaml")
    taxonomy, codec = derive_taxonomy([EvalRow(id=str(i), text=t, labels={"service": c}) for i, (t, c) in enumerate(zip(texts, classes, strict=True))], ["service"], base, "synthetic")
    labels = {"service": [codec.encode("service", c) for c in classes]}
    options = HeadOptions(mlp_hidden=16)
    threshold, stats, model = fit_oos_threshold(texts, vectors, labels, taxonomy, rule="learned", options=options, jobs=1)
    assert stats["score"] == "learned" and model is not None and 0.0 < threshold < 1.0
    assert stats["train_false_flag_rate"] == pytest.approx(0.08, abs=0.02)
    assert stats["train_oos_recall"] > 0.5  # the unknown classes sit apart: most of them are flagged at 8 % false flags
    assert Calibration(out_of_scope_threshold=threshold, out_of_scope_score="learned", out_of_scope_model=model).out_of_scope_model

    few = slice(0, 5 * 30)  # 5 classes: a few dozen held-out rows, too few to learn from
    _, small, no_model = fit_oos_threshold(texts[few], vectors[few], {"service": labels["service"][few]}, taxonomy, rule="learned", options=options, jobs=1)
    assert small["score"] == "similarity+confidence" and no_model is None
