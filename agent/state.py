"""The graph's state (what flows between nodes) and context (what nodes are given: clients, store, clock)."""

from __future__ import annotations

import operator
import time
from collections.abc import Callable
from dataclasses import dataclass, field, fields
from typing import Annotated, Any, Self, TypedDict

import numpy as np

from agent.contracts import (
    AxisLabel,
    Decision,
    Draft,
    EvidenceArticle,
    EvidenceTicket,
    Taxonomy,
    TicketIn,
    Usage,
)
from agent.embeddings import Embedder
from agent.llm import LLMClient
from agent.proposal import Distribution, ProposalHead
from agent.settings import Settings
from agent.store import VectorStore


def _add_usage(left: Usage | None, right: Usage | None) -> Usage:
    return (left or Usage()) + (right or Usage())


class TriageState(TypedDict, total=False):
    ticket: TicketIn
    text: str
    language: str
    vector: np.ndarray
    neighbours: list[EvidenceTicket]
    articles: list[EvidenceArticle]
    proposal: dict[str, Distribution]
    llm_reply: str
    llm_answer: dict[str, Any] | None
    llm_failed: bool
    attempts: int
    validation_error: str | None
    labels: dict[str, AxisLabel]
    out_of_scope: bool
    decision: Decision
    rationale: str
    draft: Draft | None
    model: str
    warnings: Annotated[list[str], operator.add]
    usage: Annotated[Usage, _add_usage]


@dataclass
class Calibration:
    """Per-axis, per-class auto-apply thresholds fitted by `triage eval` (cross-validated on train data)."""

    thresholds: dict[str, dict[str, float]] = field(default_factory=dict)
    default: float = 0.9
    out_of_scope_threshold: float | None = None
    # what the threshold is compared with: "similarity" (nearest stored ticket) or "similarity+confidence"
    out_of_scope_score: str = "similarity"
    llm_vote_weight: float | None = None

    @classmethod
    def from_json(cls, raw: dict[str, Any]) -> Self:
        """The calibration file's keys this class declares (defaults for missing ones; others ignored)."""
        return cls(**{f.name: raw[f.name] for f in fields(cls) if f.name in raw})

    def threshold(self, axis: str, label: str) -> float:
        per_axis = self.thresholds.get(axis, {})
        return per_axis.get(label, per_axis.get("*", self.default))


@dataclass
class TriageContext:
    settings: Settings
    taxonomy: Taxonomy
    embedder: Embedder
    store: VectorStore
    head: ProposalHead | None
    llm: LLMClient | None
    calibration: Calibration = field(default_factory=Calibration)
    clock: Callable[[], float] = time.perf_counter
