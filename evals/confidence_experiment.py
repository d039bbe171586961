"""Which signals the confidence model uses (agent/confidence.py): the comparison behind FEATURES, rerunnable.

On a bench split: out-of-fold proposals of train (`evals.calibration.out_of_fold`, the shipped head, 5 folds),
then per candidate signal set a logistic model + per-class thresholds (target 0.9) chosen by **nested**
cross-validation on those train rows only (fitted on four folds' rows, applied to the fifth; fold seed 1).
Printed per candidate: coverage, precision and ECE (nested and test), the AUC of right-vs-wrong, and the most
test rows any one threshold could route at 90 % (a ceiling, chosen on test).
The test columns fit on all train rows and apply to the test split's proposals (head on all train, neighbours
from all train): shown for information, never used to choose.

    python -m evals.confidence_experiment tobi_queue
    python -m evals.confidence_experiment banking77
"""

from __future__ import annotations

import argparse
import json
import math
from collections.abc import Sequence

import numpy as np
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score
from sklearn.model_selection import StratifiedKFold

from agent.confidence import confidence_features
from agent.contracts import EvidenceTicket
from agent.proposal import Distribution, HeadOptions, ProposalHead, propose_distribution
from evals import calibration as cal
from evals import metrics as m
from evals.experiments import DATASETS, load


def _signals(dist: Distribution, neighbours: Sequence[EvidenceTicket]) -> dict[str, float]:
    top, nearest, agrees, product = confidence_features(dist, neighbours, "service")
    ranked = sorted(dist.values(), reverse=True)
    label = max(dist, key=lambda k: dist[k]) if dist else None
    weights = [max(n.score, 0.0) ** 3 for n in neighbours]
    share = sum(w for w, n in zip(weights, neighbours, strict=True) if n.labels.get("service") == label) / (sum(weights) or 1.0)
    return {
        "top": top, "nearest": nearest, "nearest_agrees": agrees, "nearest_if_agrees": product,
        "margin": top - (ranked[1] if len(ranked) > 1 else 0.0), "neighbour_share": share, "log_top": math.log(top + 1e-6),
    }


CANDIDATES: dict[str, list[str] | None] = {
    "top probability (no model)": None,
    "logistic on top": ["top"],
    "top + margin": ["top", "margin"],
    "top + nearest_if_agrees": ["top", "nearest_if_agrees"],
    "top + nearest + nearest_agrees + nearest_if_agrees (shipped)": ["top", "nearest", "nearest_agrees", "nearest_if_agrees"],
    "top + margin + nearest_if_agrees + neighbour_share": ["top", "margin", "nearest_if_agrees", "neighbour_share"],
    "all seven": ["top", "margin", "nearest", "nearest_agrees", "nearest_if_agrees", "neighbour_share", "log_top"],
}


def rows(proposals: Sequence[Distribution], neighbours: Sequence[Sequence[EvidenceTicket]], gold: Sequence[str]) -> tuple[list[str], list[dict[str, float]], np.ndarray]:
    preds, signals, correct = [], [], []
    for dist, found, g in zip(proposals, neighbours, gold, strict=True):
        label, _ = cal.top(dist)
        preds.append(label or "")
        signals.append(_signals(dist, found))
        correct.append(label == g)
    return preds, signals, np.array(correct)


def scores(names: list[str] | None, fit_on: list[dict[str, float]], ok: np.ndarray, apply_to: list[dict[str, float]]) -> tuple[np.ndarray, np.ndarray]:
    """The confidence of the `fit_on` rows and of the `apply_to` rows under this candidate."""
    if names is None:
        return np.array([s["top"] for s in fit_on]), np.array([s["top"] for s in apply_to])
    x_fit = np.array([[s[n] for n in names] for s in fit_on])
    x_apply = np.array([[s[n] for n in names] for s in apply_to])
    model = LogisticRegression(C=1.0, max_iter=2000).fit(x_fit, ok.astype(int))
    return model.predict_proba(x_fit)[:, 1], model.predict_proba(x_apply)[:, 1]


