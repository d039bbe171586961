"""Labelled files for `triage eval`: CSV (RFC-4180, multi-line fields) or JSONL, text columns joined, labels mapped.

A labelled file is self-contained: each row has an id (a column named id / ticket_id / utterance_id, else its
row number), one or more text columns and one column per scored axis. Raw label values from data ("Technical
Support", "card_payment_fee_charged", "L2") become taxonomy ids through a `LabelCodec`, which remembers the way
back for the reports.
"""

from __future__ import annotations

import csv
import json
import logging
import math
import re
import sys
import unicodedata
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from agent.contracts import AXES, Taxonomy, has_text
from agent.export import FORMULA_START

ID_COLUMNS = ("id", "ticket_id", "utterance_id", "uid", "row_id")
_SAFE_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_\-]*$")

log = logging.getLogger(__name__)


class DatasetError(ValueError):
    """A labelled file or a column spec that cannot be used; the message says what to change."""


@dataclass(frozen=True)
class EvalRow:
    id: str
    text: str
    labels: dict[str, str] = field(default_factory=dict)  # axis -> raw value as in the file ("" = missing)


# ---------------------------------------------------------------- reading


def read_table(path: Path) -> tuple[list[str], list[dict[str, str]]]:
    """Columns and rows of a CSV/TSV or JSONL file; every value as a string ('' for null)."""
    if path.is_dir():
        raise DatasetError(f"{path} is a directory; give a .csv, .tsv or .jsonl file")
    if not path.is_file():
        raise DatasetError(f"{path} does not exist")
    _check_utf8(path)
    suffix = path.suffix.lower()
    if suffix in {".jsonl", ".ndjson", ".json"}:
        return _read_jsonl(path)
    if suffix in {".csv", ".tsv", ".txt"} or not suffix:
        with path.open(encoding="utf-8-sig") as fh:
            first = fh.read(1)
        if first in "{[" and first:
            return _read_jsonl(path)
        delimiter = "\t" if suffix == ".tsv" else ","
        _check_delimiter(path, delimiter)
        return _read_csv(path, delimiter=delimiter)
    raise DatasetError(f"{path}: unknown file type {suffix!r}; give a .csv, .tsv or .jsonl file")


def _check_delimiter(path: Path, delimiter: str) -> None:
    """Refuse a file separated by another character than its name says, from its header line, before its rows are
    parsed: a quoted field then reads as text after a closing quote, or every row as a ragged one, and the real cause
    came last or not at all (a comma-separated file named .tsv)."""
    with path.open(encoding="utf-8-sig", newline="") as fh:
        header = fh.readline()
    if delimiter in header:
        return
    found = [sep for sep in (",", ";", "\t", "|") if sep != delimiter and sep in header]
    if len(found) != 1:
        return  # one column, or no telling
    if found[0] == ",":
        raise DatasetError(f"{path}: the header line is separated by ',', not tabs; name the file .csv")
    fix = "name the file .tsv" if found[0] == "\t" and delimiter == "," else "save it comma-separated (RFC 4180)"
    raise DatasetError(f"{path}: the header line has no {delimiter!r}: is it separated by {found[0]!r}? {fix}")


_EXCEL = "an Excel workbook"
_BINARY_FIX = {_EXCEL: 'save it from Excel as "CSV UTF-8 (Comma delimited)" and pass that file'}


