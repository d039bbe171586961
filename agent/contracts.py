"""Pydantic contracts shared by the graph, the API, the CLI, the UI and the evals.

One module on purpose: the classification JSON is a public contract (API, CLI, evals all emit it), so
it is defined once, here, and everything else imports it.
"""

from __future__ import annotations

from enum import Enum
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

AXES: tuple[str, ...] = ("service", "channel", "tier")
AxisName = Literal["service", "channel", "tier"]
LabelSource = Literal["llm", "proposal", "intake", "human", "fallback"]


class Decision(str, Enum):
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


class Taxonomy(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str
    version: str
    description: str = ""
    axes: dict[AxisName, AxisDef]

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

    @property
    def ref(self) -> str:
        return f"{self.name}@{self.version}"


# ---------------------------------------------------------------- tickets


class Message(BaseModel):
    model_config = ConfigDict(extra="forbid")
    author: Literal["customer", "agent", "system"] = "customer"
    text: str = Field(min_length=1, max_length=100_000)


class TicketIn(BaseModel):
    """A ticket as a bot, the CLI or an eval row hands it in. Channel is intake metadata, not text."""

    model_config = ConfigDict(extra="forbid")
    subject: str = Field(default="", max_length=2_000)
    body: str = Field(default="", max_length=100_000)
    channel: str | None = Field(default=None, description="Where the ticket came from; taken as is when given.")
    messages: list[Message] = Field(default_factory=list, max_length=200)
    ticket_id: str | None = None

    def full_text(self) -> str:
        parts = [self.subject.strip(), self.body.strip(), *(m.text.strip() for m in self.messages)]
        return "\n\n".join(p for p in parts if p)


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


class Article(BaseModel):
    model_config = ConfigDict(extra="ignore")
    id: str
    title: str
    text: str
    url: str | None = None
    source: str | None = None
    license: str | None = None
    section: str | None = None
    service: str | None = None