def best_coverage(conf: np.ndarray, ok: np.ndarray, target: float = 0.9) -> float:
    """The most rows any single threshold routes at `target` precision (chosen on these rows: a ceiling)."""
    order = np.argsort(-conf, kind="stable")
    precision = np.cumsum(ok[order]) / np.arange(1, len(order) + 1)
    reaching = np.nonzero(precision >= target)[0]
    return float((reaching.max() + 1) / len(order)) if len(reaching) else 0.0


def routed(preds: list[str], conf: np.ndarray, thresholds: dict[str, float]) -> np.ndarray:
    return np.array([c >= thresholds.get(p, thresholds["*"]) for p, c in zip(preds, conf, strict=True)])


def compare(dataset: str) -> list[dict[str, object]]:
    data = load(dataset)
    labels = {"service": data["train_y"]}
    opts = HeadOptions()
    oof = cal.out_of_fold(data["train_text"], data["train_v"], labels, data["taxonomy"], folds=5, seed=0, options=opts, progress=True)
    preds, signals, ok = rows([p["service"] for p in oof.proposals], oof.neighbours, data["train_y"])
    head = ProposalHead.fit(data["train_text"], data["train_v"], labels, data["taxonomy"], options=opts)
    ids = [f"t{i}" for i in range(len(data["train_y"]))]
    found = cal.nearest_neighbours(data["test_v"], data["train_v"], [{"service": y} for y in data["train_y"]], ids, 8)
    test_props = [propose_distribution(p, n, data["taxonomy"], knn_weight=opts.knn_weight, dup_low=opts.dup_low, dup_high=opts.dup_high)["service"] for p, n in zip(head.predict(data["test_text"], data["test_v"]), found, strict=True)]
    t_preds, t_signals, t_ok = rows(test_props, found, data["test_y"])
    out = []
    for name, names in CANDIDATES.items():
        nested_conf = np.zeros(len(ok))
        nested_routed = np.zeros(len(ok), dtype=bool)
        for fit_idx, held in StratifiedKFold(5, shuffle=True, random_state=1).split(np.zeros(len(ok)), preds):
            fit_conf, held_conf = scores(names, [signals[i] for i in fit_idx], ok[fit_idx], [signals[i] for i in held])
            thresholds = cal.fit_thresholds([preds[i] for i in fit_idx], list(fit_conf), list(ok[fit_idx]), 0.9)
            nested_conf[held] = held_conf
            nested_routed[held] = routed([preds[i] for i in held], held_conf, thresholds)
        fit_conf, test_conf = scores(names, signals, ok, t_signals)
        test_routed = routed(t_preds, test_conf, cal.fit_thresholds(preds, list(fit_conf), list(ok), 0.9))
        out.append({
            "dataset": dataset,
            "candidate": name,
            "nested_coverage": round(float(nested_routed.mean()), 4),
            "nested_precision": round(float(ok[nested_routed].mean()), 4) if nested_routed.any() else None,
            "nested_ece": round(m.expected_calibration_error(list(nested_conf), list(ok)), 4),
            "test_coverage": round(float(test_routed.mean()), 4),
            "test_precision": round(float(t_ok[test_routed].mean()), 4) if test_routed.any() else None,
            "test_ece": round(m.expected_calibration_error(list(test_conf), list(t_ok)), 4),
            "nested_auc": round(float(roc_auc_score(ok, nested_conf)), 4),
            "test_auc": round(float(roc_auc_score(t_ok, test_conf)), 4),
            "test_best_coverage_at_0.9": round(best_coverage(test_conf, t_ok), 4),
        })
        print(json.dumps(out[-1]), flush=True)
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("dataset", choices=sorted(DATASETS))
    compare(parser.parse_args(argv).dataset)


if __name__ == "__main__":
    main()
