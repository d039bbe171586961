"""`python -m evals.splits tier`: the files that score another tier gold set (the sealed twin) as the bench does."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest

from evals import splits
from evals.datasets import read_table

TIER_DEV = splits.DATASETS / "support_tickets_multilang" / "tier_dev.csv"
TICKETS_DEV = splits.DATASETS / "support_tickets_multilang" / "tickets_dev.csv"
pytestmark = pytest.mark.skipif(not TIER_DEV.is_file(), reason="../shared/datasets is not beside this clone")


def _gold_subset(path: Path, n: int) -> list[dict[str, str]]:
    rows = read_table(TIER_DEV)[1][:n]
    with path.open("w", encoding="utf-8", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=["ticket_id", "tier"], extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)
    return rows


def test_tier_files_join_the_gold_and_keep_its_tickets_out_of_train(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    gold = _gold_subset(tmp_path / "gold.csv", 12)
    assert splits.main(["tier", "--gold", str(tmp_path / "gold.csv"), "--tickets", str(TICKETS_DEV), "--out", str(tmp_path / "out")]) == 0
    test = read_table(tmp_path / "out" / "test.csv")[1]
    train = read_table(tmp_path / "out" / "train.csv")[1]
    assert [(r["ticket_id"], r["tier"]) for r in test] == [(g["ticket_id"], g["tier"]) for g in gold]
    assert all(r["subject"] or r["body"] for r in test)
    assert not {r["ticket_id"] for r in train} & {g["ticket_id"] for g in gold}
    assert len(train) == 240 - 12 + len(splits.seed_tier_rows())
    printed = capsys.readouterr().out
    assert "12 train rows left out" in printed and "triage eval --train" in printed and "--label tier=tier" in printed


def test_tier_files_name_an_unknown_ticket(tmp_path: Path) -> None:
    (tmp_path / "gold.csv").write_text("ticket_id,tier\nno-such-ticket,L2\n", encoding="utf-8")
    with pytest.raises(ValueError, match="no-such-ticket"):
        splits.tier_scoring_files(tmp_path / "out", tmp_path / "gold.csv", TICKETS_DEV)


def test_tier_files_read_columns_and_ids_as_triage_eval_does(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """QA: a tickets file without a ticket_id column ended in a KeyError traceback, and a gold file saved by a
    spreadsheet (' Ticket_ID', 'Tier', ids with a trailing space) was refused, though `triage eval` reads such files."""
    tickets = tmp_path / "tickets.csv"
    tickets.write_text("text,category\nmy card,card\n", encoding="utf-8")
    with pytest.raises(SystemExit) as stopped:
        splits.main(["tier", "--gold", str(TIER_DEV), "--tickets", str(tickets), "--out", str(tmp_path / "bad")])
    assert stopped.value.code == 2
    assert "needs the columns ticket_id, subject and body" in capsys.readouterr().err
    rows = read_table(TIER_DEV)[1][:3]
    gold = tmp_path / "gold.csv"
    gold.write_text(" Ticket_ID,Tier\n" + "".join(f"{r['ticket_id']} ,{r['tier']}\n" for r in rows), encoding="utf-8")
    assert splits.main(["tier", "--gold", str(gold), "--tickets", str(TICKETS_DEV), "--out", str(tmp_path / "out")]) == 0
    test = read_table(tmp_path / "out" / "test.csv")[1]
    assert [(r["ticket_id"], r["tier"]) for r in test] == [(r["ticket_id"], r["tier"]) for r in rows]
    assert all(r["body"] for r in test)
    train_ids = {r["ticket_id"] for r in read_table(tmp_path / "out" / "train.csv")[1]}
    assert not train_ids & {r["ticket_id"] for r in rows}  # still kept out of train


def test_the_printed_command_runs_as_printed_from_a_path_with_a_space(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """QA: the command printed for --out 'tier sealed' split the paths at the space when pasted into a shell."""
    import shlex

    _gold_subset(tmp_path / "gold.csv", 3)
    out = tmp_path / "tier sealed"
    assert splits.main(["tier", "--gold", str(tmp_path / "gold.csv"), "--tickets", str(TICKETS_DEV), "--out", str(out)]) == 0
    command = shlex.split(capsys.readouterr().out.splitlines()[-1])
    assert command[command.index("--train") + 1] == str(out / "train.csv")
    assert command[command.index("--out") + 1] == str(out / "run")
