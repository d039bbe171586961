#!/usr/bin/env python3
"""Rebuild knowledge_base/seed/tickets.jsonl: the labelled past tickets shipped for retrieval and the classifier.

    python knowledge_base/build_seed.py [--datasets PATH] [--out PATH]

Inputs
  - <datasets>/bitext_customer_support/bitext_dev.csv   every row; labels from mappings/bitext.yaml
  - <datasets>/banking77/train.csv                       40 rows per category (stratified, seed 20240601);
                                                          labels from mappings/banking77.yaml
  - seed/handwritten.jsonl                               the project's own tickets, already labelled

Every label is checked against taxonomies/default.yaml; an unknown intent, a missing mapping or a label that is
not in the taxonomy stops the build with an error. Standard library + PyYAML only.
"""

from __future__ import annotations

import argparse
import collections
import csv
import json
import random
import sys
from pathlib import Path

import yaml

KB = Path(__file__).resolve().parent
REPO = KB.parent
TAXONOMY = KB / "taxonomies" / "default.yaml"
HANDWRITTEN = KB / "seed" / "handwritten.jsonl"

BANKING77_PER_CATEGORY = 40
SEED = 20240601
KEYS = ("id", "subject", "body", "channel", "labels", "answer", "source", "language")


class BuildError(Exception):
    pass


def load_taxonomy() -> dict[str, set[str]]:
    taxonomy = yaml.safe_load(TAXONOMY.read_text(encoding="utf-8"))
    return {axis: {label["id"] for label in spec["labels"]} for axis, spec in taxonomy["axes"].items()}


def load_mapping(name: str, ids: dict[str, set[str]]) -> dict[str, dict[str, str]]:
    """mappings/<name>.yaml -> {intent: {"service": id, "tier": id}}, every label checked."""
    path = KB / "mappings" / f"{name}.yaml"
    data = yaml.safe_load(path.read_text(encoding="utf-8"))
    if data.get("taxonomy") != "default":
        raise BuildError(f"{path}: expected 'taxonomy: default', got {data.get('taxonomy')!r}")
    intents = data["intents"]
    for intent, labels in intents.items():
        if set(labels) != {"service", "tier"}:
            raise BuildError(f"{path}: {intent}: expected keys service and tier, got {sorted(labels)}")
        check_labels(labels, ids, f"{path.name}:{intent}")
    return intents


def check_labels(labels: dict[str, str], ids: dict[str, set[str]], where: str) -> None:
    for axis, label in labels.items():
        if axis not in ids:
            raise BuildError(f"{where}: unknown axis {axis!r}")
        if label not in ids[axis]:
            raise BuildError(f"{where}: {axis} label {label!r} is not in {TAXONOMY.name} ({sorted(ids[axis])})")


def check_coverage(mapping: dict, seen: set[str], name: str) -> None:
    missing = sorted(seen - set(mapping))
    extra = sorted(set(mapping) - seen)
    if missing:
        raise BuildError(f"mappings/{name}.yaml lacks intents found in the data: {missing}")
    if extra:
        raise BuildError(f"mappings/{name}.yaml maps intents that are not in the data: {extra}")


def read_csv(path: Path) -> list[dict[str, str]]:
    if not path.is_file():
        raise BuildError(f"{path} not found (pass --datasets)")
    with path.open(newline="", encoding="utf-8") as fh:  # csv handles quoted, multi-line fields (RFC 4180)
        return list(csv.DictReader(fh))


def bitext_tickets(datasets: Path, ids: dict[str, set[str]]) -> list[dict]:
    rows = read_csv(datasets / "bitext_customer_support" / "bitext_dev.csv")
    mapping = load_mapping("bitext", ids)
    check_coverage(mapping, {row["intent"] for row in rows}, "bitext")
    return [
        {
            "id": row["utterance_id"],
            "subject": "",
            "body": row["instruction"].strip(),
            "channel": "chat",
            "labels": dict(mapping[row["intent"]]),
            "answer": row["response"].replace("\r\n", "\n").strip() or None,
            "source": "bitext",
            "language": "en",
        }
        for row in rows
    ]


