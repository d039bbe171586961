"""Batch files in and out (no Streamlit): read a CSV or JSONL of tickets, flatten classifications for a table."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Mapping, Sequence
from typing import Any

from pydantic import ValidationError

from agent.contracts import TicketIn

ALIASES = {"text": "body", "description": "body", "title": "subject", "id": "ticket_id"}
FIELDS = {"subject", "body", "channel", "messages", "ticket_id"}
MAX_ROWS = 5000


def _normalise(raw: Mapping[str, Any]) -> dict[str, Any]:
    """Known column aliases mapped (`text` → body, `id` → ticket_id); unknown columns dropped; blanks removed."""
    row: dict[str, Any] = {}
    for key, value in raw.items():
        name = ALIASES.get(str(key).strip().lower(), str(key).strip().lower())
        if name in FIELDS and value not in (None, "") and name not in row:
            row[name] = value if name == "messages" else str(value)
    return row


def parse_tickets(filename: str, data: bytes) -> tuple[list[TicketIn], list[str]]:
    """Tickets from a `.csv` (header row), `.jsonl` or `.json` (an array) file, and one problem per row that is not a ticket."""
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError:
        return [], [FileProblem(f"{filename} is not UTF-8 text; save it as UTF-8 and upload it again")]
    if filename.lower().endswith(".csv"):
        reader = csv.DictReader(io.StringIO(text), delimiter=_delimiter(text))
        if not reader.fieldnames or not {ALIASES.get(f.strip().lower(), f.strip().lower()) for f in reader.fieldnames} & {"subject", "body"}:
            return [], [FileProblem(f"{filename} needs a header row with a `subject`, `body` or `text` column (and optionally `channel`, `id`)")]
        raws = _csv_rows(reader)
    else:
        raws = _json_rows(text, whole=filename.lower().endswith(".json"))
    tickets: list[TicketIn] = []
    problems: list[str] = []
    for line, raw in raws:
        if isinstance(raw, _Unreadable):
            problems.append(f"{line}: {raw}")
            continue
        if not isinstance(raw, Mapping):
            problems.append(f"{line}: expected an object with subject/body, got {type(raw).__name__}")
            continue
        try:
            ticket = TicketIn.model_validate(_normalise(raw))
        except ValidationError as exc:
            first = exc.errors()[0]
            problems.append(f"{line}: {'.'.join(str(p) for p in first['loc'])}: {first['msg']}")
            continue
        if not ticket.full_text().strip():
            problems.append(f"{line}: no text (subject, body and messages are empty)")
            continue
        tickets.append(ticket)
    if len(tickets) > MAX_ROWS:
        problems.append(FileProblem(f"only the first {MAX_ROWS} of {len(tickets)} tickets are kept; split the file for more"))
        tickets = tickets[:MAX_ROWS]
    return tickets, problems


def _delimiter(text: str) -> str:
    """The header line's separator: a comma, else the semicolon that spreadsheets write where the decimal mark is a
    comma (German, Spanish, French settings), else a tab."""
    header = text.split("\n", 1)[0]
    return next((d for d in (",", ";", "\t") if d in header), ",")


class FileProblem(str):
    """A problem of the whole file (not UTF-8, no usable header, more tickets than kept), not of one row."""


class _Unreadable(str):
    """Why a row could not be read at all; kept in its place among the rows, so problems stay in file order."""


def _csv_rows(reader: csv.DictReader) -> list[tuple[str, Any]]:
    """("line N", row) per CSV row; a row the csv module cannot read (a cell over its 128 KiB limit, often a quote
    left open that swallows the rest of the file) becomes a problem, and reading stops there."""
    raws: list[tuple[str, Any]] = []
    while True:
        line = f"line {reader.line_num + 1}"
        try:
            row = next(reader)
        except StopIteration:
            return raws
        except csv.Error as exc:
            why = f"cannot be read as CSV ({exc}): a quote left open, or a cell too long for a ticket; the rows after it were not read"
            raws.append((line, _Unreadable(why)))
            return raws
        raws.append((line, row))


def _json_rows(text: str, *, whole: bool) -> list[tuple[str, Any]]:
    """("line N", object) per JSONL line; a `.json` file may instead hold one array of tickets (or one ticket)."""
    if whole:
        try:
            document = json.loads(text)
        except json.JSONDecodeError:
            document = None  # not one JSON document: read it as JSON lines
        if isinstance(document, list):
            return [(f"item {i}", item) for i, item in enumerate(document, start=1)]
        if isinstance(document, dict):
            return [("item 1", document)]
    raws: list[tuple[str, Any]] = []
    for i, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            raws.append((f"line {i}", json.loads(line)))
        except json.JSONDecodeError as exc:
            raws.append((f"line {i}", _Unreadable(f"not valid JSON ({exc.msg})")))
    return raws


def flat_row(index: int, ticket: TicketIn, result: Mapping[str, Any] | None, error: str | None) -> dict[str, Any]:
    """One result table row: the ticket, each axis's label and confidence, decision, route, draft, warnings."""
    row: dict[str, Any] = {"row": index, "id": ticket.ticket_id or "", "subject": ticket.subject or ticket.body[:80]}
    labels = (result or {}).get("labels") or {}
    for axis in ("service", "tier", "channel"):
        row[axis] = (labels.get(axis) or {}).get("label")
        row[f"{axis}_confidence"] = (labels.get(axis) or {}).get("confidence")
    route = (result or {}).get("route") or {}
    row.update(
        decision=(result or {}).get("decision"),
        route=route.get("team"),
        draft=bool((result or {}).get("draft")),
        warnings="; ".join((result or {}).get("warnings") or []),
        error=error or "",
    )
    return row


def to_csv(rows: Sequence[Mapping[str, Any]]) -> bytes:
    if not rows:
        return b""
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=list(rows[0]))
    writer.writeheader()
    writer.writerows(rows)
    return out.getvalue().encode("utf-8")


def to_jsonl(tickets: Sequence[TicketIn], results: Sequence[Mapping[str, Any] | None], errors: Sequence[str | None]) -> bytes:
    """The input ticket and the full classification contract (or the error) per line."""
    lines = [
        json.dumps({"ticket": t.model_dump(exclude_defaults=True), "classification": r, "error": e}, ensure_ascii=False)
        for t, r, e in zip(tickets, results, errors, strict=True)
    ]
    return ("\n".join(lines) + "\n").encode("utf-8")
