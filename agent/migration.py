"""Moving labels from one taxonomy version to the next: rename, merge, split, retire (README.md, "Changing the taxonomy").

A new version's YAML carries a `migration:` section naming the version it follows and one step per changed
label. This module only plans: which old id becomes which new id, and which tickets the agent must re-ask
because the old label does not say (a split, a retirement with no target) unless a rule of the step does
(keywords, a pattern or the ticket's other labels; the first matching rule wins, then `otherwise`). The lifecycle applies a plan to the
stored history (a dry run first, then one `taxonomy_migration` revision per changed ticket); the store and
`triage ingest` apply its fixed part to stored labelled tickets, so the head learns the new ids.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from agent.contracts import AXES, AxisLabel, LabelAlternative, MigrationOp, SplitRule, Taxonomy
from agent.revisions import canonical_label


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

    def moved_suggestion(self, suggestion: Mapping[str, AxisLabel], labels: Mapping[str, AxisLabel]) -> dict[str, AxisLabel]:
        """The agent's labels that lost to a human's (a ticket waiting in the queue as `suggest`), in the new ids: a
        lead's accept takes them, so a migration that dropped them would turn that accept into a keep. A label a
        step re-asks becomes the agent's best alternative among the step's choices (dropped when it had none); one
        that now equals the label in force (two merged into one) is no disagreement and is dropped."""
        moved: dict[str, AxisLabel] = {}
        for axis, suggested in suggestion.items():
            new = self.move(axis, suggested.label)
            if new is not None:
                label = self.moved_label(axis, suggested, new)
            else:
                label = choose(suggested, self.moves[axis][suggested.label].choices)
                if label.source == "fallback":
                    continue
            if axis not in labels or label.label != labels[axis].label:
                moved[axis] = label
        return moved

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
    """The moves from `previous` to `target`; every label that is gone must have a step that says where it goes.

    A version that keeps every label needs no `migration:` section (its plan moves nothing); a file changed under
    the same version is refused, since revisions name the version and could not tell the two contents apart."""
    if previous.name != target.name:
        raise MigrationError(
            f"taxonomy {target.ref} is not a version of {previous.name!r}; compare it with an earlier version of {target.name!r}"
        )
    if previous.version == target.version:
        return _same_version_plan(previous, target)
    migration = target.migration
    if migration is None:
        gone = gone_labels(previous, target)
        if gone:
            raise MigrationError(
                f"taxonomy {target.ref} has no `migration:` section, but {_describe_gone(gone)} of {previous.ref} are gone "
                f"from it; add one naming from_version {previous.version!r} and a rename, merge, split or retire step for each"
            )
        return MigrationPlan(previous=previous.ref, target=target.ref, moves={})
    if migration.from_version != previous.version:
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


def gone_labels(previous: Taxonomy, target: Taxonomy) -> dict[str, list[str]]:
    """Per axis, the labels of `previous` that `target` no longer has (axes with none left out)."""
    gone = {axis: [i for i in previous.axes[axis].ids if i not in target.axes[axis].ids] for axis in AXES}
    return {axis: ids for axis, ids in gone.items() if ids}


def _describe_gone(gone: Mapping[str, Sequence[str]]) -> str:
    return " and ".join(f"{axis} labels {list(ids)}" for axis, ids in gone.items())


def _same_version_plan(previous: Taxonomy, target: Taxonomy) -> MigrationPlan:
    """Nothing to move when the content is the same; an edit under the same version is told to bump it."""
    if previous.model_dump(mode="json") == target.model_dump(mode="json"):
        return MigrationPlan(previous=previous.ref, target=target.ref, moves={})
    gone = gone_labels(previous, target)
    also = (
        f", and add a `migration:` naming from_version {previous.version!r} with a rename, merge, split or retire step "
        f"for {_describe_gone(gone)}, which are gone"
        if gone
        else ""
    )
    raise MigrationError(
        f"this file changes taxonomy {target.ref} under the same version: bump `version` in it{also} (revisions "
        "name the version, so two contents under one version cannot be told apart)"
    )


def migrate_stored_labels(taxonomy: Taxonomy, labels: Mapping[str, str], text: str | None = None) -> dict[str, str]:
    """Labels of a stored example (seed line, taught review) in `taxonomy`'s ids: fixed moves and matching rules
    applied, labels that would need a re-ask dropped (an example teaches nothing about a split it predates);
    others left as they are."""
    return MigrationPlan(previous="", target=taxonomy.ref, moves=_moves(taxonomy)).stored_labels(labels, text)


def pending_plan(taxonomy: Taxonomy, previous: str) -> MigrationPlan:
    """The moves of `taxonomy`'s `migration:` section for the labels of a ticket still on `previous`, one the
    migration has not reached yet: a message or a review in between moves them as the migration will."""
    return MigrationPlan(previous=previous, target=taxonomy.ref, moves=_moves(taxonomy))


def intake_channel(taxonomy: Taxonomy, channel: str | None) -> tuple[str | None, str | None]:
    """The channel a stored ticket was filed with, as an id of `taxonomy`, and a note when it is no longer one.

    A ticket keeps its intake channel as it came in; once a version renames, merges or retires that channel, the
    stored id is unknown to the taxonomy in force, and classifying the thread again (a message, an escalation, a
    migration's re-ask) would be refused as 'unknown channel' for every such ticket, a migration included. It moves
    as the taxonomy's `migration:` moves it; with no single new id (retired without `to`, or gone in an earlier
    version) it is inferred like a missing channel."""
    ids = taxonomy.axes["channel"].ids
    if channel is None or channel in ids:
        return channel, None
    if (same := canonical_label(taxonomy, "channel", channel)) in ids:
        return same, None
    moved = MigrationPlan(previous="", target=taxonomy.ref, moves=_moves(taxonomy)).move("channel", channel)
    if moved in ids:
        return moved, f"intake channel {channel} is {moved} in {taxonomy.ref}"
    return None, f"intake channel {channel} is not a channel of {taxonomy.ref}: the channel was inferred"


def carried_thresholds(
    thresholds: Mapping[str, Mapping[str, float]], default: float, taxonomy: Taxonomy
) -> tuple[dict[str, dict[str, float]], list[str]]:
    """A calibration's per-class auto-apply thresholds in `taxonomy`'s ids, and a note per change.

    Thresholds are fitted per label id, and a label without one gets its axis's pooled threshold (`*`). After a
    rename, merge or split that let a new id through at the pooled threshold: two classes the agent was never
    trusted with (1.001, never auto-applied) merged into one were auto-applied from the pooled 0.06 on. A label
    with no threshold of its own now takes the strictest of those its migration moves into it (and of the pooled
    one), a renamed one its own; thresholds of labels the taxonomy lacks are dropped with a note. Re-fitting
    (`triage eval`) replaces them."""
    moves = _moves(taxonomy)
    carried: dict[str, dict[str, float]] = {}
    notes: list[str] = []
    for axis, per_label in thresholds.items():
        carried[axis] = dict(per_label)
        if axis not in taxonomy.axes:
            continue
        ids = taxonomy.axes[axis].ids  # type: ignore[index]
        pooled = per_label.get("*", default)
        sources: dict[str, list[str]] = {}
        renamed: set[str] = set()
        for old, move in moves.get(axis, {}).items():
            for new in [move.to] if move.to else list(move.choices) if move.op == "split" else []:
                sources.setdefault(new, []).append(old)
                renamed.update([new] if move.op == "rename" else [])
        for new, olds in sources.items():
            if new in per_label:
                continue
            if new in renamed and len(olds) == 1 and olds[0] in per_label:  # the same class under another id
                value, how = per_label[olds[0]], "renamed"
            else:
                value, how = max([pooled, *(per_label.get(old, pooled) for old in olds)]), "the strictest"
            if value != pooled:
                carried[axis][new] = value
                notes.append(f"{axis} {new} takes the auto-apply threshold {value} of {', '.join(olds)}, which "
                             f"{taxonomy.ref} moves into it ({how})")
        gone = [label for label in per_label if label != "*" and label not in ids]
        for label in gone:
            del carried[axis][label]
        if gone:
            notes.append(f"the thresholds of {axis} {', '.join(gone)} are dropped: {taxonomy.ref} has no such label")
    return carried, notes


@dataclass(frozen=True)
class Stranded:
    """Current labels of stored tickets that `taxonomy` lacks and no step of its `migration:` moves."""

    labels: dict[str, dict[str, int]]  # axis -> label -> tickets carrying it
    tickets: int  # tickets with at least one such label

    def describe(self) -> str:
        """e.g. `service 'network' (2 tickets), tier 'L4' (1 ticket)`."""
        return ", ".join(
            f"{axis} {label!r} ({n} ticket{'s' if n != 1 else ''})" for axis, counts in self.labels.items() for label, n in counts.items()
        )


def stranded_labels(taxonomy: Taxonomy, in_use: Iterable[tuple[Mapping[str, str | None], int]]) -> Stranded:
    """Which of the stored tickets' current labels `taxonomy` can neither show nor migrate. `in_use` holds each
    distinct combination of current labels (axis -> label) with the number of tickets that carry it."""
    moves = _moves(taxonomy)
    labels: dict[str, dict[str, int]] = {}
    tickets = 0
    for combination, n in in_use:
        lost = [
            (axis, label) for axis, label in combination.items()
            if label and axis in taxonomy.axes and label not in taxonomy.axes[axis].ids and label not in moves.get(axis, {})
        ]
        tickets += n if lost else 0
        for axis, label in lost:
            counts = labels.setdefault(axis, {})
            counts[label] = counts.get(label, 0) + n
    return Stranded(labels=labels, tickets=tickets)


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
