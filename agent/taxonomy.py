"""Load a taxonomy YAML and derive from it what the LLM is allowed to answer.

The answer model's enums are generated from the taxonomy, so an out-of-taxonomy label fails validation
and never leaves the graph.
"""

from __future__ import annotations

import re
from functools import lru_cache
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationError, create_model

from agent.contracts import AXES, Taxonomy, validation_problems
from agent.revisions import canonical_label
from agent.textfiles import not_utf8


class TaxonomyError(ValueError):
    """A taxonomy file that cannot be used; the message says which file and what to fix."""


def load_taxonomy(path: Path | str) -> Taxonomy:
    path = Path(path)
    if path.is_dir():
        raise TaxonomyError(f"taxonomy file {path} is a directory; give the path of a taxonomy YAML file (or set TRIAGE_TAXONOMY_PATH to one)")
    if not path.is_file():
        raise TaxonomyError(f"taxonomy file {path} does not exist; set TRIAGE_TAXONOMY_PATH to a taxonomy YAML")
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise TaxonomyError(f"cannot read taxonomy file {path}: {exc.strerror or exc}") from exc
    return parse_taxonomy(data, f"taxonomy file {path}")


def parse_taxonomy(data: bytes, what: str) -> Taxonomy:
    """A taxonomy from a YAML file's bytes, or a one-line TaxonomyError that starts with `what` (the file, or an
    upload's name) and says what to fix: the CLI, the service and the review UI's uploads read files the same way."""
    try:
        raw = yaml.load(data.decode("utf-8"), Loader=_UniqueKeyLoader)  # a SafeLoader subclass
    except UnicodeDecodeError as exc:
        raise TaxonomyError(not_utf8(what, exc)) from exc
    except _DuplicateKey as exc:
        raise TaxonomyError(f"{what} {exc}") from exc
    except yaml.YAMLError as exc:
        raise TaxonomyError(f"{what} is not valid YAML: {yaml_problem(exc)}") from exc
    if not isinstance(raw, dict):
        raise TaxonomyError(f"{what} must be a mapping with name, version and axes")
    try:
        taxonomy = Taxonomy.model_validate(raw)
    except ValidationError as exc:
        raise TaxonomyError(f"{what} is invalid: {validation_problems(exc)}") from exc
    problem = ref_problem(taxonomy) or case_twin_problem(taxonomy) or tier_order_problem(taxonomy)
    if problem:
        raise TaxonomyError(f"{what} is invalid: {problem}")
    return taxonomy


def case_twin_problem(taxonomy: Taxonomy) -> str | None:
    """Why two labels of one axis cannot be told apart, or None: ids that differ only in case (`Email` / `email`).
    Intake channels and reviews are matched case-insensitively (a bot's `EMAIL` is `email`), so such a pair made
    each of them ambiguous, refused for every ticket that named either. Checked when a file is read."""
    for axis_name, axis in taxonomy.axes.items():
        seen: dict[str, str] = {}
        for label_id in axis.ids:
            twin = seen.setdefault(label_id.casefold(), label_id)
            if twin != label_id:
                return f"axes.{axis_name} has labels {twin!r} and {label_id!r}, which differ only in case; rename or merge one"
    return None


# what the records keep of a served version (agent/records.py, TaxonomyVersionRow: name 120, version 80 characters)
_REF_LIMITS = {"name": 120, "version": 80}


def ref_problem(taxonomy: Taxonomy) -> str | None:
    """Why `name@version` cannot name this version, or None. Revisions and GET /v1/taxonomy/versions/{name@version}
    name a version by it: an empty part gave `default@`, a '/' a version that URL cannot reach, an '@' a ref that
    splits in the wrong place, and a part longer than its records column failed the start-up on PostgreSQL. Checked
    when a file is read, not on stored content, so a version served before stays readable."""
    migration = taxonomy.migration
    parts = {"name": taxonomy.name, "version": taxonomy.version, **({"migration.from_version": migration.from_version} if migration else {})}
    for field, value in parts.items():
        limit = _REF_LIMITS.get(field.rsplit("_", 1)[-1], 80)
        if not value.strip():
            return f"{field} is empty; give it a value, e.g. {field}: \"2026.12.1\"" if field != "name" else "name is empty; give the taxonomy a name"
        bad = sorted({c for c in value if c in "@/\\" or not c.isprintable()})
        if bad:
            return (f"{field} {value!r} holds {', '.join(map(repr, bad))}, which name@version cannot carry (revisions and "
                    "URLs name a version by it); use letters, digits, '.', '-' or '_'")
        if len(value) > limit:
            return f"{field} has {len(value)} characters; keep it to {limit}"
    return None


def yaml_problem(exc: yaml.YAMLError) -> str:
    """A YAML error on one line with its spot ('line 4, column 1: expected ...'): PyYAML's own text spans several
    lines (a context, a caret under the quoted line), which scatters a one-line CLI error."""
    mark = getattr(exc, "problem_mark", None)
    problem = getattr(exc, "problem", None)
    if mark is None or not problem:
        return " ".join(str(exc).split())
    context = getattr(exc, "context", None)
    return f"line {mark.line + 1}, column {mark.column + 1}: {problem}" + (f" ({context})" if context else "")


