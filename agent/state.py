"""The graph's state (what flows between nodes) and context (what nodes are given: clients, store, clock)."""

from __future__ import annotations

import operator
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, fields
from typing import Annotated, Any, Self, TypedDict

import numpy as np

from agent.confidence import ConfidenceModel
from agent.contracts import (
    AXES,
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
from agent.out_of_scope import InScopeModel, in_scope_features
from agent.proposal import IN_SCOPE_SCORES, Distribution, ProposalHead, in_scope_score
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


def _is_vote_weight(value: object) -> bool:
    """None, a number in [0, 1], or {axis: number in [0, 1]} naming known axes."""
    if value is None:
        return True
    if isinstance(value, dict):
        return all(axis in AXES and _is_threshold(w) and w <= 1 for axis, w in value.items())
    return _is_threshold(value) and value <= 1  # type: ignore[operator]


def _is_threshold(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and value >= 0


@dataclass
class Calibration:
    """Per-axis, per-class auto-apply thresholds fitted by `triage eval` (cross-validated on train data)."""

    thresholds: dict[str, dict[str, float]] = field(default_factory=dict)
    default: float = 0.9
    out_of_scope_threshold: float | None = None
    # what the threshold is compared with: "similarity" (nearest stored ticket), "similarity+confidence", or
    # "learned" (P(in scope) from `out_of_scope_model`, agent/out_of_scope.py)
    out_of_scope_score: str = "similarity"
    out_of_scope_model: dict[str, Any] | None = None
    # one number for every axis, {axis: weight}, or None (the setting's): agent.settings.vote_weight_for
    llm_vote_weight: float | dict[str, float] | None = None
    # axis -> ConfidenceModel JSON: P(top label is right) from the proposal and the neighbours (agent/confidence.py)
    confidence_models: dict[str, dict[str, Any]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        """Refuse a file `decide` could not use, when it is loaded rather than at the first ticket."""
        problems = []
        self._models: dict[str, ConfidenceModel] = {}
        if not isinstance(self.confidence_models, dict):
            problems.append("confidence_models must map axis -> model")
        else:
            for axis, raw in self.confidence_models.items():
                try:
                    self._models[axis] = ConfidenceModel.from_json(raw)
                except ValueError as exc:
                    problems.append(f"confidence_models.{axis}: {exc}")
        if self.out_of_scope_score not in IN_SCOPE_SCORES:
            problems.append(f"out_of_scope_score {self.out_of_scope_score!r} is not one of {list(IN_SCOPE_SCORES)}")
        self._in_scope_model: InScopeModel | None = None
        if self.out_of_scope_model is not None:
            try:
                self._in_scope_model = InScopeModel.from_json(self.out_of_scope_model)
            except ValueError as exc:
                problems.append(f"out_of_scope_model: {exc}")
        elif self.out_of_scope_score == "learned":
            problems.append("out_of_scope_score 'learned' needs an out_of_scope_model: re-fit it with `triage eval --oos-label`")
        if not _is_threshold(self.default):
            problems.append(f"default must be a number >= 0 (above 1 = never auto-apply), got {self.default!r}")
        if not _is_vote_weight(self.llm_vote_weight):
            problems.append(f"llm_vote_weight must be a number in [0, 1], {{axis: number}} for axes {list(AXES)}, or null; got {self.llm_vote_weight!r}")
        if self.out_of_scope_threshold is not None and not isinstance(self.out_of_scope_threshold, int | float):
            problems.append(f"out_of_scope_threshold must be a number or null, got {self.out_of_scope_threshold!r}")
        if not isinstance(self.thresholds, dict):
            problems.append("thresholds must map axis -> {label: threshold}")
        else:
            for axis, per_label in self.thresholds.items():
                if not isinstance(per_label, dict):
                    problems.append(f"thresholds.{axis} must map label -> threshold")
                    continue
                bad = [label for label, t in per_label.items() if not _is_threshold(t)]
                if bad:
                    problems.append(f"thresholds.{axis}: {', '.join(map(repr, bad[:5]))} not a number >= 0")
        if problems:
            raise ValueError("; ".join(problems))

    @classmethod
    def from_json(cls, raw: dict[str, Any]) -> Self:
        """The calibration file's keys this class declares (defaults for missing ones; others ignored)."""
        if not isinstance(raw, dict):
            raise ValueError("a calibration file is a JSON object (see `triage eval --help`)")
        return cls(**{f.name: raw[f.name] for f in fields(cls) if f.name in raw})

    def confidence_model(self, axis: str) -> ConfidenceModel | None:
        return self._models.get(axis)

    def threshold(self, axis: str, label: str) -> float:
        per_axis = self.thresholds.get(axis, {})
        return per_axis.get(label, per_axis.get("*", self.default))

    def in_scope(self, neighbours: Sequence[EvidenceTicket], proposal: Mapping[str, Distribution]) -> float:
        """The in-scope score `out_of_scope_threshold` was fitted on (the evals compute it with this very method)."""
        if self._in_scope_model is not None and self.out_of_scope_score == "learned":
            return self._in_scope_model.probability(in_scope_features(neighbours, proposal))
        return in_scope_score(self.out_of_scope_score, neighbours[0].score if neighbours else 0.0, proposal)


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
    # stored tickets that may not be evidence (a held-out measurement: the head was fitted without them too)
    hidden_ids: frozenset[str] = frozenset()
