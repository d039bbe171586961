"""Head experiments on the bench splits: the numbers behind the choices in agent/proposal.py (evals/README.md).

Same split files as the bench, same cached embeddings, same `propose_distribution` mix, but train -> test only
(no Chroma, no graph, no threshold fitting), so a variant costs seconds to a minute instead of a full run.

    python -m evals.experiments banking77 --variant base --variant svm:C=0.5 --variant lr:C=30,dense_weight=2
    python -m evals.experiments tobi_queue --variant svm:C=0.3,knn_weight=0.1
    python -m evals.experiments tier --seed-tickets handwritten --variant svm:C=1   # 5-fold CV on the tier gold set
    python -m evals.experiments oos --variant base      # out-of-scope scores on the banking77_oos split

A variant is `NAME[:key=value,...]` where NAME is a label only unless it is lr or svm (the classifier), and the
keys are HeadOptions fields (word, char, dense, dense_weight, C, class_weight, knn_weight, classifier).
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import asdict, replace
from pathlib import Path

import numpy as np

from agent.proposal import HeadOptions, ProposalHead, propose_distribution
from agent.service import make_embedder
from agent.settings import Settings
from evals import metrics as m
from evals import splits
from evals.calibration import nearest_neighbours, top
from evals.datasets import load_rows
from evals.runner import CachedEmbedder, derive_taxonomy, normalized

DATASETS = {
    "banking77": (splits.banking77, ["text"], "category"),
    "tobi_queue": (splits.tobi_queue, ["subject", "body"], "queue"),
    "bitext": (splits.bitext, ["instruction"], "category"),
}


def parse_variant(spec: str) -> tuple[str, HeadOptions]:
    name, _, rest = spec.partition(":")
    opts = HeadOptions()
    if name in ("lr", "svm", "ensemble"):
        opts = replace(opts, classifier=name)
    for item in filter(None, rest.split(",")):
        key, _, value = item.partition("=")
        current = getattr(opts, key)
        if isinstance(current, bool):
            parsed: object = value.lower() in ("1", "true", "yes")
        elif isinstance(current, float):
            parsed = float(value)
        elif value in ("", "none", "None"):
            parsed = None
        elif current is None:
            try:
                parsed = float(value)
            except ValueError:
                parsed = value
        elif isinstance(current, str):
            parsed = value
        else:
            parsed = type(current)(value)
        opts = replace(opts, **{key: parsed})
    return spec, opts


def load(dataset: str) -> dict:
    prepare, text_cols, label_col = DATASETS[dataset]
    train_path, test_path = prepare(splits.RUNS / "splits" / dataset)
    train = load_rows(train_path, text_cols, {"service": label_col})
    test = load_rows(test_path, text_cols, {"service": label_col})
    taxonomy, codec = derive_taxonomy(train, ["service"], _base_taxonomy(), train_path.name)
    embedder = CachedEmbedder(make_embedder(Settings()), splits.RUNS / ".cache" / "embeddings.sqlite")
    tr_text = [normalized(r.text) for r in train]
    te_text = [normalized(r.text) for r in test]
    return {
        "taxonomy": taxonomy,
        "codec": codec,
        "train_text": tr_text,
        "test_text": te_text,
        "train_y": [codec.encode("service", r.labels["service"]) for r in train],
        "test_y": [codec.encode("service", r.labels["service"]) for r in test],
        "train_v": embedder.embed_batched(tr_text, progress=True, desc="embedding train"),
        "test_v": embedder.embed_batched(te_text, progress=True, desc="embedding test"),
    }


def _base_taxonomy():
    from agent.taxonomy import load_taxonomy

    return load_taxonomy(Settings().taxonomy_path)


def evaluate(data: dict, opts: HeadOptions, top_k: int = 8) -> dict:
    t0 = time.perf_counter()
    head = ProposalHead.fit(data["train_text"], data["train_v"], {"service": data["train_y"]}, data["taxonomy"], options=opts)
    fit_s = time.perf_counter() - t0
    probs = head.predict(data["test_text"], data["test_v"])
    ids = [f"t{i}" for i in range(len(data["train_y"]))]
    neighbours = nearest_neighbours(data["test_v"], data["train_v"], [{"service": y} for y in data["train_y"]], ids, top_k)
    preds, confs = [], []
    for p, n in zip(probs, neighbours, strict=True):
        label, conf = top(propose_distribution(p, n, data["taxonomy"], knn_weight=opts.knn_weight, dup_low=opts.dup_low, dup_high=opts.dup_high)["service"])
        preds.append(label or "")
        confs.append(conf)
    gold = data["test_y"]
    correct = [g == p for g, p in zip(gold, preds, strict=True)]
    return {
        "accuracy": round(m.accuracy(gold, preds), 4),
        "macro_f1": round(m.macro_f1(gold, preds), 4),
        "ece": round(m.expected_calibration_error(confs, correct), 4),
        "fit_s": round(fit_s, 1),
    }


def tier_cv(opts: HeadOptions, seed_tickets: str, folds: int = 5, top_k: int = 8, extra_seed: Path | None = None) -> dict:
    """5-fold CV on the tier gold set (the bench's folds); train = other folds + seed tickets (none/handwritten/all)
    + the candidate seed lines of `extra_seed` (a JSONL file in the seed format), to measure them before adding."""
    import json as _json

    from agent.taxonomy import load_taxonomy

    taxonomy = load_taxonomy(Settings().taxonomy_path)
    embedder = CachedEmbedder(make_embedder(Settings()), splits.RUNS / ".cache" / "embeddings.sqlite")
    gold = splits.tier_gold_rows()
    fold = splits.kfold_stratified(gold, lambda r: r["tier"], folds, splits.SPLIT_SEED)

    def text(subject: str, body: str) -> str:
        return normalized("\n\n".join(x for x in (subject.strip(), body.strip()) if x))

    gt = [text(r["subject"], r["body"]) for r in gold]
    gv = embedder.embed_batched(gt)
    gy = [r["tier"] for r in gold]
    seed_path = Settings().knowledge_base_dir / "seed" / "tickets.jsonl"
    seed = [_json.loads(line) for line in seed_path.read_text(encoding="utf-8").splitlines() if line.strip()] if seed_path.is_file() else []
    seed = [s for s in seed if s["labels"].get("tier") and (seed_tickets == "all" or (seed_tickets == "handwritten" and s["source"] == "handwritten"))]
    if extra_seed is not None:
        seed += [_json.loads(line) for line in extra_seed.read_text(encoding="utf-8").splitlines() if line.strip()]
    st = [text(s.get("subject", ""), s["body"]) for s in seed]
    sv = embedder.embed_batched(st) if st else np.zeros((0, gv.shape[1]), dtype=np.float32)
    sy = [s["labels"]["tier"] for s in seed]
    preds: list[str] = [""] * len(gold)
    for k in range(folds):
        tr = [i for i in range(len(gold)) if fold[i] != k]
        te = [i for i in range(len(gold)) if fold[i] == k]
        texts, vectors, ys = [gt[i] for i in tr] + st, np.vstack([gv[tr], sv]), [gy[i] for i in tr] + sy
        head = ProposalHead.fit(texts, vectors, {"tier": ys}, taxonomy, options=opts)
        probs = head.predict([gt[i] for i in te], gv[te])
        neighbours = nearest_neighbours(gv[te], vectors, [{"tier": y} for y in ys], [str(j) for j in range(len(ys))], top_k)
        for j, i in enumerate(te):
            dist = propose_distribution(probs[j], neighbours[j], taxonomy, knn_weight=opts.knn_weight, dup_low=opts.dup_low, dup_high=opts.dup_high)
            preds[i] = top(dist["tier"])[0] or ""
    return {"accuracy": round(m.accuracy(gy, preds), 4), "macro_f1": round(m.macro_f1(gy, preds), 4), "n_seed": len(st)}


def oos_scores(opts: HeadOptions, top_k: int = 8) -> list[dict]:
    """Banking77 held-out intents: OOS recall and in-scope accuracy when flagging by three scores at fixed budgets."""
    train_path, test_path = splits.banking77_oos(splits.RUNS / "splits" / "banking77_oos")
    train = load_rows(train_path, ["text"], {"service": "category"})
    test = load_rows(test_path, ["text"], {"service": "category"})
    taxonomy, codec = derive_taxonomy(train, ["service"], _base_taxonomy(), train_path.name)
    embedder = CachedEmbedder(make_embedder(Settings()), splits.RUNS / ".cache" / "embeddings.sqlite")
    tr_text, te_text = [normalized(r.text) for r in train], [normalized(r.text) for r in test]
    tr_v, te_v = embedder.embed_batched(tr_text), embedder.embed_batched(te_text)
    tr_y = [codec.encode("service", r.labels["service"]) for r in train]
    is_oos = np.array([r.labels["service"] == "oos" for r in test])
    head = ProposalHead.fit(tr_text, tr_v, {"service": tr_y}, taxonomy, options=opts)
    probs = head.predict(te_text, te_v)
    neighbours = nearest_neighbours(te_v, tr_v, [{"service": y} for y in tr_y], [str(i) for i in range(len(tr_y))], top_k)
    conf, nn, correct = [], [], []
    for p, n, r in zip(probs, neighbours, test, strict=True):
        label, c = top(propose_distribution(p, n, taxonomy, knn_weight=opts.knn_weight)["service"])
        conf.append(c)
        nn.append(n[0].score)
        correct.append(label == codec.encode("service", r.labels["service"]))
    conf_a, nn_a, ok = np.array(conf), np.array(nn), np.array(correct)
    out = []
    for name, score in (("nearest-neighbour similarity", nn_a), ("proposal confidence", conf_a), ("similarity + confidence", nn_a + conf_a)):
        for budget in (0.04, 0.06, 0.08, 0.10):
            t = np.quantile(score[~is_oos], budget)
            flag = score < t
            out.append({"score": name, "in_scope_flagged": budget, "oos_recall": round(float(flag[is_oos].mean()), 3),
                        "in_scope_accuracy": round(float(((~flag) & ok)[~is_oos].mean()), 3)})
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("dataset", choices=sorted([*DATASETS, "tier", "oos"]))
    parser.add_argument("--variant", action="append", default=[], help="NAME[:key=value,...]; repeatable")
    parser.add_argument("--seed-tickets", choices=["none", "handwritten", "all"], default="all", help="tier only: seed tickets added to each fold's train")
    parser.add_argument("--extra-seed", type=Path, help="tier only: a JSONL file of candidate seed tickets added to every fold's train")
    parser.add_argument("--log", type=Path, default=splits.RUNS / "experiments.jsonl")
    args = parser.parse_args(argv)
    if args.dataset == "oos":
        for spec in args.variant or ["base"]:
            for line in oos_scores(parse_variant(spec)[1]):
                print(json.dumps({"variant": spec, **line}), flush=True)
        return
    data = load(args.dataset) if args.dataset != "tier" else None
    for spec in args.variant or ["base"]:
        name, opts = parse_variant(spec)
        result = evaluate(data, opts) if data is not None else tier_cv(opts, args.seed_tickets, extra_seed=args.extra_seed)
        if data is None:
            name = f"{name} (seed: {args.seed_tickets}{' + ' + args.extra_seed.name if args.extra_seed else ''})"
        line = {"dataset": args.dataset, "variant": name, **result, "options": asdict(opts)}
        print(json.dumps(line), flush=True)
        args.log.parent.mkdir(parents=True, exist_ok=True)
        with args.log.open("a", encoding="utf-8") as fh:
            fh.write(json.dumps(line) + "\n")


if __name__ == "__main__":
    main()