def banking77_tickets(datasets: Path, ids: dict[str, set[str]]) -> list[dict]:
    rows = read_csv(datasets / "banking77" / "train.csv")
    mapping = load_mapping("banking77", ids)
    by_category: dict[str, list[int]] = collections.defaultdict(list)
    for index, row in enumerate(rows):  # index = 0-based data row of train.csv (header excluded)
        by_category[row["category"]].append(index)
    check_coverage(mapping, set(by_category), "banking77")
    categories_file = datasets / "banking77" / "categories.json"
    if categories_file.is_file():
        check_coverage(mapping, set(json.loads(categories_file.read_text(encoding="utf-8"))), "banking77")

    rng = random.Random(SEED)
    chosen: list[int] = []
    for category in sorted(by_category):
        indices = by_category[category]
        chosen.extend(rng.sample(indices, min(BANKING77_PER_CATEGORY, len(indices))))
    return [
        {
            "id": f"b77-{index}",
            "subject": "",
            "body": rows[index]["text"].strip(),
            "channel": "chat",
            "labels": dict(mapping[rows[index]["category"]]),
            "answer": None,
            "source": "banking77",
            "language": "en",
        }
        for index in sorted(chosen)
    ]


def handwritten_tickets(ids: dict[str, set[str]]) -> list[dict]:
    tickets = []
    for number, line in enumerate(HANDWRITTEN.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        where = f"{HANDWRITTEN.name}:{number}"
        ticket = json.loads(line)
        if tuple(ticket) != KEYS:
            raise BuildError(f"{where}: keys must be {KEYS}, got {tuple(ticket)}")
        if ticket["source"] != "handwritten" or not ticket["id"].startswith("hw-"):
            raise BuildError(f"{where}: source must be 'handwritten' and the id start with 'hw-'")
        if not ticket["body"].strip():
            raise BuildError(f"{where}: empty body")
        if set(ticket["labels"]) != {"service", "tier"}:
            raise BuildError(f"{where}: labels must have service and tier")
        check_labels(ticket["labels"], ids, where)
        check_labels({"channel": ticket["channel"]}, ids, where)
        # here the channel varies with the text, so it is a label the channel head may learn from; in the
        # Bitext and Banking77 rows it is a constant of the dataset and stays out of `labels`
        ticket["labels"] = {**ticket["labels"], "channel": ticket["channel"]}
        tickets.append(ticket)
    return tickets


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--datasets", type=Path, default=REPO.parent / "shared" / "datasets",
                        help="folder holding the dataset folders (default: ../shared/datasets from the repo root)")
    parser.add_argument("--out", type=Path, default=KB / "seed" / "tickets.jsonl")
    args = parser.parse_args(argv)

    try:
        ids = load_taxonomy()
        tickets = [
            *bitext_tickets(args.datasets, ids),
            *banking77_tickets(args.datasets, ids),
            *handwritten_tickets(ids),
        ]
        duplicates = [i for i, n in collections.Counter(t["id"] for t in tickets).items() if n > 1]
        if duplicates:
            raise BuildError(f"duplicate ticket ids: {duplicates[:10]}")
    except BuildError as error:
        print(f"build_seed: error: {error}", file=sys.stderr)
        return 1

    args.out.parent.mkdir(parents=True, exist_ok=True)
    with args.out.open("w", encoding="utf-8", newline="\n") as fh:
        for ticket in tickets:
            fh.write(json.dumps({key: ticket[key] for key in KEYS}, ensure_ascii=False) + "\n")

    print(f"wrote {len(tickets)} tickets to {args.out}")
    for axis in ("service", "tier"):
        counts = collections.Counter(t["labels"][axis] for t in tickets)
        print(f"  {axis}: " + ", ".join(f"{label} {n}" for label, n in sorted(counts.items())))
    print("  source: " + ", ".join(f"{s} {n}" for s, n in sorted(collections.Counter(t["source"] for t in tickets).items())))
    return 0


if __name__ == "__main__":
    sys.exit(main())
