"""Deterministic splits of ../shared/datasets for the bench and the CI gate, written as files `triage eval` reads.

The same procedure as the datasets' own sealed splits (their READMEs): Python `random.Random(seed)`, rows grouped
by the stratum, groups sorted, each group shuffled, `round(share * n)` of each group to the test side.
Files derived from non-commercial data (the Tobi-Bueck tickets) are written only under git-ignored
evals/runs/, at bench time.
"""

from __future__ import annotations

import csv
import json
import random
import shlex
from collections.abc import Callable, Sequence
from pathlib import Path

from agent.settings import REPO_ROOT
from evals.datasets import read_table, resolve_column

DATASETS = REPO_ROOT.parent / "shared" / "datasets"
RUNS = REPO_ROOT / "evals" / "runs"
SPLIT_SEED = 20240601


def stratified_split(rows: Sequence[dict[str, str]], key: Callable[[dict[str, str]], str], share: float, seed: int) -> tuple[list[dict[str, str]], list[dict[str, str]]]:
    rng = random.Random(seed)
    groups: dict[str, list[int]] = {}
    for i, row in enumerate(rows):
        groups.setdefault(key(row), []).append(i)
    test_idx: set[int] = set()
    for name in sorted(groups):
        idx = list(groups[name])
        rng.shuffle(idx)
        if len(idx) > 1:
            test_idx.update(idx[: round(share * len(idx))])
    train = [r for i, r in enumerate(rows) if i not in test_idx]
    test = [r for i, r in enumerate(rows) if i in test_idx]
    return train, test


def kfold_stratified(rows: Sequence[dict[str, str]], key: Callable[[dict[str, str]], str], folds: int, seed: int) -> list[int]:
    """Fold number per row: each stratum shuffled and dealt round-robin, so every fold gets its share."""
    rng = random.Random(seed)
    groups: dict[str, list[int]] = {}
    for i, row in enumerate(rows):
        groups.setdefault(key(row), []).append(i)
    fold = [0] * len(rows)
    offset = 0
    for name in sorted(groups):
        idx = list(groups[name])
        rng.shuffle(idx)
        for j, i in enumerate(idx):
            fold[i] = (offset + j) % folds
        offset += len(idx)
    return fold


def write_csv(path: Path, rows: Sequence[dict[str, str]], columns: Sequence[str] | None = None) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    columns = list(columns or (rows[0].keys() if rows else []))
    with path.open("w", encoding="utf-8", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=columns, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)
    return path


def _load(path: Path) -> list[dict[str, str]]:
    return read_table(path)[1]


# ---------------------------------------------------------------- the shipped splits


def banking77(out: Path, *, share: float = 0.2, seed: int = SPLIT_SEED) -> tuple[Path, Path]:
    rows = _load(DATASETS / "banking77" / "train.csv")
    for i, r in enumerate(rows):
        r["id"] = f"b77-{i}"
    train, test = stratified_split(rows, lambda r: r["category"], share, seed)
    return write_csv(out / "train.csv", train, ["id", "text", "category"]), write_csv(out / "test.csv", test, ["id", "text", "category"])


def banking77_oos(out: Path, *, held_out_share: float = 0.25, share: float = 0.2, seed: int = SPLIT_SEED) -> tuple[Path, Path]:
    """Whole intents held out of train: their test rows are labelled 'oos' (CLINC-style out-of-scope test)."""
    rows = _load(DATASETS / "banking77" / "train.csv")
    for i, r in enumerate(rows):
        r["id"] = f"b77-{i}"
    intents = sorted({r["category"] for r in rows})
    rng = random.Random(seed + 1)
    held = set(rng.sample(intents, round(held_out_share * len(intents))))
    train, test = stratified_split(rows, lambda r: r["category"], share, seed)
    train = [r for r in train if r["category"] not in held]
    test = [{**r, "category": "oos"} if r["category"] in held else r for r in test]
    (out / "held_out_intents.json").parent.mkdir(parents=True, exist_ok=True)
    (out / "held_out_intents.json").write_text(json.dumps(sorted(held), indent=1) + "\n", encoding="utf-8")
    return write_csv(out / "train.csv", train, ["id", "text", "category"]), write_csv(out / "test.csv", test, ["id", "text", "category"])


FOREIGN_BITEXT = ("ORDER", "DELIVERY", "SHIPPING_ADDRESS", "NEWSLETTER")  # nothing a bank's intents cover


