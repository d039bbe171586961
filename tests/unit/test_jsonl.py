"""agent.jsonl: a seed or articles file with a bad line is refused whole, naming the file, the line and the fix."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from agent.contracts import Article, LabelledTicket
from agent.jsonl import InputFileError, read_records

GOOD = {"id": "t-1", "subject": "Refund", "body": "please refund my order", "labels": {"service": "returns_refunds"}}


def write(tmp_path: Path, name: str, *lines: str | bytes) -> Path:
    path = tmp_path / name
    path.write_bytes(b"\n".join(line if isinstance(line, bytes) else line.encode() for line in lines) + b"\n")
    return path


@pytest.mark.parametrize(
    ("lines", "message"),
    [
        ([json.dumps(GOOD), "", '{"id": "t-2", "body": "x"'], r"seed.jsonl:3 is not valid JSON: .*one JSON object"),
        ([json.dumps({"id": "t-3", "labels": {}})], r"seed.jsonl:1 is not a valid ticket: body: Field required"),
        ([json.dumps({"body": "x", "labels": {}})], r"seed.jsonl:1 is not a valid ticket: id: Field required"),
        ([json.dumps({**GOOD, "labels": "returns_refunds"})], r"seed.jsonl:1 is not a valid ticket: labels: Input should be a valid dictionary"),
        ([json.dumps([GOOD])], r"seed.jsonl:1 is a JSON list, not an object"),
        ([json.dumps(GOOD), json.dumps({**GOOD, "body": "other"})], r"seed.jsonl:2 repeats id 't-1' of line 1; ids must be unique"),
        ([json.dumps(GOOD), b'{"id": "t-4", "body": "caf\xe9", "labels": {}}'], r"seed.jsonl is not UTF-8 text \(byte 0xe9 on line 2\).*iconv"),
    ],
    ids=["broken-json", "no-body", "no-id", "labels-not-a-mapping", "array", "duplicate-id", "latin1"],
)
def test_a_bad_line_is_named(tmp_path: Path, lines: list[str | bytes], message: str) -> None:
    """These were pydantic's multi-line dumps without a line number, a codec error naming neither file nor line, or
    (a repeated id) chromadb's DuplicateIDError traceback once half the file was embedded."""
    with pytest.raises(InputFileError, match=message):
        read_records(write(tmp_path, "seed.jsonl", *lines), LabelledTicket, "ticket")


def test_a_csv_gets_a_hint_and_a_directory_or_missing_file_is_named(tmp_path: Path) -> None:
    with pytest.raises(InputFileError, match=r"tickets.csv:1 is not valid JSON.*a CSV file\? this needs JSON Lines"):
        read_records(write(tmp_path, "tickets.csv", "id,subject,body", "1,a,b"), LabelledTicket, "ticket")
    with pytest.raises(InputFileError, match="is a directory"):
        read_records(tmp_path, Article, "article")
    with pytest.raises(InputFileError, match="does not exist"):
        read_records(tmp_path / "nope.jsonl", Article, "article")


def test_good_lines_are_read_blank_lines_skipped(tmp_path: Path) -> None:
    path = write(tmp_path, "articles.jsonl", json.dumps({"id": "a", "title": "T", "text": "x"}), "", "  ", json.dumps({"id": "b", "title": "U", "text": "y"}))
    assert [a.id for a in read_records(path, Article, "article")] == ["a", "b"]


def test_a_file_saved_with_a_byte_order_mark_is_read(tmp_path: Path) -> None:
    """Notepad and Excel's "CSV UTF-8" put a UTF-8 byte-order mark first: the file was refused as 'not valid JSON:
    Unexpected UTF-8 BOM (decode using utf-8-sig)', advice for a Python programmer, not for the lead with the file."""
    path = write(tmp_path, "help-centre.jsonl", b"\xef\xbb\xbf" + json.dumps({"id": "kb-1", "title": "Refunds", "text": "We refund."}).encode())
    assert [a.id for a in read_records(path, Article, "article")] == ["kb-1"]


@pytest.mark.parametrize(
    ("name", "content", "hint"),
    [
        ("refunds.md", "# Refunds\n\nWe refund within 5 days.", "a text or HTML page? this needs JSON Lines"),
        ("refunds.html", "<h1>Refunds</h1><p>We refund.</p>", "a text or HTML page? this needs JSON Lines"),
        ("articles.json", '[\n  {"id": "kb-1", "title": "Refunds", "text": "We refund."}\n]', "a JSON array or a pretty-printed object? this needs JSON Lines, e.g. `jq -c '.[]' IN > OUT`"),
    ],
)
def test_a_help_centre_export_in_another_format_is_told_the_shape(tmp_path: Path, name: str, content: str, hint: str) -> None:
    """A Markdown page, an HTML page or a JSON array given as --articles read only 'is not valid JSON: Expecting value
    (column 1)', which does not say that the file's format is the problem, nor what a line should hold."""
    path = write(tmp_path, name, content)
    with pytest.raises(InputFileError, match=re.escape(hint)):
        read_records(path, Article, "article")