def _binary_kind(data: bytes) -> str | None:
    """What a file that is not text is, in words, or None for text in some encoding: a workbook passed as --train
    was told to run iconv on it."""
    if data.startswith((b"PK\x03\x04", b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1")):  # .xlsx (a zip) / .xls (OLE)
        return _EXCEL
    if data[:2] in (b"\xff\xfe", b"\xfe\xff"):  # UTF-16 text has NULs between its letters
        return None
    return "a binary file" if b"\x00" in data[:8192] else None


def _check_utf8(path: Path) -> None:
    """Refuse a file that is not UTF-8 with the fix, instead of a traceback or silently wrong letters (an export
    from Excel is often Windows-1252)."""
    data = path.read_bytes()
    try:
        data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        binary = _binary_kind(data)
        if binary:  # iconv would not make text of it
            raise DatasetError(f"{path} is {binary}, not CSV or JSONL text; {_BINARY_FIX.get(binary, 'pass the CSV or JSONL file')}") from None
        # Excel's "Unicode Text" is UTF-16 with a byte-order mark: converting it as cp1252 gives NULs between letters
        source = "utf-16" if data[:2] in (b"\xff\xfe", b"\xfe\xff") else "cp1252"
        what = "is UTF-16 text, not UTF-8" if source == "utf-16" else f"is not UTF-8 text (byte 0x{data[exc.start]:02x} on line {line})"
        raise DatasetError(
            f"{path} {what}; save it as UTF-8 (Excel: "
            f"\"CSV UTF-8\") or convert it, e.g. `iconv -f {source} -t utf-8 {path.name} > {path.stem}.utf8{path.suffix}`"
        ) from None


def _read_csv(path: Path, delimiter: str) -> tuple[list[str], list[dict[str, str]]]:
    """Rows as dicts. A quote left open swallows every row after it, so such a file is refused with the line. A
    row with more or fewer fields than the header is read as before (extra fields dropped, missing ones empty) but
    each is named, by line, in a warning: it may have shifted text into a label column, and the file should be fixed."""
    csv.field_size_limit(min(sys.maxsize, 2**31 - 1))
    with path.open(encoding="utf-8-sig", newline="") as fh:
        records = list(_csv_records(path, fh, delimiter))
    if not records:
        raise DatasetError(f"{path} has no header row")
    (_, columns), body = records[0], records[1:]
    problems = [f"line {line}: {len(fields)} fields" for line, fields in body if len(fields) != len(columns)]
    if problems:
        shown = "; ".join(problems[:5]) + (f"; and {len(problems) - 5} more" if len(problems) > 5 else "")
        log.warning(
            "%s: the header has %d fields (%r-separated) but %s; those rows are read with extra fields dropped and "
            "missing ones empty: quote fields that contain %r, a line break or a quote (as \"\"), so every row has %d%s",
            path, len(columns), delimiter, shown, delimiter, len(columns), _separator_hint(columns),
        )  # fmt: skip
    width = len(columns)
    return columns, [
        dict(zip(columns, [unguard_formula(f) for f in [*fields[:width], *[""] * (width - len(fields))]], strict=True))
        for _, fields in body
    ]


def unguard_formula(cell: str) -> str:
    """A CSV cell as it was before `triage tickets export` (agent.export.spreadsheet_safe) marked it as text for
    spreadsheets: the `'` it put before a leading `=`, `+`, `-`, `@`, tab or CR is not the ticket's."""
    return cell[1:] if cell[:1] == "'" and cell[1:2] in FORMULA_START else cell


def _csv_records(path: Path, lines: Iterable[str], delimiter: str) -> Iterable[tuple[int, list[str]]]:
    """(first line, fields) of each non-blank record (blank: empty or only spaces). Strict parsing: a quote that is never closed, or text
    right after a closing quote, is an error at the line where its record starts (a quoted field may span lines)."""
    reader = csv.reader(lines, delimiter=delimiter, strict=True)
    start = 1
    while True:
        try:
            fields = next(reader)
        except StopIteration:
            return
        except csv.Error as exc:
            what = (
                "a quote opened in this row is never closed (the rest of the file would read as one field)"
                if "end of data" in str(exc)
                else f"text follows a closing quote ({exc})"
            )
            raise DatasetError(f'{path}:{start}: {what}; quote a field as a whole and double the quotes inside it, e.g. "say ""hi"""') from None
        if fields and not (len(fields) == 1 and not fields[0].strip()):  # a line of spaces is a blank line too
            yield start, fields
        start = reader.line_num + 1


def _separator_hint(columns: Sequence[str]) -> str:
    """Where a one-column header holds another separator: a hint to save the file comma-separated."""
    return next(
        (f" (is it separated by {sep!r}? save it comma-separated, RFC 4180)" for sep in (";", "\t", "|") if len(columns) == 1 and sep in columns[0]),
        "",
    )


def _stringify(value: object) -> str:
    """A JSON value as a cell. Numbers as the label they name: 2.0 is 2 (a float column written by pandas must match
    the ints of another file), NaN is an empty cell; booleans as JSON spells them."""
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        if math.isnan(value):
            return ""
        return str(int(value)) if value.is_integer() else repr(value)
    if isinstance(value, list | tuple):
        return "; ".join(_stringify(v) for v in value)
    return json.dumps(value, ensure_ascii=False) if isinstance(value, dict) else str(value)


def _read_jsonl(path: Path) -> tuple[list[str], list[dict[str, str]]]:
    """One JSON object per line (or one JSON array of objects). Lines are split at \\n only: a writer that keeps
    non-ASCII as is (ensure_ascii=False) leaves U+2028, U+0085 or U+001C raw inside strings, where str.splitlines
    would cut a record in two."""
    rows: list[dict[str, str]] = []
    columns: dict[str, None] = {}
    text = path.read_text(encoding="utf-8-sig")
    stripped = text.lstrip()
    items: list[tuple[str, object]] = []  # (where, value)
    if stripped.startswith("["):  # a JSON array of objects is accepted too
        try:
            items = [(f"record {i}", item) for i, item in enumerate(json.loads(stripped), 1)]
        except json.JSONDecodeError as exc:
            raise DatasetError(f"{path} is not valid JSON: {exc}") from exc
    else:
        for line_no, line in enumerate(text.split("\n"), 1):
            if not line.strip():
                continue
            try:
                items.append((f"line {line_no}", json.loads(line)))
            except json.JSONDecodeError as exc:
                raise DatasetError(f"{path}:{line_no} is not valid JSON: {exc}{_one_document_hint(text)}") from exc
    for where, item in items:
        if not isinstance(item, dict):
            raise DatasetError(f"{path}: {where} is not a JSON object; give one object per line, e.g. {{\"text\": \"...\", \"label\": \"...\"}}")
        rows.append({str(k): _stringify(v) for k, v in item.items()})
        columns.update(dict.fromkeys(item))
    return list(columns), rows


def _one_document_hint(text: str) -> str:
    """Where the whole file is one JSON document spread over lines (a pretty-printed object): say what to give."""
    try:
        json.loads(text)
    except json.JSONDecodeError:
        return ""
    return " (the file is one JSON document over several lines; give one object per line (JSONL) or an array of objects)"


# ---------------------------------------------------------------- specs


def parse_text_columns(spec: str) -> list[str]:
    cols = [c.strip() for c in spec.split(",") if c.strip()]
    if not cols:
        raise DatasetError("--text needs at least one column name, e.g. --text text or --text subject,body")
    return cols


def parse_label_specs(specs: Sequence[str]) -> dict[str, str]:
    """['service=queue', 'tier=priority'] -> {'service': 'queue', 'tier': 'priority'}."""
    out: dict[str, str] = {}
    for spec in specs:
        axis, sep, column = spec.partition("=")
        axis, column = axis.strip().lower(), column.strip()
        if not sep or not axis or not column:
            raise DatasetError(f"--label {spec!r} must look like AXIS=COLUMN, e.g. --label service=queue")
        if axis not in AXES:
            # the agent labels three fixed axes; an intent, category or queue column is scored as one of them
            raise DatasetError(
                f"--label {spec!r}: {axis!r} is not one of the agent's axes {', '.join(AXES)}; score the column on the axis "
                f"whose labels it holds, e.g. --label service={column} for intents, categories or queues"
            )
        if axis in out:
            raise DatasetError(f"--label: axis {axis!r} is given twice ({axis}={out[axis]}, {axis}={column}); give one column per axis")
        out[axis] = column
    if not out:
        raise DatasetError("give at least one --label AXIS=COLUMN, e.g. --label service=category")
    return out


def load_rows(
    path: Path, text_columns: Sequence[str], label_columns: dict[str, str], skipped: list[str] | None = None
) -> list[EvalRow]:
    """Rows with their joined text and raw labels; rows without any text are skipped (their ids, `row-N` where
    the file has no id column, are appended to `skipped` so the report can name them)."""
    columns, table = read_table(path)
    if not columns:
        raise DatasetError(f"{path} has no records; give a file with a header row (CSV) or one JSON object per line (JSONL)")
    wanted = [*text_columns, *label_columns.values()]
    found = {c: resolve_column(c, columns, path) for c in wanted}
    missing = [c for c in wanted if found[c] is None]
    if missing:
        raise DatasetError(f"{path} lacks column(s) {missing}; it has {columns}{_separator_hint(columns)}")
    text_columns = [found[c] or c for c in text_columns]
    label_columns = {axis: found[c] or c for axis, c in label_columns.items()}
    id_column = next((c for c in (resolve_column(i, columns, path) for i in ID_COLUMNS) if c), None)
    rows: list[EvalRow] = []
    seen: Counter[str] = Counter()
    used: set[str] = set()  # ids given so far; the store and predictions.jsonl key rows by them, so they must be unique
    for i, raw in enumerate(table):
        # a cell of only zero-width or control characters is no text, as for the graph (agent.contracts.has_text)
        text = "\n\n".join(raw.get(c, "").strip() for c in text_columns if has_text(raw.get(c, "")))
        row_id = (raw.get(id_column, "").strip() if id_column else "") or f"row-{i + 1}"
        if not text:
            if skipped is not None:
                skipped.append(row_id)
            continue
        seen[row_id] += 1
        if row_id in used:  # duplicate ids stay distinct rows: x, x#2, x#3, never an id the file already holds
            n = max(seen[row_id], 2)
            while f"{row_id}#{n}" in used:
                n += 1
            row_id = f"{row_id}#{n}"
        used.add(row_id)
        labels = {axis: raw.get(col, "").strip() for axis, col in label_columns.items()}
        rows.append(EvalRow(id=row_id, text=text, labels=labels))
    if not table:  # a header and nothing under it (an export before any review) has no text to name as missing
        raise DatasetError(f"{path} has a header but no rows; give a file with at least one labelled row")
    if not rows:
        raise DatasetError(f"{path} has no row with text in column(s) {list(text_columns)}")
    return rows


def resolve_column(name: str, columns: Sequence[str], path: Path) -> str | None:
    """The file's column for a name given on the command line: the exact name, else the one column that equals it
    ignoring case and surrounding spaces (spreadsheets export ' Text ' or 'Queue'); None if there is none."""
    if list(columns).count(name) > 1:  # a CSV header may repeat a name; the row would keep only the last cell
        raise DatasetError(f"{path}: the header has column {name!r} more than once; rename the copies")
    if name in columns:
        return name
    matches = [c for c in columns if c.strip().casefold() == name.strip().casefold()]
    if len(matches) > 1:
        raise DatasetError(f"{path}: column {name!r} matches several columns {matches} apart from case and spaces; rename one")
    return matches[0] if matches else None


# ---------------------------------------------------------------- label ids


def slugify(value: str) -> str:
    """'Technical Support' -> 'Technical_Support'; 'reverted_card_payment?' -> 'reverted_card_payment'."""
    ascii_ = unicodedata.normalize("NFKD", value).encode("ascii", "ignore").decode("ascii")
    slug = re.sub(r"[^A-Za-z0-9_\-]+", "_", ascii_.strip()).strip("_-")
    if not slug or not slug[0].isalnum():
        slug = f"x{slug}" if slug else "label"
    return slug


def _slug_keeps_meaning(value: str) -> bool:
    """Whether `slugify` keeps what a value says: Latin letters and digits apart from accents and punctuation. A
    label in another script slugs to a placeholder ('Возврат' and '返金' both to 'label', 'Возврат 1' to '1'), and
    a test label the train file lacked was matched to whichever train label had slugged alike instead of counting
    as out of taxonomy."""
    letters = [c for c in unicodedata.normalize("NFKD", value) if c.isalnum()]
    return bool(letters) and all(c.isascii() for c in letters)


class LabelCodec:
    """Raw label value <-> taxonomy id, per axis. `encode` returns None for a value the taxonomy lacks."""

    def __init__(self) -> None:
        self._to_id: dict[str, dict[str, str]] = {}
        self._to_raw: dict[str, dict[str, str]] = {}

    @classmethod
    def derive(cls, axis_values: dict[str, Iterable[str]]) -> LabelCodec:
        """A codec for labels taken from data: each distinct value gets a safe, unique id. Spellings that differ only
        in case or spaces ('Billing', 'BILLING', 'billing  ') are one label, named by its most frequent spelling: a
        hand-kept column has such variants, and as separate classes each would split the label's rows and score the
        others as errors (test labels and --oos-label are matched apart from case and spaces too)."""
        codec = cls()
        for axis, values in axis_values.items():
            groups: dict[str, Counter[str]] = {}
            for v in values:
                if v:
                    groups.setdefault(fold_label(v), Counter())[v] += 1
            # the most frequent spelling names the label; a tie goes to the first in sorted order
            named = {key: min(spellings, key=lambda v: (-spellings[v], v)) for key, spellings in groups.items()}
            to_id: dict[str, str] = {}
            to_raw: dict[str, str] = {}
            used: set[str] = set()
            for key, raw in sorted(named.items(), key=lambda kv: kv[1]):
                base = raw if _SAFE_ID.match(raw) else slugify(raw)
                label_id, n = base, 1
                while label_id.lower() in used:
                    n += 1
                    label_id = f"{base}_{n}"
                used.add(label_id.lower())
                to_id.update(dict.fromkeys(groups[key], label_id))
                to_raw[label_id] = raw
            codec._to_id[axis] = to_id
            codec._to_raw[axis] = to_raw
        return codec

    @classmethod
    def for_ids(cls, axis_ids: dict[str, Sequence[str]]) -> LabelCodec:
        """A codec for a given taxonomy: a raw value matches an id as is, case-insensitively, or slugified."""
        codec = cls()
        for axis, ids in axis_ids.items():
            codec._to_id[axis] = {i: i for i in ids}
            codec._to_raw[axis] = {i: i for i in ids}
        return codec

    @classmethod
    def for_taxonomy(cls, taxonomy: Taxonomy, axes: Sequence[str]) -> LabelCodec:
        """A codec for a taxonomy file: a raw value matches an id (as `for_ids`) or a label's name, apart from case
        and spaces: a channel column that says 'Social media' or 'Live chat' names the default taxonomy's `social`
        and `chat` by the names the taxonomy gives them, and every such row scored as an unknown label. An id wins
        over another label's name."""
        codec = cls.for_ids({axis: taxonomy.axes[axis].ids for axis in axes})
        for axis in axes:
            names = {label.name: label.id for label in taxonomy.axes[axis].labels}  # type: ignore[index]
            codec._to_id[axis] = names | codec._to_id[axis]
        return codec

    def encode(self, axis: str, raw: str) -> str | None:
        if not raw:
            return None
        table = self._to_id.get(axis, {})
        if raw in table:
            return table[raw]
        # ids last: an id wins over a name (or another spelling) that folds alike
        folded = {fold_label(k): v for k, v in table.items()} | {i.casefold(): i for i in self._to_raw.get(axis, {})}
        return folded.get(fold_label(raw)) or (folded.get(slugify(raw).casefold()) if _slug_keeps_meaning(raw) else None)

    def decode(self, axis: str, label_id: str) -> str:
        return self._to_raw.get(axis, {}).get(label_id, label_id)

    def ids(self, axis: str) -> list[str]:
        return list(self._to_raw.get(axis, {}))

    def to_json(self) -> dict[str, dict[str, str]]:
        return {axis: dict(table) for axis, table in self._to_id.items()}

    def merged_spellings(self) -> dict[str, dict[str, list[str]]]:
        """Per axis, the labels that several raw spellings were merged into (id -> spellings); empty when none were.
        It goes into the run's fingerprint: the ids of such a file changed when spellings began to be merged."""
        out: dict[str, dict[str, list[str]]] = {}
        for axis, table in self._to_id.items():
            spellings: dict[str, list[str]] = {}
            for raw, label_id in table.items():
                spellings.setdefault(label_id, []).append(raw)
            merged = {label_id: sorted(raws) for label_id, raws in spellings.items() if len(raws) > 1}
            if merged:
                out[axis] = merged
        return out


_WHOLE_NUMBER = re.compile(r"^([+-]?\d+)\.0+$")


def fold_label(value: str) -> str:
    """A raw label apart from case and spaces: 'Billing ', 'BILLING' and 'billing' fold alike, and so do the Unicode
    forms of one spelling ('й' typed as one character or as 'и' + a breve, as macOS writes it). A whole number written
    as a float ('2.0', as pandas writes an int column with a gap to CSV) folds as the number ('2'), as JSONL numbers
    are read (`_stringify`), so a CSV tier of 2.0 matches a 2 in the other file."""
    folded = " ".join(unicodedata.normalize("NFKC", value).split()).casefold()
    whole = _WHOLE_NUMBER.match(folded)
    return whole.group(1) if whole else folded


def is_oos(value: str, oos_label: str | None) -> bool:
    """Whether a raw label is the `--oos-label` value; apart from case and spaces, as in-scope labels are matched
    (`--oos-label oos` on a file that says 'OOS' scored every out-of-scope row as an unknown in-scope label)."""
    return oos_label is not None and bool(value) and fold_label(value) == fold_label(oos_label)


def is_oos_row(row: EvalRow, oos_label: str | None, axes: Sequence[str]) -> bool:
    return any(is_oos(row.labels.get(a, ""), oos_label) for a in axes)


def unknown_labels(rows: Sequence[EvalRow], codec: LabelCodec, axes: Sequence[str], oos_label: str | None = None) -> dict[str, tuple[Counter[str], int]]:
    """Per axis: the raw gold values the codec cannot encode (value -> rows) and how many rows have a gold value
    at all (empty cells and `--oos-label` rows are not scored, so they count in neither)."""
    out: dict[str, tuple[Counter[str], int]] = {}
    for axis in axes:
        given = [r.labels.get(axis, "") for r in rows if r.labels.get(axis) and not is_oos(r.labels[axis], oos_label)]
        out[axis] = (Counter(v for v in given if codec.encode(axis, v) is None), len(given))
    return out
