"""Moving labels from one taxonomy version to the next: rename, merge, split, retire (DESIGN.md).

A new version's YAML carries a `migration:` section naming the version it follows and one step per changed
label. This module only plans: which old id becomes which new id, and which tickets the agent must re-ask
because the old label does not say (a split, a retirement with no target) unless a rule of the step does
(keywords, a pattern or the ticket's other labels; the first matching rule wins, then `otherwise`). The lifecycle applies a plan to the
stored history (a dry run first, then one `taxonomy_migration` revision per changed ticket); the store and
`triage ingest` apply its fixed part to stored labelled tickets, so the head learns the new ids.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from agent.contracts import AXES, AxisLabel, LabelAlternative, MigrationOp, SplitRule, Taxonomy


class MigrationError(ValueError):
    """A migration that cannot be planned; the message says which label and what to add to the YAML."""


@dataclass(frozen=True)
class Move:
    """Where one old label goes: a fixed new id, or the first matching rule's, or `otherwise`, or a re-ask
    among `choices`."""

    op: MigrationOp
    to: str | None
    choices: tuple[str, ...] = ()
    rules: tuple[SplitRule, ...] = ()
    otherwise: str | None = None

    def decide(self, labels: Mapping[str, str], text: str | None) -> tuple[str | None, str]:
        """(new id, which rule chose it: '' for a fixed move); (None, '') when the agent must choose. Without the
        ticket's text a rule that reads text cannot be ruled out, so such a ticket is re-asked."""
        if self.to is not None:
            return self.to, ""
        for i, rule in enumerate(self.rules, 1):
            if text is None and (rule.keywords or rule.pattern):
                return None, ""
            if rule.matches(text or "", dict(labels)):
                return rule.to, f"rule {i} ({rule.describe()})"
        return (self.otherwise, "otherwise") if self.otherwise else (None, "")


@dataclass
class Moved:
    """One ticket's labels under the new version, so far: what the agent must still choose, and what rules chose."""

    labels: dict[str, str]
    reask: dict[str, tuple[str, ...]] = field(default_factory=dict)
    ruled: dict[str, str] = field(default_factory=dict)  # axis -> the rule that chose its label


@dataclass(frozen=True)
class MigrationPlan:
    previous: str
    target: str
    moves: Mapping[str, Mapping[str, Move]]  # axis -> old id -> move; labels kept as they are have none

    def apply(self, labels: Mapping[str, str], text: str | None = None) -> Moved:
        """The labels with every fixed move and matching rule applied, and the axes to re-ask with the ids to
        choose among. `text` is the ticket's (subject, body, messages) for rules that read it."""
        return _apply(self.moves, labels, text)

    def stored_labels(self, labels: Mapping[str, str], text: str | None = None) -> dict[str, str]:
        """A stored example's labels moved: fixed moves and rules applied, axes that would need a re-ask dropped."""
        moved = _apply(self.moves, labels, text)
        return {axis: label for axis, label in moved.labels.items() if axis not in moved.reask}

    def move(self, axis: str, label: str) -> str | None:
        """The new id of one old label (itself when kept); None when the agent must choose (split, retire alone)."""
        found = self.moves.get(axis, {}).get(label)
        return label if found is None else found.to

    def moved_label(self, axis: str, held: AxisLabel, new: str) -> AxisLabel:
        """`held` (a label in force under the previous version) as `new`, its alternatives moved too: an
        alternative that a step re-asks is dropped, two merged into one keep the higher confidence."""
        alternatives: dict[str, float] = {}
        for alternative in held.alternatives:
            target = self.move(axis, alternative.label)
            if target is not None and target != new:
                alternatives[target] = max(alternatives.get(target, 0.0), alternative.confidence)
        return held.model_copy(
            update={"label": new, "alternatives": [LabelAlternative(label=k, confidence=v) for k, v in alternatives.items()]}
        )

    def describe(self, axis: str, old: str, new: str | None = None, ruled: str = "") -> str:
        move = self.moves.get(axis, {}).get(old)
        if move is None:
            return "kept"
        if move.to:
            return f"{move.op} -> {move.to}"
        if ruled and new:
            return f"{move.op} -> {new} by {ruled}"
        return f"{move.op} -> one of {list(move.choices)}"


