"""Reviewed tickets as a labelled file `triage eval` reads: the deployment's own ground truth.

The shipped auto-apply thresholds are fitted on the seed tickets; a deployment re-fits them on what its leads
accepted or edited (docs/lifecycle.md). CSV (RFC-4180, multi-line fields quoted) or JSONL, by the file suffix.
"""

from __future__ import annotations

import csv
import hashlib
import json
import os
import shlex
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import TextIO

from agent.contracts import AXES, ReviewedTicket

COLUMNS = ("id", "subject", "body", *AXES, "intake_channel", "action", "reviewer", "reviewed_at")
SUFFIXES = (".csv", ".jsonl")
FORMULA_START = ("=", "+", "-", "@", "\t", "\r")  # what Excel, LibreOffice and Sheets read as the start of a formula
MIN_TRAIN_ROWS = 4  # the fewest labelled train rows `triage eval` fits a proposal on (evals.runner refuses fewer)


class ExportError(ValueError):
    """The export cannot be written as asked; the message says what to change."""


def split_paths(out: Path, test_share: float) -> dict[str, Path]:
    """{"all": out} without a split, else OUT's .train and .test twins (reviewed.csv -> reviewed.train.csv)."""
    if not test_share:
        return {"all": out}
    return {side: out.with_suffix(f".{side}{out.suffix}") for side in ("train", "test")}


def side_of(ticket_id: str, test_share: float) -> str:
    """train or test by a hash of the id, so a ticket stays on its side when the export is run again."""
    if not test_share:
        return "all"
    return "test" if int(hashlib.sha256(ticket_id.encode()).hexdigest()[:8], 16) / 0xFFFFFFFF < test_share else "train"


def too_few_to_score(counts: Mapping[str, int]) -> str | None:
    """Why a split export cannot be scored yet, or None: with a handful of reviews the printed `triage eval` line
    failed on an empty (or 3-row) train file, an error about missing text that named neither cause nor fix."""
    train, test = counts.get("train", 0), counts.get("test", 0)
    if train >= MIN_TRAIN_ROWS and test >= 1:
        return None
    return (
        f"too few reviewed tickets to score the agent and re-fit its thresholds: {train} in train, {test} in test; "
        f"`triage eval` needs at least {MIN_TRAIN_ROWS} in train and 1 in test. Review more tickets in the queue and "
        "export again (a ticket keeps its side, so earlier reviews stay where they are)"
    )


def scoring_advice(paths: Mapping[str, Path], taxonomy_path: Path) -> str:
    """The `triage eval` line a split export prints. It writes the fitted thresholds to the run's own folder, never
    over the calibration in force (a fit on a few dozen reviews would have replaced the shipped file unseen):
    putting them in force is a separate, deliberate setting once the lead has read the metrics."""
    run = Path("evals/runs/reviewed")
    return (
        "next, score the agent on them and re-fit its thresholds:\n"
        f"  triage eval --train {shlex.quote(str(paths['train']))} --test {shlex.quote(str(paths['test']))} --text subject,body "
        f"--label service=service --label tier=tier --taxonomy {shlex.quote(str(taxonomy_path))} --out {run}\n"
        f"then read {run / 'report.md'}; to route with the thresholds fitted on your reviews, start the service with "
        f"TRIAGE_CALIBRATION_PATH={run / 'calibration.json'}"
    )


def _private(path: Path) -> TextIO:
    """The file opened for writing, readable by its user only: it holds ticket text, as the data folder does."""
    return os.fdopen(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "w", encoding="utf-8", newline="")


def row_of(ticket: ReviewedTicket) -> dict[str, str]:
    fields = ticket.model_dump(mode="json")
    return {column: str(ticket.labels.get(column, "") if column in AXES else (fields.get(column) or "")) for column in COLUMNS}


def spreadsheet_safe(row: dict[str, str]) -> dict[str, str]:
    """A CSV row a spreadsheet opens as text: a customer's subject `=HYPERLINK(...)` ran as a formula in the lead's
    Excel. Such a cell gets a leading `'` (the spreadsheets' own "this is text" mark, not shown), which `triage eval`
    drops again on reading (`evals.datasets.unguard_formula`), so the text it scores is the ticket's."""
    return {column: f"'{value}" if value.startswith(FORMULA_START) else value for column, value in row.items()}


def check_path(out: Path, test_share: float = 0.0) -> None:
    """Refuse, before any work, a name `triage eval` cannot read and a path that cannot be a file (a directory, a
    file where a folder should be): these ended in an IsADirectoryError or FileExistsError traceback."""
    if out.suffix.lower() not in SUFFIXES:
        raise ExportError(f"the export file must end in .csv or .jsonl, not {out.name!r}")
    for path in split_paths(out, test_share).values():
        if path.is_dir():
            raise ExportError(f"{path} is a directory, not a file to write; give another name")
    blocking = next((p for p in out.parents if p.exists() and not p.is_dir()), None)
    if blocking is not None:
        raise ExportError(f"{blocking} is a file, so {out} cannot be created in it; choose another folder")


def write_reviewed(tickets: Iterable[ReviewedTicket], out: Path, *, test_share: float = 0.0) -> dict[Path, int]:
    """Write the rows; how many went to each file. Each file is written beside its target and renamed over it at the
    end, so an export that fails half-way (the database went away) leaves the previous export as it was."""
    check_path(out, test_share)
    paths = split_paths(out, test_share)
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ExportError(f"cannot create the folder {out.parent}: {exc.strerror or exc}") from exc
    counts = dict.fromkeys(paths.values(), 0)
    partial = {side: path.with_name(f".{path.name}.partial") for side, path in paths.items()}
    try:
        handles = {side: _private(path) for side, path in partial.items()}
    except OSError as exc:
        raise ExportError(f"cannot write in {out.parent}: {exc.strerror or exc}") from exc
    done = False
    try:
        as_csv = out.suffix.lower() == ".csv"
        writers = {side: csv.DictWriter(fh, fieldnames=COLUMNS) for side, fh in handles.items()} if as_csv else {}
        for writer in writers.values():
            writer.writeheader()
        for ticket in tickets:
            side, row = side_of(ticket.id, test_share), row_of(ticket)
            if as_csv:
                writers[side].writerow(spreadsheet_safe(row))
            else:
                handles[side].write(json.dumps(row, ensure_ascii=False) + "\n")
            counts[paths[side]] += 1
        done = True
    finally:
        for fh in handles.values():
            fh.close()
        for side, path in partial.items():
            if done:
                path.replace(paths[side])
            else:
                path.unlink(missing_ok=True)
    return counts
