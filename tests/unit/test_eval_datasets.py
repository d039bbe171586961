"""Eval file reading: RFC-4180 CSV with multi-line fields, JSONL, column joins, the auto taxonomy."""

from __future__ import annotations

import logging
from collections import Counter
from pathlib import Path

import pytest

from agent.settings import REPO_ROOT
from agent.taxonomy import load_taxonomy
from evals.datasets import DatasetError, EvalRow, LabelCodec, is_oos_row, load_rows, unknown_labels
from evals.runner import derive_taxonomy, warn_empty_labels, warn_unknown_labels, warn_unlearned_train_labels


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


def test_jsonl_numbers_and_booleans_read_as_the_labels_they_name(tmp_path: Path) -> None:
    """A tier written 2.0 (a pandas float column) did not match 2 in the other file, NaN became a label 'nan' and
    true became 'True'."""
    path = tmp_path / "t.jsonl"
    path.write_text('{"text": "a", "y": 2.0, "b": true}\n{"text": "b", "y": NaN, "b": false}\n{"text": "c", "y": 0.5, "b": 1}\n', encoding="utf-8")
    rows = load_rows(path, ["text"], {"tier": "y", "channel": "b"})
    assert [(r.labels["tier"], r.labels["channel"]) for r in rows] == [("2", "true"), ("", "false"), ("0.5", "1")]


def test_rows_without_text_are_skipped_and_named(tmp_path: Path) -> None:
    path = tmp_path / "t.jsonl"
    path.write_text(
        '{"text": "a", "label": "x"}\n{"text": null, "label": 3}\n{"text": "  ", "label": "y"}\n{"text": "\\u200b\\u00a0\\u0007", "label": "y"}\n',
        encoding="utf-8",
    )
    skipped: list[str] = []
    rows = load_rows(path, ["text"], {"tier": "label"}, skipped=skipped)
    # row-4 (zero-width, no-break space, bell) went to the graph and was scored as a failed row, unlike row-3
    assert [r.id for r in rows] == ["row-1"] and skipped == ["row-2", "row-3", "row-4"]


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


@pytest.mark.parametrize(
    ("content", "message"),
    [
        # an open quote would swallow every row after it into one field
        ('id,subject,body,service\nx1,"unterminated quote,b,billing_payments\nx2,ok,ok,network\n',
         r"t.csv:2: a quote opened in this row is never closed"),
        ('id,subject,body,service\nx1,"a"b,c,network\n', r"t.csv:2: text follows a closing quote"),
        ("text;label\nhello, world;A\n", r"is it separated by ';'"),
    ],
)
def test_a_malformed_csv_quote_is_refused_with_its_line(tmp_path: Path, content: str, message: str) -> None:
    path = tmp_path / "t.csv"
    path.write_text(content, encoding="utf-8")
    with pytest.raises(DatasetError, match=message):
        load_rows(path, ["subject", "body"], {"service": "service"})


