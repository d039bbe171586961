#!/usr/bin/env python3
"""Rebuild knowledge_base/articles/articles.jsonl from the two permissively licensed KB sources.

    python knowledge_base/build_articles.py [--datasets PATH]

Sources (see articles/ATTRIBUTION.md):
  - kb_abcd_guidelines/kb_articles.jsonl      MIT           (asappresearch/abcd)
  - kb_arduino_help_center/articles.jsonl     CC BY-SA 4.0  (arduino/help-center-content)

Changes made to the text: images, figures and videos removed (their files are not shipped), layout HTML tags
and in-page tables of contents removed, GitHub admonitions ("> [!NOTE]") written as bold labels, text cut at a paragraph boundary to at most
MAX_CHARS characters. The service label of each article comes from mappings/kb_articles.yaml.

Standard library + PyYAML only.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

import yaml

KB = Path(__file__).resolve().parent
REPO = KB.parent
MAX_CHARS = 3000
SHORTENED = "(Shortened; the full article is at the source URL.)"

SOURCES = {
    "abcd": {"file": "kb_abcd_guidelines/kb_articles.jsonl", "license": "MIT"},
    "arduino": {"file": "kb_arduino_help_center/articles.jsonl", "license": "CC-BY-SA-4.0"},
}

IMAGE_RE = re.compile(r"!\[(?:[^\[\]]|\[[^\]]*\])*\]\([^)]*\)")  # ![alt, possibly with [brackets]](img/x.png)
ADMONITION_RE = re.compile(r"\[!(NOTE|TIP|IMPORTANT|WARNING|CAUTION)\]", re.IGNORECASE)
HTML_DROP_RE = re.compile(  # elements whose content is an image, a video or an empty anchor
    r"<(figure|iframe|video)\b[^>]*>.*?</\1>|<img\b[^>]*>|<source\b[^>]*>|<a\s+(?:id|name)=\"[^\"]*\"\s*>\s*</a>",
    re.DOTALL | re.IGNORECASE,
)
HTML_UNWRAP_RE = re.compile(r"</?(?:div|span|p)\b[^>]*>", re.IGNORECASE)  # layout tags: keep the content
ANCHOR_ITEM_RE = re.compile(r"^\s*(?:[*\-+]|\d+\.)\s*\[[^\]]+\]\(#[^)]*\)\s*$")


def die(msg: str) -> None:
    sys.exit(f"build_articles: {msg}")


def service_ids() -> set[str]:
    taxonomy = yaml.safe_load((KB / "taxonomies" / "default.yaml").read_text(encoding="utf-8"))
    return {label["id"] for label in taxonomy["axes"]["service"]["labels"]}


def blocks(markdown: str) -> list[str]:
    """Paragraphs separated by blank lines; a fenced code block is never split."""
    out, current, in_fence = [], [], False
    for line in markdown.split("\n"):
        if line.strip().startswith("```"):
            in_fence = not in_fence
        if not line.strip() and not in_fence:
            if current:
                out.append("\n".join(current))
                current = []
            continue
        current.append(line)
    if current:
        out.append("\n".join(current))
    return out


def clean(markdown: str) -> str:
    text = markdown.replace("\r\n", "\n")
    text = IMAGE_RE.sub("", text)
    text = HTML_DROP_RE.sub("", text)
    text = HTML_UNWRAP_RE.sub("", text)
    text = ADMONITION_RE.sub(lambda m: f"**{m.group(1).capitalize()}:**", text)
    kept = []
    for block in blocks(text):
        lines = [line for line in block.split("\n") if line.strip()]
        if not lines:
            continue
        if block.strip().lower().rstrip(":") == "in this article":
            continue
        if all(ANCHOR_ITEM_RE.match(line) for line in lines):  # in-page table of contents
            continue
        kept.append("\n".join(line.rstrip() for line in lines))
    return "\n\n".join(kept).strip()


def trim(text: str, limit: int = MAX_CHARS) -> str:
    if len(text) <= limit:
        return text
    budget = limit - len(SHORTENED) - 2
    out: list[str] = []
    size = 0
    for block in blocks(text):
        extra = len(block) + (2 if out else 0)
        if size + extra > budget:
            break
        out.append(block)
        size += extra
    if not out:  # a first paragraph longer than the budget: cut it at a line, then a sentence, boundary
        head = text[:budget]
        cut = max(head.rfind("\n"), head.rfind(". ") + 1)
        out = [head[:cut].rstrip() if cut > budget // 2 else head.rstrip()]
    # drop a trailing heading or horizontal rule that would introduce nothing
    while out and (out[-1].lstrip().startswith("#") or out[-1].strip() in {"---", "***"}):
        out.pop()
    return "\n\n".join(out + [SHORTENED])


def resolve(mapping: dict, article_id: str, section: str, subsection: str) -> str:
    for table, key in (("by_id", article_id), ("by_subsection", f"{section}/{subsection}"), ("by_section", section)):
        label = (mapping.get(table) or {}).get(key)
        if label:
            return label
    die(f"no service mapping for {article_id} ({section}/{subsection}); add it to mappings/kb_articles.yaml")
    raise AssertionError


def abcd_rows(path: Path, mapping: dict):
    for line in path.read_text(encoding="utf-8").splitlines():
        row = json.loads(line)
        text = f"Applies to: {row['flow']} ({row['flow_description']}).\n\n{row['body'].strip()}"
        if row.get("actions"):
            text += "\n\nAgent actions, in order: " + " > ".join(a for a in row["actions"] if a and a != "N/A") + "."
        yield {
            "id": row["article_id"],
            "title": row["title"],
            "text": trim(clean(text)),
            "url": None,
            "source": "abcd",
            "license": SOURCES["abcd"]["license"],
            "section": f"{row['flow']} / {row['subflow']}",
            "service": resolve(mapping, row["article_id"], row["flow"], row["subflow"]),
        }


def arduino_rows(path: Path, mapping: dict):
    for line in path.read_text(encoding="utf-8").splitlines():
        row = json.loads(line)
        yield {
            "id": row["article_id"],
            "title": row["title"].strip(),
            "text": trim(clean(row["body_markdown"])),
            "url": row.get("url") or None,
            "source": "arduino",
            "license": SOURCES["arduino"]["license"],
            "section": f"{row['section']} / {row['subsection']}",
            "service": resolve(mapping, row["article_id"], row["section"], row["subsection"]),
        }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--datasets", type=Path, default=REPO.parent / "shared" / "datasets",
                        help="folder holding the dataset folders (default: ../shared/datasets from the repo root)")
    parser.add_argument("--out", type=Path, default=KB / "articles" / "articles.jsonl")
    args = parser.parse_args()

    mappings = yaml.safe_load((KB / "mappings" / "kb_articles.yaml").read_text(encoding="utf-8"))
    known = service_ids()
    for source, mapping in mappings.items():
        if not isinstance(mapping, dict):
            continue
        for table in ("by_section", "by_subsection", "by_id"):
            for key, label in (mapping.get(table) or {}).items():
                if label not in known:
                    die(f"mappings/kb_articles.yaml {source}.{table}.{key}: {label!r} is not a service label")

    rows = [
        *abcd_rows(args.datasets / SOURCES["abcd"]["file"], mappings["abcd"]),
        *arduino_rows(args.datasets / SOURCES["arduino"]["file"], mappings["arduino"]),
    ]
    ids = [row["id"] for row in rows]
    if len(ids) != len(set(ids)):
        die("duplicate article ids")
    for row in rows:
        if not row["text"] or len(row["text"]) > MAX_CHARS:
            die(f"{row['id']}: empty or over-long text")

    args.out.parent.mkdir(parents=True, exist_ok=True)
    with args.out.open("w", encoding="utf-8", newline="\n") as fh:
        for row in rows:
            fh.write(json.dumps(row, ensure_ascii=False) + "\n")
    print(f"wrote {len(rows)} articles to {args.out}")


if __name__ == "__main__":
    main()
