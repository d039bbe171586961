"""Pydantic contracts shared by the graph, the API, the CLI, the UI and the evals.

One module on purpose: the classification JSON is a public contract (API, CLI, evals all emit it), so
it is defined once, here, and everything else imports it.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from datetime import datetime
from enum import Enum
from typing import Annotated, Generic, Literal, TypeVar

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

AXES: tuple[str, ...] = ("service", "channel", "tier")
AxisName = Literal["service", "channel", "tier"]
LabelSource = Literal["llm", "proposal", "intake", "human", "fallback"]


class Decision(str, Enum):  # noqa: UP042 (StrEnum would change str() and f-strings of stored values)
    AUTO_APPLY = "auto_apply"
    SUGGEST = "suggest"
    NEEDS_REVIEW = "needs_review"


# ---------------------------------------------------------------- taxonomy


class Routing(BaseModel):
    model_config = ConfigDict(extra="forbid")
    team: str
    queue: str | None = None


class LabelDef(BaseModel):
    """One label of one axis: the id is what leaves the graph, the description is what prompts quote."""

    model_config = ConfigDict(extra="forbid")
    id: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_\-]*$")
    name: str
    description: str
    routing: Routing | None = None
    examples: list[str] = Field(default_factory=list)


class AxisDef(BaseModel):
    model_config = ConfigDict(extra="forbid")
    description: str = ""
    fallback: str
    labels: list[LabelDef] = Field(min_length=1)

    @field_validator("labels")
    @classmethod
    def _unique_ids(cls, labels: list[LabelDef]) -> list[LabelDef]:
        seen: set[str] = set()
        for label in labels:
            if label.id in seen:
                raise ValueError(f"duplicate label id {label.id!r}")
            seen.add(label.id)
        return labels

    @property
    def ids(self) -> list[str]:
        return [label.id for label in self.labels]

    def get(self, label_id: str) -> LabelDef | None:
        return next((label for label in self.labels if label.id == label_id), None)


MigrationOp = Literal["rename", "merge", "split", "retire"]


class SplitRule(BaseModel):
    """Sends a ticket of a split (or target-less retired) label to `to` without asking the agent, when every
    condition given holds: any of `keywords` (whole words, any case) or `pattern` (a regular expression, any
    case) in the ticket's text, and its labels under the previous version among `when` (axis -> ids)."""

    model_config = ConfigDict(extra="forbid")
    to: str
    keywords: list[str] = Field(default_factory=list)
    pattern: str | None = None
    when: dict[AxisName, list[str]] = Field(default_factory=dict)

    @field_validator("keywords", mode="before")
    @classmethod
    def _one_or_many(cls, value: object) -> object:
        return [value] if isinstance(value, str) else value

    @model_validator(mode="after")
    def _has_a_condition(self) -> SplitRule:
        if not (self.keywords or self.pattern or self.when):
            raise ValueError(f"the rule to {self.to!r} has no condition: give keywords, pattern or when (use the step's `otherwise` for the rest)")
        if any(not k.strip() for k in self.keywords):
            raise ValueError(f"the rule to {self.to!r} has an empty keyword")
        if self.pattern is not None:
            try:
                re.compile(self.pattern)
            except re.error as exc:
                raise ValueError(f"the rule to {self.to!r} has a pattern that is not a regular expression: {exc}") from exc
        return self

    def matches(self, text: str, labels: dict[str, str]) -> bool:
        if any(labels.get(axis) not in ids for axis, ids in self.when.items()):
            return False
        if self.keywords and not re.search(r"\b(?:" + "|".join(re.escape(k.strip()) for k in self.keywords) + r")\b", text, re.IGNORECASE):
            return False
        return self.pattern is None or re.search(self.pattern, text, re.IGNORECASE) is not None

    def describe(self) -> str:
        """The conditions in words, e.g. `keywords laptop, printer and tier in L3` (notes, CLI and UI alike)."""
        parts = [f"keywords {', '.join(self.keywords)}"] if self.keywords else []
        parts += [f"pattern /{self.pattern}/"] if self.pattern else []
        parts += [f"{axis} in {', '.join(ids)}" for axis, ids in self.when.items()]
        return " and ".join(parts)


