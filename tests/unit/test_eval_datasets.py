"""Eval file reading: RFC-4180 CSV with multi-line fields, JSONL, column joins, the auto taxonomy."""

from __future__ import annotations

from pathlib import Path

import pytest

from agent.settings import REPO_ROOT
from agent.taxonomy import load_taxonomy
from evals.datasets import DatasetError, load_rows
from evals.runner import derive_taxonomy


def test_csv_multiline_fields_and_joined_columns(tmp_path: Path) -> None:
    path = tmp_path / "t.csv"
    path.write_text('ticket_id,subject,body,queue\r\n1,Hi,"line one\r\nline ""two""",Billing and Payments\r\n2,,only body,IT Support\r\n3,,,IT Support\r\n', encoding="utf-8")
    rows = load_rows(path, ["subject", "body"], {"service": "queue"})
    assert [r.id for r in rows] == ["1", "2"]  # the row without text is skipped
    assert rows[0].text == 'Hi\n\nline one\r\nline "two"'
    assert rows[1].text == "only body"
    assert rows[0].labels == {"service": "Billing and Payments"}


def test_jsonl_ids_from_row_numbers_and_non_string_values(tmp_path: Path) -> None:
    path = tmp_path / "t.jsonl"
    path.write_text('{"text": "a", "label": 3}\n\n{"text": "b", "label": null}\n', encoding="utf-8")
    rows = load_rows(path, ["text"], {"tier": "label"})
    assert [(r.id, r.text, r.labels["tier"]) for r in rows] == [("row-1", "a", "3"), ("row-2", "b", "")]


def test_rows_without_text_are_skipped_and_named(tmp_path: Path) -> None:
    path = tmp_path / "t.jsonl"
    path.write_text('{"text": "a", "label": "x"}\n{"text": null, "label": 3}\n{"text": "  ", "label": "y"}\n', encoding="utf-8")
    skipped: list[str] = []
    rows = load_rows(path, ["text"], {"tier": "label"}, skipped=skipped)
    assert [r.id for r in rows] == ["row-1"] and skipped == ["row-2", "row-3"]


def test_a_file_that_is_not_utf8_or_not_comma_separated_is_refused_with_the_fix(tmp_path: Path) -> None:
    latin1 = tmp_path / "export.csv"
    latin1.write_bytes("text,label\nRückerstattung bitte,Billing\n".encode("cp1252"))
    with pytest.raises(DatasetError, match=r"not UTF-8 text \(byte 0xfc on line 2\).*iconv -f cp1252 -t utf-8 export.csv"):
        load_rows(latin1, ["text"], {"service": "label"})
    semicolons = tmp_path / "excel.csv"
    semicolons.write_text("text;label\nhello;A\n", encoding="utf-8")
    with pytest.raises(DatasetError, match="separated by ';'"):
        load_rows(semicolons, ["text"], {"service": "label"})


def test_missing_column_is_a_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "t.csv"
    path.write_text("text,label\nx,y\n", encoding="utf-8")
    with pytest.raises(DatasetError, match="lacks column"):
        load_rows(path, ["body"], {"service": "label"})


def test_auto_taxonomy_keeps_other_axes_and_uses_safe_ids(tmp_path: Path) -> None:
    path = tmp_path / "t.csv"
    path.write_text("text,queue\nfoo bar baz qux,Technical Support\nsend me the invoice please,Billing & Payments\nagain,Technical Support\n", encoding="utf-8")
    rows = load_rows(path, ["text"], {"service": "queue"})
    base = load_taxonomy(REPO_ROOT / "knowledge_base" / "taxonomies" / "default.yaml")
    taxonomy, codec = derive_taxonomy(rows, ["service"], base, "t.csv")
    assert taxonomy.axes["service"].ids == ["Billing_Payments", "Technical_Support"]
    assert taxonomy.axes["service"].fallback == "Technical_Support"  # the most frequent
    assert taxonomy.axes["tier"] == base.axes["tier"]
    assert codec.decode("service", "Billing_Payments") == "Billing & Payments"
