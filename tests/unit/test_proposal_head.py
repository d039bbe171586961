"""The proposal head's fast paths must give what the slow ones did: cross-validation splits each fold's head into
jobs and scales the SVM once on the pooled folds, yet proposes exactly what the graph (`ProposalHead.predict` +
`propose_distribution`) would at that scale; the lean TF-IDF transform gives sklearn's matrix."""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import pytest

from agent.proposal import HeadOptions, ProposalHead, SoftmaxSVC, propose_distribution, tfidf_transform
from agent.taxonomy import load_taxonomy
from evals.calibration import MANY_ROWS, _folds, default_folds, out_of_fold

TAXONOMY = load_taxonomy(Path(__file__).parents[2] / "knowledge_base" / "taxonomies" / "default.yaml")
WORDS = {
    "billing_payments": "invoice refund charge payment card billed",
    "technical_support": "error crash login broken install update",
    "account_management": "password email profile address username settings",
    "cancellation_retention": "cancel close subscription leave terminate contract",
}


def corpus(n_per_label: int = 30, seed: int = 0) -> tuple[list[str], np.ndarray, dict[str, list[str | None]]]:
    """Noisy texts (a third of each text is another label's words) and vectors that carry the label weakly."""
    rng = random.Random(seed)
    np_rng = np.random.default_rng(seed)
    labels = sorted(WORDS)
    texts, vectors, ys = [], [], []
    for k, label in enumerate(labels):
        for _ in range(n_per_label):
            other = labels[rng.randrange(len(labels))]
            words = rng.choices(WORDS[label].split(), k=4) + rng.choices(WORDS[other].split(), k=2)
            texts.append(" ".join(rng.sample(words, len(words))))
            v = np_rng.normal(size=16)
            v[k] += 1.5
            vectors.append(v / np.linalg.norm(v))
            ys.append(label)
    return texts, np.array(vectors, dtype=np.float32), {"service": ys}


@pytest.mark.parametrize("jobs", [1, 2])
def test_out_of_fold_proposals_are_the_graphs_at_the_pooled_scale(jobs: int) -> None:
    texts, vectors, labels = corpus()
    opts = HeadOptions(mlp_hidden=16)
    oof = out_of_fold(texts, vectors, labels, TAXONOMY, folds=3, seed=0, options=opts, jobs=jobs)
    assert set(oof.svm_scales) == {"service"} and oof.svm_scales["service"] in SoftmaxSVC.SCALES
    strata = [str(y) for y in labels["service"]]
    for train_idx, held_idx in _folds(len(texts), strata, 3, 0):
        head = ProposalHead.fit(
            [texts[i] for i in train_idx], vectors[train_idx], {"service": [labels["service"][i] for i in train_idx]},
            TAXONOMY, options=opts, svm_scales=oof.svm_scales,
        )
        assert head.heads["service"].scale == oof.svm_scales["service"] and "service" in head.mlps
        for j, probs in enumerate(head.predict([texts[i] for i in held_idx], vectors[held_idx])):
            i = held_idx[j]
            expected = propose_distribution(probs, oof.neighbours[i], TAXONOMY, knn_weight=opts.knn_weight)["service"]
            got = oof.proposals[i]["service"]
            assert set(got) == set(expected)
            assert max(abs(got[k] - expected[k]) for k in got) < 1e-9  # the SVM is seeded: the same fit, the same numbers


def test_best_scale_finds_the_temperature_the_labels_were_drawn_at() -> None:
    rng = np.random.default_rng(1)
    decision = rng.normal(size=(4000, 5))
    truth = np.array([rng.choice(5, p=p) for p in SoftmaxSVC.softmax(4.0 * decision)])
    assert SoftmaxSVC.best_scale([(decision, truth)]) == pytest.approx(4.0)
    halves = [(decision[:2000], truth[:2000]), (decision[2000:], truth[2000:])]  # pooled folds: the same answer
    assert SoftmaxSVC.best_scale(halves) == pytest.approx(4.0)


def test_a_given_scale_skips_the_holdout_and_a_missing_one_is_fitted() -> None:
    texts, vectors, labels = corpus()
    given = ProposalHead.fit(texts, vectors, labels, TAXONOMY, svm_scales={"service": 3.17})
    assert given.heads["service"].scale == 3.17
    fitted = ProposalHead.fit(texts, vectors, labels, TAXONOMY)
    assert fitted.heads["service"].scale in SoftmaxSVC.SCALES and fitted.heads["service"].scale != 1.0


def test_the_lean_tfidf_transform_is_sklearns() -> None:
    texts, vectors, labels = corpus()
    head = ProposalHead.fit(texts, vectors, labels, TAXONOMY)
    assert head.vectorizer is not None
    new = [
        "refund my card payment", "", "!!!", "Sehr geehrtes Support-Team, die Rechnung ist falsch",
        "unseen words only zzz qqq", texts[0], "a " * 300,
    ]
    for batch in ([t] for t in new), [new]:
        for chunk in batch:
            lean = tfidf_transform(head.vectorizer, chunk)
            reference = head.vectorizer.transform(chunk)
            assert lean.shape == reference.shape
            assert abs(lean - reference).max() < 1e-12


def test_large_train_files_are_cross_validated_in_three_folds() -> None:
    assert default_folds(8) == 5 and default_folds(MANY_ROWS - 1) == 5
    assert default_folds(MANY_ROWS) == 3 and default_folds(10_003) == 3


def test_a_head_fits_on_a_few_texts_that_share_no_character_ngram() -> None:
    """A cross-validation fold of a tiny train file: its texts share no character n-gram, which min_df 2 would need."""
    texts = ["hi", "ok", "yes"]
    vectors = np.eye(3, 16, dtype=np.float32)
    head = ProposalHead.fit(texts, vectors, {"service": ["billing_payments", "technical_support", "billing_payments"]}, TAXONOMY, options=HeadOptions(mlp_hidden=4))
    (probs,) = head.predict(["hello"], vectors[:1])
    assert set(probs["service"]) == {"billing_payments", "technical_support"}