def describe_rules(rules: Sequence[SplitRule], otherwise: str | None) -> str:
    """A split's rules in one line: where each sends tickets and when, then where the rest go; '' when the step has
    neither rules nor `otherwise`."""
    if not rules and not otherwise:
        return ""
    return "; ".join([*(f"{rule.to} if {rule.describe()}" for rule in rules), otherwise_phrase(otherwise)])


def otherwise_phrase(otherwise: str | None) -> str:
    """Where the tickets that no rule matches go: a fixed label, or back to the agent."""
    return f"otherwise {otherwise}" if otherwise else "otherwise the agent chooses"


class MigrationStep(BaseModel):
    """One change of one axis from the previous version: where the tickets of the old label(s) go.

    rename: one old id -> one new id; merge: several old ids -> one new id; split: one old id -> several new ids,
    the agent re-asked to choose among them; retire: the old id goes, its tickets to `to` (one id) or, with no
    `to`, re-classified on the whole axis. A split or a target-less retire may carry `rules` (the first that
    matches decides, no agent needed) and `otherwise` (where the tickets no rule matches go, instead of a re-ask)."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)
    op: MigrationOp
    axis: AxisName
    from_: list[str] = Field(alias="from", min_length=1)
    to: list[str] = Field(default_factory=list)
    rules: list[SplitRule] = Field(default_factory=list)
    otherwise: str | None = None
    note: str = ""

    @field_validator("from_", "to", mode="before")
    @classmethod
    def _one_or_many(cls, value: object) -> object:
        return [value] if isinstance(value, str) else value

    @model_validator(mode="after")
    def _shape(self) -> MigrationStep:
        many_from, n_to = len(self.from_) > 1, len(self.to)
        wrong = {
            "rename": many_from or n_to != 1,
            "merge": n_to != 1 or not many_from,
            "split": many_from or n_to < 2,
            "retire": many_from or n_to > 1,
        }[self.op]
        if wrong:
            shapes = {"rename": "from: OLD, to: NEW", "merge": "from: [OLD, OLD, ...], to: NEW",
                      "split": "from: OLD, to: [NEW, NEW, ...]", "retire": "from: OLD, and to: NEW or no `to`"}
            raise ValueError(f"{self.op} on axis {self.axis} needs {shapes[self.op]}; got from {self.from_}, to {self.to}")
        if (self.rules or self.otherwise) and not (self.op == "split" or (self.op == "retire" and not self.to)):
            raise ValueError(f"{self.op} of {self.from_} has one target already; `rules` and `otherwise` belong to a split or a retire without `to`")
        if self.op == "split":
            outside = [t for t in [*(r.to for r in self.rules), self.otherwise] if t is not None and t not in self.to]
            if outside:
                raise ValueError(f"split of {self.from_[0]!r}: rules or otherwise send tickets to {outside}, which are not among its targets {self.to}")
        return self

    def targets(self) -> list[str]:
        """The new ids this step's rules and `otherwise` name (for a split, `to` already lists them)."""
        return [*(r.to for r in self.rules), *([self.otherwise] if self.otherwise else [])]


def _quoted_version(value: object) -> object:
    """YAML reads `version: 2.10` as the number 2.1, so a number is refused with the fix rather than guessed."""
    if isinstance(value, int | float) and not isinstance(value, bool):
        raise ValueError(f'write the version as a quoted string, e.g. version: "{value}" (YAML reads 2.10 as the number 2.1)')
    return value


