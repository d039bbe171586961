"""JSON Lines input files (seed tickets, KB articles), read with errors that name the file, the line and the fix.

A bad row stops the read before anything is stored, so a file is taken whole or not at all: no half-ingested
seed whose missing rows nobody notices.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import TypeVar

from pydantic import BaseModel, ValidationError

from agent.contracts import validation_problems
from agent.textfiles import not_utf8

M = TypeVar("M", bound=BaseModel)


# what a file that is not JSON Lines probably is, by its name: a help centre's export is often Markdown, HTML or
# one JSON array, and "Expecting value (column 1)" alone does not say that the file's format is the problem
_FORMAT_HINTS = {
    ".csv": " (a CSV file? this needs JSON Lines)",
    ".tsv": " (a CSV file? this needs JSON Lines)",
    **dict.fromkeys((".md", ".markdown", ".html", ".htm", ".txt"), " (a text or HTML page? this needs JSON Lines; convert the pages first)"),
    ".json": " (a JSON array or a pretty-printed object? this needs JSON Lines, e.g. `jq -c '.[]' IN > OUT`)",
}


class InputFileError(ValueError):
    """An input file that cannot be read as asked; the message names the file, the line and what to change."""


def read_jsonl(path: Path) -> Iterator[tuple[int, dict]]:
    """(line number, object) for each non-blank line of a UTF-8 JSON Lines file."""
    if path.is_dir():
        raise InputFileError(f"{path} is a directory; give the path of a JSON Lines file")
    if not path.is_file():
        raise InputFileError(f"{path} does not exist")
    hint = _FORMAT_HINTS.get(path.suffix.lower(), "")
    with path.open("rb") as fh:
        for line_no, raw in enumerate(fh, 1):
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as exc:
                reason = not_utf8(str(path), exc).replace("on line 1)", f"on line {line_no})")
                raise InputFileError(reason) from exc
            if line_no == 1:  # Notepad and Excel's "CSV UTF-8" start a UTF-8 file with a byte-order mark
                line = line.removeprefix("\ufeff")
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as exc:
                raise InputFileError(
                    f"{path}:{line_no} is not valid JSON: {exc.msg} (column {exc.colno}); each line must be one JSON object{hint}"
                ) from exc
            if not isinstance(row, dict):
                raise InputFileError(f"{path}:{line_no} is a JSON {type(row).__name__}, not an object; each line must be one JSON object")
            yield line_no, row


def read_records(path: Path, model: type[M], what: str) -> list[M]:
    """Every line of `path` as `model` (which has an `id`; `what` names a row in messages); a row that does not validate, or an id used twice (the
    store keeps one record per id, so the later row would silently replace the earlier), is an InputFileError."""
    records: list[M] = []
    first_line: dict[str, int] = {}
    for line_no, row in read_jsonl(path):
        try:
            record = model.model_validate(row)
        except ValidationError as exc:
            raise InputFileError(f"{path}:{line_no} is not a valid {what}: {validation_problems(exc, whole='the row')}") from exc
        record_id = str(getattr(record, "id"))  # noqa: B009 - every model read here has an id
        if record_id in first_line:
            raise InputFileError(f"{path}:{line_no} repeats id {record_id[:80]!r} of line {first_line[record_id]}; ids must be unique")
        first_line[record_id] = line_no
        records.append(record)
    return records