def test_a_row_with_too_many_or_too_few_fields_is_read_and_named_in_a_warning(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = tmp_path / "t.csv"  # the line numbers count the lines of multi-line fields before them
    path.write_text('id,subject,body,service\nx1,a,"two\nlines",network\nx2,a,b,network,EXTRA\nx3,ok\n', encoding="utf-8")
    with caplog.at_level(logging.WARNING):
        rows = load_rows(path, ["subject", "body"], {"service": "service"})
    assert [(r.id, r.labels["service"]) for r in rows] == [("x1", "network"), ("x2", "network"), ("x3", "")]
    assert "the header has 4 fields (',' -separated)".replace(" -", "-") in caplog.text
    assert "line 4: 5 fields; line 5: 2 fields" in caplog.text


def test_blank_lines_and_a_bom_are_not_rows(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = tmp_path / "t.csv"
    path.write_text('\ufeffid,text,label\r\n\r\n1,"a\r\n\r\nb",x\r\n\r\n2,c,y\r\n  \r\n\t\r\n', encoding="utf-8")
    with caplog.at_level(logging.WARNING):
        rows = load_rows(path, ["text"], {"service": "label"})
    assert "fields" not in caplog.text  # trailing lines of spaces were named as rows with too few fields
    assert [(r.id, r.text, r.labels["service"]) for r in rows] == [("1", "a\r\n\r\nb", "x"), ("2", "c", "y")]


def test_unknown_and_empty_test_labels_are_counted_and_warned(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = tmp_path / "t.csv"
    path.write_text("text,service,tier\na,telepathy,L1\nb,Telepathy,L2\nc,billing_payments,\nd,,L9\ne,oos,L1\n", encoding="utf-8")
    rows = load_rows(path, ["text"], {"service": "service", "tier": "tier"})
    codec = LabelCodec.for_ids({"service": ["billing_payments"], "tier": ["L1", "L2", "L3"]})
    found = unknown_labels(rows, codec, ["service", "tier"], oos_label="oos")
    assert found == {"service": (Counter({"telepathy": 1, "Telepathy": 1}), 3), "tier": (Counter({"L9": 1}), 4)}
    with caplog.at_level(logging.WARNING, logger="evals.runner"):
        warn_unknown_labels(rows, codec, ["service", "tier"], "oos", "default@1")
        warn_empty_labels(rows, ["service", "tier"])
    messages = [r.getMessage() for r in caplog.records]
    assert len(messages) == 3  # tier: 1 of 4 unknown is no reason to shout
    assert messages[0].startswith("2 of 3 test service labels are not in taxonomy default@1 ('telepathy' x 1, 'Telepathy' x 1)")
    assert "check that --label service=COLUMN names the label column and that --taxonomy" in messages[0]
    assert messages[1].startswith("1 test row(s) have an empty service label and are not scored on service (row-4)")
    assert messages[2].startswith("1 test row(s) have an empty tier label and are not scored on tier (row-3)")


def test_columns_match_apart_from_case_and_surrounding_spaces(tmp_path: Path) -> None:
    """A spreadsheet header ' Text ,Queue,ID' was refused as lacking columns text and queue."""
    path = tmp_path / "t.csv"
    path.write_text(' Text ,Queue,ID\nhello there,Billing,t-1\n', encoding="utf-8")
    rows = load_rows(path, ["text"], {"service": "queue"})
    assert [(r.id, r.text, r.labels["service"]) for r in rows] == [("t-1", "hello there", "Billing")]
    twice = tmp_path / "twice.csv"
    twice.write_text("text,Text,queue\na,b,c\n", encoding="utf-8")
    assert load_rows(twice, ["Text"], {"service": "queue"})[0].text == "b"  # an exact name wins
    with pytest.raises(DatasetError, match=r"column 'TEXT' matches several columns \['text', 'Text'\]"):
        load_rows(twice, ["TEXT"], {"service": "queue"})
    repeated = tmp_path / "repeated.csv"  # the second 'text' silently replaced the first
    repeated.write_text("text,queue,text\na,b,c\n", encoding="utf-8")
    with pytest.raises(DatasetError, match="the header has column 'text' more than once"):
        load_rows(repeated, ["text"], {"service": "queue"})


def test_a_file_with_no_records_says_so(tmp_path: Path) -> None:
    path = tmp_path / "t.jsonl"
    path.write_text("\n\n", encoding="utf-8")
    with pytest.raises(DatasetError, match="has no records"):
        load_rows(path, ["text"], {"service": "queue"})


def test_a_csv_with_only_its_header_says_it_has_no_rows(tmp_path: Path) -> None:
    """An empty `triage tickets export` twin (header only) was refused as having "no row with text in column(s)
    ['subject', 'body']", which sent the user looking for a text problem in a file that has no rows at all."""
    path = tmp_path / "reviewed.train.csv"
    path.write_text("id,subject,body,service,channel,tier\n", encoding="utf-8")
    with pytest.raises(DatasetError, match="has a header but no rows"):
        load_rows(path, ["subject", "body"], {"service": "service"})


def test_the_oos_label_matches_apart_from_case_and_spaces(tmp_path: Path) -> None:
    """--oos-label oos on rows labelled 'OOS' dropped none from train and scored them in test as unknown in-scope labels."""
    from evals.runner import in_scope

    path = tmp_path / "t.csv"
    path.write_text("text,y\na,OOS\nb, oos \nc,billing\nd,\n", encoding="utf-8")
    rows = load_rows(path, ["text"], {"service": "y"})
    assert [r.text for r in in_scope(rows, "oos", ["service"])] == ["c", "d"]
    assert [is_oos_row(r, "oos", ["service"]) for r in rows] == [True, True, False, False]
    assert unknown_labels(rows, LabelCodec.for_ids({"service": ["billing"]}), ["service"], oos_label="oos")["service"] == (Counter(), 1)


def test_jsonl_keeps_unicode_line_separators_inside_strings(tmp_path: Path) -> None:
    """json.dumps(ensure_ascii=False) leaves U+2028, U+0085 and U+001C raw in strings; the file was refused as
    'line 1 is not valid JSON' because str.splitlines cut the record there."""
    import json

    path = tmp_path / "t.jsonl"
    rows_in = [{"text": "first\u2028second \x85 third \x1c end", "y": "a"}, {"text": "ok", "y": "b"}]
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\r\n" for r in rows_in), encoding="utf-8")
    rows = load_rows(path, ["text"], {"service": "y"})
    assert [(r.text, r.labels["service"]) for r in rows] == [("first\u2028second \x85 third \x1c end", "a"), ("ok", "b")]


def test_jsonl_errors_name_the_line_and_what_to_give(tmp_path: Path) -> None:
    path = tmp_path / "t.jsonl"
    path.write_text('{"text": "a", "y": 1}\n\n42\n', encoding="utf-8")
    with pytest.raises(DatasetError, match="line 3 is not a JSON object; give one object per line"):
        load_rows(path, ["text"], {"service": "y"})
    pretty = tmp_path / "one.json"
    pretty.write_text('{\n  "text": "a",\n  "y": 1\n}\n', encoding="utf-8")
    with pytest.raises(DatasetError, match=r"one.json:1 is not valid JSON: .*one JSON document over several lines"):
        load_rows(pretty, ["text"], {"service": "y"})


def test_a_file_separated_otherwise_than_its_name_says_is_refused_from_its_header(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """A comma-separated .tsv was refused for 'text follows a closing quote' at its first quoted field; a
    tab-separated .csv warned about every row as ragged before the error; a directory 'did not exist'."""
    commas = tmp_path / "t.tsv"
    commas.write_text('text,label\n"hello, world",A\n', encoding="utf-8")
    with pytest.raises(DatasetError, match=r"t.tsv: the header line is separated by ',', not tabs; name the file .csv"):
        load_rows(commas, ["text"], {"service": "label"})
    tabs = tmp_path / "t.csv"
    tabs.write_text("text\tlabel\nhello\tA\nhi, there\tB\n", encoding="utf-8")
    with caplog.at_level(logging.WARNING), pytest.raises(DatasetError, match=r"is it separated by '\\t'\? name the file .tsv"):
        load_rows(tabs, ["text"], {"service": "label"})
    assert "fields" not in caplog.text
    with pytest.raises(DatasetError, match="is a directory; give a .csv, .tsv or .jsonl file"):
        load_rows(tmp_path, ["text"], {"service": "label"})


def test_train_labels_the_taxonomy_lacks_are_warned_on_the_console(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """A taxonomy file that does not cover train left those rows unlearned with a note in report.md only."""
    path = tmp_path / "t.csv"
    path.write_text("text,service\na,billing_payments\nb,pin_blocked\nc,pin_blocked\n", encoding="utf-8")
    rows = load_rows(path, ["text"], {"service": "service"})
    with caplog.at_level(logging.WARNING, logger="evals.runner"):
        warn_unlearned_train_labels(rows, LabelCodec.for_ids({"service": ["billing_payments"]}), ["service"], "mine@1")
    assert [r.getMessage() for r in caplog.records] == [
        "2 train row(s) have service labels that are not in taxonomy mine@1 ('pin_blocked' x 2); they are not learned "
        "(--taxonomy auto takes the train file's labels)"
    ]


def test_auto_taxonomy_merges_spellings_that_differ_only_in_case_or_spaces(tmp_path: Path) -> None:
    """A hand-kept label column ('Technical Support', 'TECHNICAL SUPPORT', '  Technical Support ') is one label, not
    three classes that split its rows and score each other as errors."""
    path = tmp_path / "t.csv"
    path.write_text(
        "text,queue\nthe app crashes,Technical Support\nerror 500 on save,TECHNICAL SUPPORT\nsetup fails,technical  support\n"
        "sync does nothing,Technical Support\ncharged twice,Billing\nrefund the fee,billing\n",
        encoding="utf-8",
    )
    rows = load_rows(path, ["text"], {"service": "queue"})
    base = load_taxonomy(REPO_ROOT / "knowledge_base" / "taxonomies" / "default.yaml")
    taxonomy, codec = derive_taxonomy(rows, ["service"], base, "t.csv")
    assert taxonomy.axes["service"].ids == ["Billing", "Technical_Support"]
    assert [label.name for label in taxonomy.axes["service"].labels] == ["Billing", "Technical Support"]  # the most frequent spelling
    assert "(4 training examples)" in taxonomy.axes["service"].labels[1].description
    assert taxonomy.axes["service"].fallback == "Technical_Support"
    for raw in ("technical support", " Technical   SUPPORT ", "Technical_Support"):
        assert codec.encode("service", raw) == "Technical_Support"
    assert codec.decode("service", "Technical_Support") == "Technical Support"
    assert codec.merged_spellings() == {"service": {"Billing": ["Billing", "billing"], "Technical_Support": ["TECHNICAL SUPPORT", "Technical Support", "technical  support"]}}


def test_merged_spellings_change_the_fingerprint_of_an_auto_run_and_only_then(tmp_path: Path) -> None:
    """A calibration and head cached when the spellings were separate classes have other ids: not reused."""
    from agent.settings import Settings
    from evals.datasets import EvalRow
    from evals.runner import EvalConfig, taxonomy_sha

    cfg = EvalConfig(train=tmp_path / "t.csv", test=tmp_path / "t.csv", text=["text"], labels={"service": "queue"}, out=tmp_path / "o", taxonomy="auto")
    clean = [EvalRow("1", "a", {"service": "Billing"}), EvalRow("2", "b", {"service": "Refunds"})]
    variants = [*clean, EvalRow("3", "c", {"service": "BILLING"})]
    assert taxonomy_sha(cfg, Settings(), clean) is None  # nothing merged: the fingerprints of clean files are unchanged
    assert taxonomy_sha(cfg, Settings(), variants) is not None


def test_duplicate_ids_never_take_an_id_the_file_already_holds(tmp_path: Path) -> None:
    """'a', 'a', 'a#2' gave two rows 'a#2': the eval's Chroma refused the train file (DuplicateIDError) and a test row's
    prediction replaced the other's; a row without an id ('row-3') and a row with that id likewise."""
    path = tmp_path / "t.csv"
    path.write_text("id,text,label\na,one,x\na,two,x\na#2,three,y\n,four,y\nrow-4,five,x\nb,six,x\nb,seven,x\n", encoding="utf-8")
    ids = [r.id for r in load_rows(path, ["text"], {"service": "label"})]
    assert ids == ["a", "a#2", "a#2#2", "row-4", "row-4#2", "b", "b#2"]
    assert len(set(ids)) == len(ids)


def test_a_taxonomy_label_is_matched_by_its_name_too() -> None:
    """QA: the channel dataset's 'Social media' and 'Chat' against the default taxonomy: 'Social media' is the name of
    the `social` label, and its 2,121 rows all scored as an unknown label."""
    from agent.settings import REPO_ROOT
    from agent.taxonomy import load_taxonomy

    taxonomy = load_taxonomy(REPO_ROOT / "knowledge_base" / "taxonomies" / "default.yaml")
    codec = LabelCodec.for_taxonomy(taxonomy, ["channel", "service", "tier"])
    assert [codec.encode("channel", v) for v in ("Email", "Phone", "Social media", "Chat", " live  CHAT", "Phone / voice")] == [
        "email", "phone", "social", "chat", "chat", "phone"]
    assert codec.encode("service", "Billing & payments") == "billing_payments" and codec.encode("tier", "l2") == "L2"
    assert codec.encode("channel", "fax") is None and codec.decode("channel", "social") == "social"


def test_a_whole_number_written_as_a_float_in_a_csv_matches_the_number(tmp_path: Path) -> None:
    """QA: a tier column 1/2/3 in train and the same column as pandas writes it to CSV with a gap (1.0/2.0/3.0) in
    test: every test label was 'not in taxonomy', accuracy 0, though JSONL's 2.0 already read as 2."""
    train = tmp_path / "train.csv"
    train.write_text("text,prio\na,1\nb,2\nc,3\nd,2\n", encoding="utf-8")
    test = tmp_path / "test.csv"
    test.write_text("text,prio\na,1.0\nb,2.0\nc, 3.00 \nd,\ne,2.5\n", encoding="utf-8")
    base = load_taxonomy(REPO_ROOT / "knowledge_base" / "taxonomies" / "default.yaml")
    _, codec = derive_taxonomy(load_rows(train, ["text"], {"tier": "prio"}), ["tier"], base, "train.csv")
    assert [codec.encode("tier", r.labels["tier"]) for r in load_rows(test, ["text"], {"tier": "prio"})] == ["1", "2", "3", None, None]
    # the other way round (train written with floats, test with ints) and in one file: one label, not two
    train.write_text("text,prio\na,1.0\nb,2.0\nc,2\nd,3.0\n", encoding="utf-8")
    taxonomy, codec = derive_taxonomy(load_rows(train, ["text"], {"tier": "prio"}), ["tier"], base, "train.csv")
    assert len(taxonomy.axes["tier"].ids) == 3
    assert codec.encode("tier", "2") == codec.encode("tier", "2.0") is not None
    assert codec.encode("tier", "3") == codec.encode("tier", "3.0") is not None
    assert is_oos_row(load_rows(test, ["text"], {"tier": "prio"})[0], "1", ["tier"])


def test_a_utf16_file_is_told_to_convert_from_utf16(tmp_path: Path) -> None:
    """QA: Excel's "Unicode Text" export (UTF-16 with a byte-order mark, tab-separated) was told to run
    `iconv -f cp1252`, which turns it into text with a NUL between every letter."""
    path = tmp_path / "export.tsv"
    path.write_text("text\tlabel\nRückerstattung bitte\tBilling\n", encoding="utf-16")
    with pytest.raises(DatasetError, match=r"export.tsv is UTF-16 text, not UTF-8; .*iconv -f utf-16 -t utf-8 export.tsv > export.utf8.tsv"):
        load_rows(path, ["text"], {"service": "label"})


@pytest.mark.parametrize(
    ("name", "head", "said"),
    [
        ("tickets.xlsx", b"PK\x03\x04\x14\x00\x06\x00\x08\x00\x00\x00!\x00\xff\xfe", "is an Excel workbook, not CSV or JSONL text; save it from Excel as \"CSV UTF-8"),
        ("tickets.csv", b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1\x00\x00\xff", "is an Excel workbook"),
        ("train.csv", b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\xff", "is a binary file, not CSV or JSONL text"),
    ],
)
def test_a_workbook_or_binary_file_is_named_not_sent_to_iconv(tmp_path: Path, name: str, head: bytes, said: str) -> None:
    """An .xlsx (or a PNG) passed as --train was told it is 'not UTF-8 text' and to convert it with iconv, which makes
    no CSV of a workbook. It is named for what it is, with the fix that works."""
    path = tmp_path / name
    path.write_bytes(head + bytes(range(256)) * 4)
    with pytest.raises(DatasetError) as caught:
        load_rows(path, ["text"], {"service": "label"})
    assert said in str(caught.value) and "iconv" not in str(caught.value), str(caught.value)


def test_auto_taxonomy_lists_numbered_tiers_in_number_order_so_the_service_can_read_it(tmp_path: Path) -> None:
    """QA: --taxonomy auto on a tier column 1..12 listed the tiers as text sorts them ('1', '10', '11', '12', '2', ...);
    the service refuses numbered tiers out of order, so the run stopped on the taxonomy.yaml it had written itself."""
    from evals.runner import write_taxonomy

    rows = [EvalRow(str(i), "text", {"tier": str(i % 12 + 1), "service": f"P{i % 11 + 1}"}) for i in range(48)]
    base = load_taxonomy(REPO_ROOT / "knowledge_base" / "taxonomies" / "default.yaml")
    taxonomy, _ = derive_taxonomy(rows, ["tier", "service"], base, "t.csv")
    assert taxonomy.axes["tier"].ids == [str(n) for n in range(1, 13)]
    assert taxonomy.axes["service"].ids == [f"P{n}" for n in range(1, 12)]
    write_taxonomy(taxonomy, tmp_path / "taxonomy.yaml")
    assert load_taxonomy(tmp_path / "taxonomy.yaml").axes["tier"].ids == taxonomy.axes["tier"].ids
    from evals.runner import natural_key

    assert sorted(["m²", "²", "Tier 10", "Tier 2"], key=natural_key) == ["m²", "Tier 2", "Tier 10", "²"]  # ² is no number to read


def test_a_test_label_in_another_script_that_train_lacks_is_out_of_taxonomy(tmp_path: Path) -> None:
    """QA: labels in Cyrillic or CJK slug to a placeholder ('label'), so a test label train lacked ('Возврат', '返金')
    was matched to a train label that slugged alike and scored as that class, not counted out of taxonomy."""
    codec = LabelCodec.derive({"service": ["Оплата", "Доставка", "Заказ 1"]})
    assert [codec.encode("service", v) for v in ("Оплата", " доставка ", "Заказ 1")] == [
        codec.encode("service", "Оплата"), codec.encode("service", "Доставка"), codec.encode("service", "Заказ 1")]
    assert None not in [codec.encode("service", v) for v in ("Оплата", " доставка ", "Заказ 1")]
    assert [codec.encode("service", v) for v in ("Возврат", "返金", "Возврат 1")] == [None, None, None]
    # Latin labels still match apart from accents, case and punctuation
    latin = LabelCodec.derive({"service": ["Reclamation", "Technical Support"]})
    assert [latin.encode("service", v) for v in ("Réclamation", "technical_support")] == ["Reclamation", "Technical_Support"]


def test_labels_in_another_unicode_form_are_one_label() -> None:
    """QA: a Cyrillic label typed as composed characters in train ('Счёт', 'Бой') and decomposed in test (as macOS
    writes text: 'е' + diaeresis) did not match and counted as out of taxonomy."""
    import unicodedata

    codec = LabelCodec.derive({"service": ["Счёт", "Бой", "Счёт"]})
    assert [codec.encode("service", unicodedata.normalize("NFD", v)) for v in ("Счёт", "Бой")] == [codec.encode("service", "Счёт"), codec.encode("service", "Бой")]
    assert codec.encode("service", "Счёт") is not None and codec.encode("service", "Бой") is not None
    assert codec.encode("service", "ＢＯＩ") is None  # full-width Latin folds to 'boi', not a Cyrillic label