class _DuplicateKey(yaml.YAMLError):
    """A key written twice in one mapping: YAML keeps the last silently, so `name:` twice would rename the taxonomy."""


class _UniqueKeyLoader(yaml.SafeLoader):
    """The safe loader, refusing a mapping that repeats a key (merge keys `<<` may still be overridden)."""

    def construct_mapping(self, node: yaml.Node, deep: bool = False) -> dict[Any, Any]:
        first_line: dict[Any, int] = {}
        for key_node, _ in node.value if isinstance(node, yaml.MappingNode) else []:
            if key_node.tag == "tag:yaml.org,2002:merge":
                continue
            key = self.construct_object(key_node, deep=deep)
            line = key_node.start_mark.line + 1
            try:
                seen = first_line.get(key)
            except TypeError:  # an unhashable key: the base loader says what is wrong with it
                continue
            if seen is not None:
                raise _DuplicateKey(f"line {line}: key {key!r} is written twice in one mapping (first on line {seen}); keep one")
            first_line[key] = line
        return super().construct_mapping(node, deep=deep)


_TIER_NUMBER = re.compile(r"^\D*(\d+)$")


def tier_order_problem(taxonomy: Taxonomy) -> str | None:
    """Why the tier list is out of order, or None. A tier's rank is its place in the list: an escalation moves to
    the next one and the agent never lowers a tier (agent/revisions.py), so the list runs from the front line up.
    Where every tier id carries a number (L1, L2, L3) the numbers must ascend; other ids rank as listed."""
    ids = taxonomy.axes["tier"].ids
    numbers = [_TIER_NUMBER.match(label_id) for label_id in ids]
    if not all(numbers):
        return None
    ranks = [int(match.group(1)) for match in numbers if match]
    if all(low < high for low, high in zip(ranks, ranks[1:], strict=False)):
        return None
    ordered = [label_id for _, label_id in sorted(zip(ranks, ids, strict=True))]
    return f"axes.tier lists {ids}; tiers rank in list order (an escalation moves to the next one), so list them from the front line up: {ordered}"


def as_probability(value: object) -> object:
    """Small models write 85 or 10.5 where 0.85 is meant (grammars cannot bound numbers): read values up to 100
    as percentages and clamp into [0, 1]; the label itself must still be a taxonomy id. true and false are no
    confidence (pydantic would read true as 1.0, certainty from a broken answer)."""
    if isinstance(value, bool):
        raise ValueError("confidence must be a number from 0 to 1, not true or false")
    if isinstance(value, int | float):
        number = float(value) / 100.0 if 1.0 < float(value) <= 100.0 else float(value)
        return min(max(number, 0.0), 1.0)
    return value


@lru_cache(maxsize=32)
def _cached_answer_model(taxonomy_json: str, with_channel: bool) -> type[BaseModel]:
    taxonomy = Taxonomy.model_validate_json(taxonomy_json)
    fields: dict[str, Any] = {}
    for axis in AXES:
        if axis == "channel" and not with_channel:
            continue
        ids = tuple(taxonomy.axes[axis].ids)
        # an id in another case or with spaces around it (`Billing_Payments `, `l2`) is that id, as for every label an
        # integration or a lead writes (revisions.canonical_label); rejecting it spent the re-asks and lost the answer
        as_id = BeforeValidator(lambda value, axis=axis: canonical_label(taxonomy, axis, value) if isinstance(value, str) else value)
        fields[axis] = (Annotated[Literal[ids], as_id], Field(description=f"one of {list(ids)}"))  # type: ignore[valid-type]
    fields["confidence"] = (
        Annotated[float, BeforeValidator(as_probability)],
        Field(ge=0.0, le=1.0, description="how sure you are, 0 to 1"),
    )
    # no maxLength: llama.cpp turns it into a grammar too large to compile; long rationales are cut in decide
    fields["rationale"] = (str, Field(min_length=1, description="why; cite evidence ids"))
    return create_model(
        "LLMAnswer", __config__=ConfigDict(extra="ignore"), **fields
    )


def answer_model(taxonomy: Taxonomy, *, with_channel: bool) -> type[BaseModel]:
    """The pydantic model an LLM answer must validate against (channel only when intake lacks it)."""
    return _cached_answer_model(taxonomy.model_dump_json(), with_channel)


def label_glossary(taxonomy: Taxonomy, axis: str, *, max_chars: int | None = None) -> str:
    """Taxonomy descriptions as prompt text: one `- id: description` line per label.

    `max_chars` keeps the first sentence(s) of each description up to that length: small local models
    read short prompts faster and no worse; capable endpoints get the full text.
    """
    lines = []
    for label in taxonomy.axes[axis].labels:
        text = " ".join(label.description.split())
        if max_chars is not None and len(text) > max_chars:
            cut = text[:max_chars]
            text = cut[: cut.rfind(". ") + 1] if ". " in cut else cut.rsplit(" ", 1)[0] + "..."
        lines.append(f"- {label.id}: {text}")
    return "\n".join(lines)