def banking77_foreign_oos(out: Path, *, per_source: int = 250, seed: int = SPLIT_SEED) -> tuple[Path, Path]:
    """The banking77_oos split with foreign out-of-scope rows added to its test side: `per_source` e-commerce
    requests (Bitext categories a bank does not serve) and IT service-desk tickets, labelled 'oos' (ids say which:
    bitext-*, it-*), to see the same score on out-of-scope text that is not a near-paraphrase of a kept intent."""
    train_path, test_path = banking77_oos(out)
    test = _load(test_path)
    rng = random.Random(seed + 2)
    bitext = [r for r in _load(DATASETS / "bitext_customer_support" / "bitext_dev.csv") if r["category"] in FOREIGN_BITEXT]
    it = [r for r in _load(DATASETS / "it_service_tickets" / "it_service_tickets.csv") if r["document"].strip()]
    test += [{"id": f"bitext-{r['utterance_id']}", "text": r["instruction"], "category": "oos"} for r in rng.sample(bitext, per_source)]
    test += [{"id": r["ticket_id"], "text": r["document"], "category": "oos"} for r in rng.sample(it, per_source)]
    return train_path, write_csv(out / "test_foreign.csv", test, ["id", "text", "category"])


def tobi_queue(out: Path, *, share: float = 0.2, seed: int = SPLIT_SEED) -> tuple[Path, Path]:
    rows = _load(DATASETS / "support_tickets_multilang" / "tickets_dev.csv")
    train, test = stratified_split(rows, lambda r: r["queue"], share, seed)
    cols = ["ticket_id", "language", "subject", "body", "queue", "priority", "type"]
    return write_csv(out / "train.csv", train, cols), write_csv(out / "test.csv", test, cols)


def bitext(out: Path, *, share: float = 0.2, seed: int = SPLIT_SEED, limit_train: int | None = None, limit_test: int | None = None) -> tuple[Path, Path]:
    rows = _load(DATASETS / "bitext_customer_support" / "bitext_dev.csv")
    train, test = stratified_split(rows, lambda r: r["intent"], share, seed)
    if limit_train is not None:
        train = random.Random(seed).sample(train, min(limit_train, len(train)))
    if limit_test is not None:
        test = random.Random(seed + 1).sample(test, min(limit_test, len(test)))
    cols = ["utterance_id", "instruction", "category", "intent"]
    return write_csv(out / "train.csv", train, cols), write_csv(out / "test.csv", test, cols)


def tier_gold_rows(gold: Path | None = None, tickets: Path | None = None) -> list[dict[str, str]]:
    """A tier gold file (ticket_id, tier; default tier_dev.csv) joined with its tickets file (default
    tickets_dev.csv): ticket_id, subject, body, tier (+ queue, type, priority, language where the file has them)."""
    gold = gold or DATASETS / "support_tickets_multilang" / "tier_dev.csv"
    tickets = tickets or DATASETS / "support_tickets_multilang" / "tickets_dev.csv"
    # column names apart from case and surrounding spaces, ids apart from surrounding spaces, as `triage eval` reads
    # them (a tickets file without the column ended in a KeyError traceback)
    ticket_columns, ticket_table = read_table(tickets)
    names = {c: resolve_column(c, ticket_columns, tickets) for c in ("ticket_id", "language", "subject", "body", "queue", "type", "priority")}
    if names["ticket_id"] is None or names["body"] is None:
        raise ValueError(f"{tickets} needs the columns ticket_id, subject and body (as tickets_dev.csv); it has {ticket_columns}")
    base = {r.get(names["ticket_id"] or "", "").strip(): r for r in ticket_table}
    columns, table = read_table(gold)
    id_column, tier_column = resolve_column("ticket_id", columns, gold), resolve_column("tier", columns, gold)
    if id_column is None or tier_column is None:
        raise ValueError(f"{gold} needs the columns ticket_id and tier (as tier_dev.csv); it has {columns}")
    rows = []
    for t in table:
        ticket = base.get(t[id_column].strip())
        if ticket is None:
            raise ValueError(f"{gold}: ticket {t[id_column]!r} is not in {tickets}; pass the tickets file it was drawn from")
        rows.append({**{k: ticket.get(c, "") if c else "" for k, c in names.items()}, "ticket_id": t[id_column].strip(), "tier": t[tier_column]})
    return rows