class TaxonomyMigration(BaseModel):
    """How tickets labelled under `from_version` of the same taxonomy move to this version."""

    model_config = ConfigDict(extra="forbid")
    from_version: str
    steps: list[MigrationStep] = Field(default_factory=list)

    @field_validator("from_version", mode="before")
    @classmethod
    def _from_version_quoted(cls, value: object) -> object:
        return _quoted_version(value)


class Taxonomy(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str
    version: str
    description: str = ""
    axes: dict[AxisName, AxisDef]
    migration: TaxonomyMigration | None = None

    @field_validator("version", mode="before")
    @classmethod
    def _version_quoted(cls, value: object) -> object:
        return _quoted_version(value)

    @field_validator("axes")
    @classmethod
    def _axes_complete(cls, axes: dict[str, AxisDef]) -> dict[str, AxisDef]:
        missing = [axis for axis in AXES if axis not in axes]
        if missing:
            raise ValueError(f"taxonomy lacks axes {missing}; every taxonomy defines service, channel and tier")
        for name, axis in axes.items():
            if axis.fallback not in axis.ids:
                raise ValueError(f"axis {name!r}: fallback {axis.fallback!r} is not one of its labels {axis.ids}")
        return axes

    @model_validator(mode="after")
    def _migration_targets_exist(self) -> Taxonomy:
        if self.migration is None:
            return self
        if self.migration.from_version == self.version:
            raise ValueError(f"migration.from_version {self.version!r} is this version; name the previous one")
        moved: set[tuple[str, str]] = set()
        for i, step in enumerate(self.migration.steps):
            ids = self.axes[step.axis].ids
            unknown = list(dict.fromkeys(t for t in [*step.to, *step.targets()] if t not in ids))
            if unknown:
                raise ValueError(f"migration step {i} ({step.op}): {unknown} are not labels of axis {step.axis} in this version")
            kept = [f for f in step.from_ if f in ids and not (step.op == "split" and f in step.to)]
            if kept:
                raise ValueError(f"migration step {i} ({step.op}): {kept} are still labels of axis {step.axis}; a step moves labels that are gone")
            twice = [f for f in step.from_ if (step.axis, f) in moved]
            if twice:
                raise ValueError(f"migration step {i} ({step.op}): {twice} on axis {step.axis} already moved by an earlier step")
            moved.update((step.axis, f) for f in step.from_)
        return self

    @property
    def ref(self) -> str:
        return f"{self.name}@{self.version}"


# ---------------------------------------------------------------- tickets

# Characters that print nothing, so text made only of them (and whitespace) is no text: ASCII controls (tab,
# newline and carriage return are whitespace), zero-width characters (U+200B-U+200D, U+2060, U+FEFF) and bidi
# controls (U+200E/F, U+202A-U+202E, U+2066-U+2069), which can also hide or reorder what a reader sees.
CONTROL_CHARS = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")
# zero-width, bidi and other default-ignorable characters: soft hyphen, grapheme joiner, Mongolian selectors,
# invisible operators, variation selectors, and the tag characters (U+E0000...), which spell ASCII that a reader
# never sees but an LLM's tokenizer reads ("ASCII smuggling": instructions hidden from the lead who reviews)
INVISIBLE_CHARS = re.compile(
    "[\u00ad\u034f\u061c\u180b-\u180f\u200b-\u200f\u202a-\u202e\u2060-\u206f\ufe00-\ufe0f\ufeff\U000e0000-\U000e0fff]"
)


def drop_nul(text: str) -> str:
    """Text without NUL characters: they print nothing, and PostgreSQL's text and JSONB cannot hold them, so a
    ticket from a C-string integration would otherwise be stored on SQLite and refused on PostgreSQL."""
    return text.replace("\x00", "")


# free text as callers send it (tickets, messages, notes, comments, drafts): NUL characters dropped on the way in
FreeText = Annotated[str, AfterValidator(drop_nul)]


def has_text(text: str) -> bool:
    """Whether `text` shows anything: the "no text" checks run on raw input, before normalisation removes these."""
    return bool(INVISIBLE_CHARS.sub("", CONTROL_CHARS.sub("", text)).strip())


class Message(BaseModel):
    model_config = ConfigDict(extra="forbid")
    author: Literal["customer", "agent", "system"] = "customer"
    text: FreeText = Field(min_length=1, max_length=100_000)


class TicketIn(BaseModel):
    """A ticket as a bot, the CLI or an eval row hands it in. Channel is intake metadata, not text."""

    model_config = ConfigDict(extra="forbid")
    subject: FreeText = Field(default="", max_length=2_000)
    body: FreeText = Field(default="", max_length=100_000)
    channel: str | None = Field(
        default=None,
        description="Where the ticket came from, a channel id of the taxonomy (any case); taken as is when given, "
        "inferred when missing or empty.",
    )
    messages: list[Message] = Field(default_factory=list, max_length=200)
    ticket_id: str | None = None

    @field_validator("channel", mode="before")
    @classmethod
    def _blank_channel_is_unknown(cls, value: object) -> object:
        """Integrations send "" (or spaces) for "unknown": that is a missing channel, inferred, not a bad one."""
        if isinstance(value, str):
            return value.strip() or None
        return value

    def full_text(self) -> str:
        """Subject, body and messages, blank-line separated; a part that shows nothing is left out, so a ticket
        of only zero-width or control characters has no text."""
        parts = [self.subject.strip(), self.body.strip(), *(m.text.strip() for m in self.messages)]
        return "\n\n".join(p for p in parts if has_text(p))


# ---------------------------------------------------------------- classification (fixed contract)


class LabelAlternative(BaseModel):
    label: str
    confidence: float


class AxisLabel(BaseModel):
    label: str
    confidence: float = Field(ge=0.0, le=1.0)
    source: LabelSource
    alternatives: list[LabelAlternative] = Field(default_factory=list)


class EvidenceTicket(BaseModel):
    id: str
    score: float
    labels: dict[str, str]
    text: str | None = None
    answer: str | None = None
    verified: bool = False


class EvidenceArticle(BaseModel):
    id: str
    title: str
    score: float
    url: str | None = None
    text: str | None = None


class Evidence(BaseModel):
    tickets: list[EvidenceTicket] = Field(default_factory=list)
    articles: list[EvidenceArticle] = Field(default_factory=list)


class Route(BaseModel):
    team: str
    queue: str | None = None


class Draft(BaseModel):
    text: str
    citations: list[str] = Field(default_factory=list)


class Usage(BaseModel):
    prompt_tokens: int = 0
    completion_tokens: int = 0

    def __add__(self, other: Usage) -> Usage:
        return Usage(
            prompt_tokens=self.prompt_tokens + other.prompt_tokens,
            completion_tokens=self.completion_tokens + other.completion_tokens,
        )


class Classification(BaseModel):
    ticket_id: str | None = None
    labels: dict[AxisName, AxisLabel]
    decision: Decision
    rationale: str
    evidence: Evidence
    route: Route
    draft: Draft | None = None
    out_of_scope: bool = False
    taxonomy_version: str
    model: str
    latency_ms: float
    usage: Usage = Field(default_factory=Usage)
    warnings: list[str] = Field(default_factory=list)


# ---------------------------------------------------------------- stored knowledge


class LabelledTicket(BaseModel):
    """A past ticket with known labels: seed data, eval train rows, or a human-reviewed ticket."""

    model_config = ConfigDict(extra="ignore")
    id: str
    subject: str = ""
    body: str
    channel: str | None = None
    labels: dict[str, str]
    answer: str | None = None
    source: str = "seed"
    language: str | None = None
    verified: bool = False

    def text(self) -> str:
        return "\n\n".join(p for p in (self.subject.strip(), self.body.strip()) if p)


# what a draft's and the UI's citation parser reads as an id inside [...] (agent/nodes/draft.py, ui/format.py)
ARTICLE_ID = re.compile(r"[A-Za-z0-9_\-:.]+")


class Article(BaseModel):
    """A KB article as an articles file gives it. The id is what drafts cite in square brackets, so it must be one
    the citation parser reads back (and Chroma refuses an empty one, after the seed was already stored); an article
    without a title or text would be retrieved and drafted from as a blank."""

    model_config = ConfigDict(extra="ignore")
    id: str
    title: str
    text: str
    url: str | None = None
    source: str | None = None
    license: str | None = None
    section: str | None = None
    service: str | None = None

    @field_validator("id")
    @classmethod
    def _citable_id(cls, value: str) -> str:
        if not ARTICLE_ID.fullmatch(value):
            raise ValueError(
                f"{value[:80]!r} is not an id a draft can cite; use letters, digits and - _ : . only (e.g. a slug or "
                "the number from the article's URL)"
            )
        return value

    @field_validator("title", "text")
    @classmethod
    def _shows_something(cls, value: str, info: ValidationInfo) -> str:
        if not has_text(value):
            raise ValueError(f"the {info.field_name} is empty; give each article a {info.field_name}")
        return value


# ---------------------------------------------------------------- taxonomy migration


class MigrationChange(BaseModel):
    """One ticket whose current labels a migration changes (or would, in a dry run)."""

    ticket_id: str
    before: dict[str, str]
    after: dict[str, str]
    reasked: list[str] = Field(default_factory=list, description="axes the agent chose anew (split, retire without target)")
    ruled: list[str] = Field(default_factory=list, description="axes a split's rule (or its `otherwise`) decided")


class MigrationReport(BaseModel):
    """What applying a taxonomy version does to the stored history: the dry run's answer, and the commit's."""

    previous: str
    target: str
    committed: bool
    tickets: int = Field(description="tickets with current labels")
    already_current: int = Field(description="tickets already labelled under the target version")
    changed: int
    unchanged: int
    reasked: int = Field(description="changed tickets on which the agent had to choose among new labels")
    ruled: int = Field(default=0, description="changed tickets whose new label a migration rule (or `otherwise`) chose")
    transitions: dict[str, dict[str, int]] = Field(description="axis -> 'old -> new' -> tickets")
    reviewed_tickets: int = Field(description="reviewed tickets re-classified under the target version")
    reviewed_accuracy: dict[str, float] = Field(
        default_factory=dict, description="per axis: agent's new label = the lead's label moved to the target version"
    )
    revisions_written: int = 0
    store_relabelled: int = 0
    examples: list[MigrationChange] = Field(default_factory=list, description="the first changes, for a look")

# ---------------------------------------------------------------- the ticket lifecycle: what API callers send and get
# (agent/lifecycle.py implements them; the API, the CLI, the UI and the exports read and write these shapes)

Reason = Literal["new_ticket", "new_message", "escalation", "human_review", "taxonomy_migration", "reclassify"]
T = TypeVar("T")


class EscalationIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    tier: str | None = Field(default=None, description="Target tier; default: one above the current tier.")
    note: FreeText | None = Field(default=None, max_length=4000, description="Why; kept with the revision.")


DRAFT_MAX_CHARS = 20_000  # a reply a lead sends back with a review; the agent's own drafts stay under it too


class DraftIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    text: FreeText = Field(min_length=1, max_length=DRAFT_MAX_CHARS)
    citations: list[FreeText] = Field(default_factory=list, max_length=50)


class ReviewIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    action: Literal["accept", "edit", "reject"]
    labels: dict[AxisName, str] | None = Field(default=None, description="edit only: the axes to set.")
    comment: FreeText | None = Field(default=None, max_length=4000)
    revision: int | None = Field(
        default=None,
        description="The revision seq you reviewed; if the ticket moved on since, the review is refused (409); "
        "a seq the ticket never had is refused with 422.",
    )
    draft: DraftIn | None = Field(
        default=None, description="accept/edit: the answer as the lead sent it; kept with the reviewed revision."
    )

    @model_validator(mode="after")
    def _labels_match_action(self) -> ReviewIn:
        if self.action == "edit" and not self.labels:
            raise ValueError("an edit needs labels, e.g. {\"service\": \"billing_payments\"}")
        if self.action != "edit" and self.labels:
            raise ValueError(f"{self.action} takes no labels; use action \"edit\" to change labels")
        if self.action == "reject" and self.draft is not None:
            raise ValueError("a reject takes no draft; send the answer with an accept or an edit")
        return self




class MigrationIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    commit: bool = Field(default=False, description="Write the revisions; false (default) is a dry run that writes nothing.")
    previous: str | None = Field(
        default=None, description="The served version to migrate from (`name@version`); default: the one `migration.from_version` names."
    )
    reviewed_sample: int = Field(default=200, ge=0, le=5000, description="Reviewed tickets re-classified to score the agent.")


class MessageView(BaseModel):
    seq: int
    author: str
    text: str
    created_at: datetime


class ReviewView(BaseModel):
    action: str
    reviewer: str
    comment: str | None
    labels: dict[str, str] | None
    revision: int


class RevisionView(BaseModel):
    ticket_id: str
    seq: int
    reason: Reason
    actor: str
    started_at: datetime
    created_at: datetime
    supersedes: int | None
    changed_axes: list[str]
    labels: dict[str, str] | None
    classification: Classification | None
    suggestion: dict[str, AxisLabel] | None = Field(description="The agent's labels where a human's or the tier floor won.")
    rejects: int | None = None
    rejected_by: int | None = None
    note: str | None = None
    review: ReviewView | None = None
    requested_by: str | None = Field(
        default=None,
        description="Who asked for it: `user:<key name>` (the key that created, messaged, escalated, re-classified or "
        "reviewed), or `system:taxonomy-migration`; null for an agent revision written before this was recorded.",
    )


class TicketSummary(BaseModel):
    id: str
    external_id: str | None
    subject: str
    preview: str = Field(default="", description="The body's first 120 characters, whitespace collapsed: chat tickets have no subject.")
    channel: str | None
    created_at: datetime
    updated_at: datetime
    labels: dict[str, str] | None
    decision: str | None
    confidence: float | None
    current_seq: int | None
    revisions: int
    in_queue: bool


class TicketView(TicketSummary):
    body: str
    created_by: str
    messages: list[MessageView]
    current: RevisionView | None


class QueueItem(TicketSummary):
    current: RevisionView | None


class ReviewedTicket(BaseModel):
    """A ticket with the labels a lead confirmed or set, and the thread as the lead saw it: a labelled row for
    `triage eval` (`--text subject,body --label service=service ...`)."""

    id: str
    subject: str
    body: str = Field(description="The body and the thread's messages up to the review, blank-line separated.")
    intake_channel: str | None
    labels: dict[str, str]
    action: str = Field(description="accept or edit")
    reviewer: str
    reviewed_at: datetime


class Page(BaseModel, Generic[T]):
    items: list[T]
    next_cursor: str | None = Field(description="Pass as `cursor` for the next page; null on the last page.")


def validation_problems(exc: ValidationError, *, whole: str | None = None) -> str:
    """pydantic's errors on one line, `field.path: message; ...`, for a one-line CLI or file error: its own text
    spans lines per error and prefixes a validator's message with "Value error, ". A model-wide check has no field;
    `whole` names it then (e.g. "the row")."""
    parts = []
    for e in exc.errors():
        where = ".".join(str(p) for p in e["loc"]) or whole
        message = e["msg"].removeprefix("Value error, ")
        parts.append(f"{where}: {message}" if where else message)
    return "; ".join(parts)
