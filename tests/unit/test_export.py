"""agent.export: reviewed tickets as files `triage eval` reads (the records side is tested in test_lifecycle)."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest

from agent.contracts import ReviewedTicket
from agent.export import side_of, write_reviewed
from evals.datasets import load_rows


def reviewed(i: int, body: str = "") -> ReviewedTicket:
    return ReviewedTicket(
        id=f"tk_{i:04d}", subject=f"subject {i}", body=body or f"line one of {i}\n\nline two, with \"quotes\", commas",
        intake_channel="email" if i % 2 else None, labels={"service": "billing_payments", "channel": "email", "tier": "L2"},
        action="edit", reviewer="alice", reviewed_at=datetime(2026, 11, 1, tzinfo=UTC),
    )


@pytest.mark.parametrize("suffix", [".csv", ".jsonl"])
def test_the_export_reads_back_as_eval_rows(tmp_path: Path, suffix: str) -> None:
    out = tmp_path / f"reviewed{suffix}"
    counts = write_reviewed([reviewed(i) for i in range(3)], out)
    assert counts == {out: 3}
    rows = load_rows(out, ["subject", "body"], {"service": "service", "tier": "tier"})
    assert [r.id for r in rows] == ["tk_0000", "tk_0001", "tk_0002"]
    assert rows[1].text == 'subject 1\n\nline one of 1\n\nline two, with "quotes", commas'  # multi-line fields survive
    assert rows[0].labels == {"service": "billing_payments", "tier": "L2"}


def test_the_split_is_by_ticket_id_and_near_the_share(tmp_path: Path) -> None:
    out = tmp_path / "reviewed.jsonl"
    counts = write_reviewed([reviewed(i) for i in range(1000)], out, test_share=0.2)
    train, test = tmp_path / "reviewed.train.jsonl", tmp_path / "reviewed.test.jsonl"
    assert set(counts) == {train, test} and sum(counts.values()) == 1000
    assert 150 <= counts[test] <= 250
    test_ids = {line.split('"id": "')[1].split('"')[0] for line in test.read_text().splitlines()}
    assert test_ids == {f"tk_{i:04d}" for i in range(1000) if side_of(f"tk_{i:04d}", 0.2) == "test"}
    assert side_of("tk_0001", 0.0) == "all"


def test_an_unknown_suffix_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"\.csv or \.jsonl"):
        write_reviewed([], tmp_path / "reviewed.xlsx")


def test_a_path_that_cannot_be_a_file_is_refused_in_words(tmp_path: Path) -> None:
    """--out naming a directory, a twin of --test-share that is one, or a folder that is a file ended in an
    IsADirectoryError or FileExistsError traceback."""
    from agent.export import ExportError

    (tmp_path / "d.csv").mkdir()
    with pytest.raises(ExportError, match=r"d.csv is a directory, not a file to write"):
        write_reviewed([], tmp_path / "d.csv")
    (tmp_path / "s.test.csv").mkdir()
    with pytest.raises(ExportError, match=r"s.test.csv is a directory"):
        write_reviewed([], tmp_path / "s.csv", test_share=0.2)
    (tmp_path / "a-file").write_text("x")
    with pytest.raises(ExportError, match=r"a-file is a file, so .* cannot be created in it"):
        write_reviewed([], tmp_path / "a-file" / "sub" / "r.csv")


def test_an_export_that_fails_half_way_leaves_the_previous_one(tmp_path: Path) -> None:
    out = tmp_path / "reviewed.jsonl"
    write_reviewed([reviewed(i) for i in range(3)], out)
    before = out.read_text(encoding="utf-8")

    def broken() -> object:
        yield reviewed(7)
        raise ConnectionError("the database went away")

    with pytest.raises(ConnectionError):
        write_reviewed(broken(), out)  # type: ignore[arg-type]
    assert out.read_text(encoding="utf-8") == before and sorted(p.name for p in tmp_path.iterdir()) == ["reviewed.jsonl"]