TIER_COLUMNS = ["ticket_id", "language", "subject", "body", "tier", "queue", "type", "priority"]


def tier_folds(out: Path, *, folds: int = 5, seed: int = SPLIT_SEED, extra_train: Sequence[dict[str, str]] = ()) -> list[tuple[Path, Path]]:
    """K-fold files of the tier gold set; each train file = the other folds + `extra_train` rows (e.g. seed tickets)."""
    rows = tier_gold_rows()
    fold = kfold_stratified(rows, lambda r: r["tier"], folds, seed)
    pairs = []
    for k in range(folds):
        train = [r for r, f in zip(rows, fold, strict=True) if f != k] + list(extra_train)
        test = [r for r, f in zip(rows, fold, strict=True) if f == k]
        pairs.append((write_csv(out / f"fold{k}" / "train.csv", train, TIER_COLUMNS), write_csv(out / f"fold{k}" / "test.csv", test, TIER_COLUMNS)))
    return pairs


def tier_scoring_files(out: Path, gold: Path, tickets: Path) -> tuple[Path, Path, int]:
    """Files to score another tier gold set (the sealed twin of tier_dev.csv, or a deployment's own) with what
    the tier bench trains each fold on, at full size: train = the shipped seed tickets with a tier + all 240
    tier_dev.csv tickets; test = `gold` joined with `tickets`. Returns the two paths and how many train rows were
    dropped because the test file holds the same ticket (so scoring tier_dev.csv itself is not a leak)."""
    test = tier_gold_rows(gold, tickets)
    in_test = {r["ticket_id"] for r in test}
    train = tier_gold_rows() + seed_tier_rows()
    kept = [r for r in train if r["ticket_id"] not in in_test]
    return write_csv(out / "train.csv", kept, TIER_COLUMNS), write_csv(out / "test.csv", test, TIER_COLUMNS), len(train) - len(kept)


def seed_tier_rows(path: Path | None = None) -> list[dict[str, str]]:
    """The shipped seed tickets (knowledge_base/seed/tickets.jsonl) that carry a tier, as tier-file rows."""
    path = path or REPO_ROOT / "knowledge_base" / "seed" / "tickets.jsonl"
    if not path.is_file():
        return []
    rows = []
    with path.open(encoding="utf-8") as fh:
        for line in fh:
            if not line.strip():
                continue
            t = json.loads(line)
            tier = (t.get("labels") or {}).get("tier")
            if tier:
                rows.append({"ticket_id": f"seed:{t['id']}", "language": t.get("language") or "", "subject": t.get("subject", ""), "body": t.get("body", ""), "tier": tier})
    return rows


def main(argv: Sequence[str] | None = None) -> int:
    import argparse

    parser = argparse.ArgumentParser(
        prog="python -m evals.splits",
        description="Write the files to score a tier gold set (ticket_id,tier) with the shipped default, then print the "
        "`triage eval` command that scores it. Train = the seed tickets + all of tier_dev.csv (what the tier bench "
        "trains each fold on, at full size); test = the gold file joined with its tickets file.",
        epilog="Example: python -m evals.splits tier --gold tier_test.csv --tickets tickets_test.csv --out evals/runs/tier_sealed",
    )
    sub = parser.add_subparsers(dest="command", required=True)
    tier = sub.add_parser("tier", help="train/test files for a tier gold file")
    tier.add_argument("--gold", type=Path, required=True, help="CSV with ticket_id and tier (L1/L2/L3), as tier_dev.csv")
    tier.add_argument("--tickets", type=Path, required=True, help="the tickets file the gold ids come from (subject, body)")
    tier.add_argument("--out", type=Path, default=RUNS / "splits" / "tier_scoring", help="where train.csv and test.csv go")
    args = parser.parse_args(argv)
    try:
        train, test, dropped = tier_scoring_files(args.out, args.gold, args.tickets)
    except (ValueError, OSError) as exc:
        parser.exit(2, f"error: {exc}\n")
    note = f" ({dropped} train rows left out: the same tickets are in the test file)" if dropped else ""
    print(f"wrote {train} and {test}{note}; score them with:")
    quoted = [shlex.quote(str(p)) for p in (train, test, args.out / "run")]  # a path with a space stays one argument
    print(f"  triage eval --train {quoted[0]} --test {quoted[1]} --text subject,body --label tier=tier --out {quoted[2]}")  # the default taxonomy's tiers
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
