"""What changed between two taxonomy versions, label by label (no Streamlit)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from agent.contracts import SplitRule, describe_rules
from agent.taxonomy import TaxonomyError, parse_taxonomy

AXES = ("service", "channel", "tier")
FIELDS = ("name", "description", "routing", "examples")


def read_candidate(name: str, data: bytes) -> tuple[dict[str, Any] | None, str | None]:
    """(content, None) of a YAML file to compare with, or (None, what is wrong and where) on one line, as
    `triage taxonomy validate` reads it: pydantic's own first line ("1 validation error for Taxonomy") named no
    field, a key written twice or tiers out of order passed, and a byte that is not UTF-8 was a traceback (a file
    next to the app) or silently replaced (an upload)."""
    try:
        return parse_taxonomy(data, name).model_dump(mode="json"), None
    except TaxonomyError as exc:
        return None, str(exc)


def _labels(taxonomy: Mapping[str, Any], axis: str) -> dict[str, dict[str, Any]]:
    return {label["id"]: label for label in taxonomy.get("axes", {}).get(axis, {}).get("labels", [])}


def _norm(value: Any) -> Any:
    if isinstance(value, str):
        return " ".join(value.split())
    if isinstance(value, dict):
        return {k: v for k, v in value.items() if v is not None}
    return value


def diff(old: Mapping[str, Any], new: Mapping[str, Any]) -> list[dict[str, Any]]:
    """One row per change: axis, label, kind (added / removed / changed / fallback), field, before, after."""
    rows: list[dict[str, Any]] = []
    for axis in AXES:
        before, after = _labels(old, axis), _labels(new, axis)
        for label_id in after.keys() - before.keys():
            rows.append({"axis": axis, "label": label_id, "change": "added", "field": "", "before": "", "after": after[label_id].get("name", "")})
        for label_id in before.keys() - after.keys():
            rows.append({"axis": axis, "label": label_id, "change": "removed", "field": "", "before": before[label_id].get("name", ""), "after": ""})
        for label_id in sorted(before.keys() & after.keys()):
            for field in FIELDS:
                a, b = _norm(before[label_id].get(field)), _norm(after[label_id].get(field))
                if a != b and (a or b):
                    rows.append({"axis": axis, "label": label_id, "change": "changed", "field": field, "before": _text(a), "after": _text(b)})
        fa = old.get("axes", {}).get(axis, {}).get("fallback")
        fb = new.get("axes", {}).get(axis, {}).get("fallback")
        if fa != fb:
            rows.append({"axis": axis, "label": "", "change": "fallback", "field": "fallback", "before": fa or "", "after": fb or ""})
    order = {"removed": 0, "added": 1, "changed": 2, "fallback": 3}
    return sorted(rows, key=lambda r: (AXES.index(r["axis"]), order[r["change"]], r["label"], r["field"]))


def _text(value: Any) -> str:
    if isinstance(value, dict):
        return " / ".join(str(v) for v in value.values())
    if isinstance(value, list):
        return " | ".join(str(v) for v in value)
    return "" if value is None else str(value)


def migration_steps(tax: dict[str, Any]) -> list[dict[str, Any]]:
    """The `migration:` steps of a taxonomy as table rows (none when it has no migration)."""
    migration = tax.get("migration") or {}
    return [
        {"op": step["op"], "axis": step["axis"], "from": ", ".join(step.get("from") or step.get("from_") or []),
         "to": ", ".join(step.get("to") or []) or "(re-classified)", "rules": _rules(step), "note": step.get("note") or ""}
        for step in migration.get("steps") or []
    ]


def _rules(step: dict[str, Any]) -> str:
    """A split's rules in one line: where each sends tickets and when, then `otherwise` (else the agent chooses)."""
    return describe_rules([SplitRule.model_validate(rule) for rule in step.get("rules") or []], step.get("otherwise"))


def migration_transitions(report: dict[str, Any]) -> list[dict[str, Any]]:
    """A `MigrationReport`'s moves as rows, most tickets first."""
    rows = [
        {"axis": axis, "from": move.split(" -> ")[0], "to": move.split(" -> ")[-1], "tickets": n}
        for axis, moves in (report.get("transitions") or {}).items()
        for move, n in moves.items()
    ]
    return sorted(rows, key=lambda r: (-r["tickets"], r["axis"], r["from"]))


def is_next_version(candidate: dict[str, Any], in_force: dict[str, Any]) -> bool:
    """Whether `candidate` is written as the next version of the taxonomy in force (its `migration:` starts from it).
    Diffed from it to the one in force, a label the new version adds read as "removed"."""
    migration = candidate.get("migration") or {}
    return (
        isinstance(migration, dict) and candidate.get("name") == in_force.get("name")
        and str(migration.get("from_version")) == str(in_force.get("version"))
    )