def plan_migration(previous: Taxonomy, target: Taxonomy) -> MigrationPlan:
    """The moves from `previous` to `target`; every label that is gone must have a step that says where it goes."""
    migration = target.migration
    if migration is None:
        raise MigrationError(
            f"taxonomy {target.ref} has no `migration:` section; add one naming from_version {previous.version!r} "
            "and a step for each renamed, merged, split or retired label"
        )
    if previous.name != target.name or migration.from_version != previous.version:
        raise MigrationError(
            f"taxonomy {target.ref} migrates from {target.name}@{migration.from_version}, not from {previous.ref}"
        )
    moves = _moves(target)
    for axis in AXES:
        for step_from in moves.get(axis, {}):
            if step_from not in previous.axes[axis].ids:
                raise MigrationError(f"a migration step of {target.ref} moves {axis} label {step_from!r}, which {previous.ref} does not have")
        gone = [i for i in previous.axes[axis].ids if i not in target.axes[axis].ids and i not in moves.get(axis, {})]
        if gone:
            raise MigrationError(
                f"{axis} labels {gone} of {previous.ref} are gone from {target.ref} and no migration step says where "
                "their tickets go: add a rename, merge, split or retire step for each"
            )
    return MigrationPlan(previous=previous.ref, target=target.ref, moves=moves)


def migrate_stored_labels(taxonomy: Taxonomy, labels: Mapping[str, str], text: str | None = None) -> dict[str, str]:
    """Labels of a stored example (seed line, taught review) in `taxonomy`'s ids: fixed moves and matching rules
    applied, labels that would need a re-ask dropped (an example teaches nothing about a split it predates);
    others left as they are."""
    return MigrationPlan(previous="", target=taxonomy.ref, moves=_moves(taxonomy)).stored_labels(labels, text)


def choose(suggested: AxisLabel, choices: Sequence[str]) -> AxisLabel:
    """The agent's label for a re-asked axis, restricted to `choices`: its top label when allowed, else its best
    allowed alternative, else the first choice at confidence 0 (a lead decides)."""
    if suggested.label in choices:
        return suggested
    for alternative in suggested.alternatives:
        if alternative.label in choices:
            rest = [a for a in suggested.alternatives if a.label in choices and a.label != alternative.label]
            return AxisLabel(label=alternative.label, confidence=alternative.confidence, source=suggested.source, alternatives=rest)
    others = [LabelAlternative(label=c, confidence=0.0) for c in choices[1:]]
    return AxisLabel(label=choices[0], confidence=0.0, source="fallback", alternatives=others)


def _moves(taxonomy: Taxonomy) -> dict[str, dict[str, Move]]:
    moves: dict[str, dict[str, Move]] = {}
    for step in taxonomy.migration.steps if taxonomy.migration else []:
        axis_moves = moves.setdefault(step.axis, {})
        for old in step.from_:
            if step.op in ("rename", "merge") or (step.op == "retire" and step.to):
                axis_moves[old] = Move(op=step.op, to=step.to[0])
            else:
                choices = tuple(step.to) if step.op == "split" else tuple(taxonomy.axes[step.axis].ids)
                axis_moves[old] = Move(op=step.op, to=None, choices=choices, rules=tuple(step.rules), otherwise=step.otherwise)
    return moves


def _apply(moves: Mapping[str, Mapping[str, Move]], labels: Mapping[str, str], text: str | None) -> Moved:
    moved = Moved(labels=dict(labels))
    for axis, label in labels.items():
        move = moves.get(axis, {}).get(label)
        if move is None:
            continue
        new, rule = move.decide(labels, text)  # rules read the labels under the previous version
        if new is None:
            moved.reask[axis] = move.choices
            continue
        moved.labels[axis] = new
        if rule:
            moved.ruled[axis] = rule
    return moved
