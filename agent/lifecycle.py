"""Ticket lifecycle use cases shared by the API, the CLI and the UI: create, message, escalate, review (the reads
and the errors are agent/reader.py's, which loads no model).

Each write is one database transaction that ends in a new revision; its commit is the acknowledgement, so
an answered request is on disk. The slow part (classification) runs before the transaction, and the rules
that depend on the state in force (a human's labels win, the tier never drops) are applied inside it, on the
locked ticket. A review teaches the retrieval store in the same step (agent/corrections.py explains how).
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Any

import httpx
from chromadb.errors import ChromaError
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from agent.contracts import (
    AXES,
    AxisLabel,
    Classification,
    Decision,
    Draft,
    EscalationIn,
    LabelledTicket,
    Message,
    MigrationChange,
    MigrationReport,
    Reason,
    ReviewIn,
    Taxonomy,
    TicketIn,
    TicketView,
    has_text,
)
from agent.migration import MigrationError, MigrationPlan, choose, intake_channel, pending_plan, plan_migration
from agent.nodes.normalize import clean, redact, thread_text
from agent.reader import (
    FOR_USER,
    Conflict,
    Invalid,
    NotFound,
    StoreUnavailable,
    TicketReader,
    shown,
    stored_classification,
)
from agent.records import (
    MessageRow,
    Records,
    ReviewRow,
    RevisionRow,
    TaxonomyVersionRow,
    TicketRow,
    new_id,
    utcnow,
)
from agent.revisions import (
    LabelRuleError,
    canonical_label,
    changed_axes,
    current_seq,
    escalation_target,
    flat_labels,
    human_classification,
    merge_agent,
    route_for,
    validate_labels,
)
from agent.service import TriageService

log = logging.getLogger(__name__)

QUEUE_RANK = {Decision.NEEDS_REVIEW.value: 0, Decision.SUGGEST.value: 1, Decision.AUTO_APPLY.value: 2}
_RECLASSIFY_ATTEMPTS = 3
_ACTOR_LENGTH = RevisionRow.__table__.c.actor.type.length
_EXTERNAL_ID_LENGTH = TicketRow.__table__.c.external_id.type.length


# ---------------------------------------------------------------- the use cases


class Lifecycle(TicketReader):
    """Reads plus the writes, which need the triage service (classification, the store for teaching)."""

    def __init__(self, service: TriageService, records: Records, *, clock: Callable[[], datetime] = utcnow) -> None:
        super().__init__(records, service.taxonomy)
        self.service = service
        self.clock = clock

    # ------------------------------------------------------------ writes

    def create_ticket(
        self, ticket: TicketIn, *, created_by: str, idempotency_key: str | None = None
    ) -> tuple[TicketView, bool]:
        """Store and classify a new ticket: (view, created). A repeated Idempotency-Key returns the first ticket."""
        _check_external_id(ticket.ticket_id)
        self.service.check_ticket(ticket)
        sha = hashlib.sha256(ticket.model_dump_json().encode()).hexdigest()
        if idempotency_key is not None:
            replay = self._replay(idempotency_key, sha)
            if replay is not None:
                return replay, False
        ticket_id = new_id("tk")
        started = self.clock()
        proposed = self.service.classify(ticket.model_copy(update={"ticket_id": ticket_id}))
        merged, suggestion = merge_agent(None, proposed, self.taxonomy)
        now = self.clock()
        try:
            with self.records.write() as session:
                row = TicketRow(
                    id=ticket_id, external_id=ticket.ticket_id, subject=ticket.subject, body=ticket.body,
                    channel=ticket.channel, created_by=created_by, created_at=now, updated_at=now,
                    idempotency_key=idempotency_key, request_sha=sha, message_count=len(ticket.messages), last_seq=0,
                    in_queue=False, queue_rank=QUEUE_RANK[Decision.NEEDS_REVIEW.value],
                )
                session.add(row)
                session.flush()
                session.add_all(
                    MessageRow(ticket_id=ticket_id, seq=i, author=m.author, text=m.text, created_at=now)
                    for i, m in enumerate(ticket.messages, 1)
                )
                revision = self._append(
                    session, row, reason="new_ticket", actor=_agent(merged, created_by), classification=merged,
                    suggestion=suggestion, started_at=started, before=None,
                )
                self._set_current(row, revision, merged, in_queue=merged.decision != Decision.AUTO_APPLY)
                return self._view(session, row), True
        except IntegrityError:
            if idempotency_key is None:
                raise
            replay = self._replay(idempotency_key, sha)  # a concurrent request with the same key won the insert
            if replay is None:
                raise
            return replay, False

    def add_message(self, ticket_id: str, message: Message, *, requested_by: str | None = None) -> TicketView:
        """Append a message and re-classify the whole thread (reason `new_message`). `requested_by` (a key name)
        is recorded with the revision; a message that shows nothing is refused before the costly classification."""
        if not has_text(message.text):
            raise Invalid(
                "the message has no text (only spaces, zero-width or control characters); send the words of the new message"
            )
        return self._reclassify(ticket_id, reason="new_message", message=message, requested_by=requested_by)

    def escalate(self, ticket_id: str, escalation: EscalationIn, *, requested_by: str | None = None) -> TicketView:
        """Raise the tier (to the given one, else one step) and re-classify (reason `escalation`)."""
        if escalation.tier is not None:
            escalation = escalation.model_copy(update={"tier": canonical_label(self.taxonomy, "tier", escalation.tier)})
            try:
                validate_labels(self.taxonomy, {"tier": escalation.tier})
            except LabelRuleError as exc:
                raise Invalid(str(exc)) from exc
        return self._reclassify(ticket_id, reason="escalation", escalation=escalation, requested_by=requested_by)

    def reclassify(self, ticket_id: str, *, requested_by: str | None = None) -> TicketView:
        """Re-run the agent on the thread as it is (reason `reclassify`), e.g. after a better model or store."""
        return self._reclassify(ticket_id, reason="reclassify", requested_by=requested_by)

    def review(self, ticket_id: str, review: ReviewIn, *, reviewer: str) -> TicketView:
        """A lead accepts, edits or rejects the current labels; accepted and edited labels teach the store at once."""
        if review.labels:  # in any case, as an escalation's tier and an intake channel are matched
            labels = {axis: canonical_label(self.taxonomy, axis, label) for axis, label in review.labels.items()}
            review = review.model_copy(update={"labels": labels})
            try:
                validate_labels(self.taxonomy, review.labels)
            except LabelRuleError as exc:
                raise Invalid(str(exc)) from exc
        row, messages = self._snapshot(ticket_id)
        # what the store keeps, shows as evidence and puts in prompts: PII redacted in the subject as in the body
        teach_subject = redact(clean(row.subject))
        teach_text = redact(clean(thread_text([row.body, *(m.text for m in messages)])))
        vector = self.service.embedder.embed([_join(teach_subject, teach_text)])
        started = self.clock()
        with self.records.write() as session:
            locked = self._lock(session, ticket_id)
            history = self._revisions(session, ticket_id)
            by_seq = {r.seq: r for r in history}
            seen = locked.current_seq
            if review.revision is not None and review.revision not in by_seq:
                raise Invalid(
                    f"ticket {ticket_id} has no revision {review.revision} (current: {seen if seen is not None else 'none'}); "
                    "send the seq of the revision you reviewed (`current_seq` of GET /v1/tickets/{id}), or leave `revision` out"
                )
            if review.revision is not None and review.revision != seen:
                raise Conflict(
                    f"revision {review.revision} is no longer current (current: {seen}); reload the ticket and review again"
                )
            current_row = by_seq.get(seen) if seen is not None else None
            held = stored_classification(current_row)
            current, undecided, _ = self._in_force(held, "\n\n".join([row.subject, row.body, *(m.text for m in messages)]))
            if review.action in ("accept", "reject") and current is None:
                raise Conflict(f"the ticket has no current labels to {review.action}; send an edit with labels for {list(AXES)}")
            actor = f"user:{reviewer}"
            if review.action == "reject":
                assert seen is not None
                new_seq = current_seq(history, rejected={seen})
                new_row = by_seq.get(new_seq) if new_seq is not None else None
                marker = self._append(
                    session, locked, reason="human_review", actor=actor, classification=None, suggestion={},
                    started_at=started, before=flat_labels(held), after=new_row.labels if new_row else None,
                    rejects=seen, note=review.comment,
                )
                history.append(marker)
                fallback = stored_classification(new_row)
                # labels the agent wanted a lead to see are in force again: back to the queue, as when first written
                self._set_current(locked, new_row, fallback, in_queue=fallback is None or fallback.decision != Decision.AUTO_APPLY)
                taught = _latest_human_labels(history)
                result_seq = marker.seq
            else:
                labels = {axis: label.label for axis, label in current.labels.items() if axis not in undecided} if current else {}
                if review.action == "accept":
                    suggested = {axis: s["label"] for axis, s in (current_row.suggestion or {}).items()}  # type: ignore[union-attr]
                    if held is not None and held.taxonomy_version != self.taxonomy.ref:  # ids of the version it was made in
                        plan = pending_plan(self.taxonomy, held.taxonomy_version)
                        suggested = {axis: plan.move(axis, label) for axis, label in suggested.items()}
                    labels.update({axis: label for axis, label in suggested.items() if label in self.taxonomy.axes[axis].ids})  # type: ignore[index]
                else:
                    labels.update(review.labels or {})
                open_axes = {axis: choices for axis, choices in undecided.items() if axis not in labels}
                if open_axes:
                    raise Invalid(
                        "; ".join(
                            f"{axis} {held.labels[axis].label} of {held.taxonomy_version} has no one label in {self.taxonomy.ref} "  # type: ignore[union-attr]
                            f"(its migration step re-asks it among {list(choices)})"
                            for axis, choices in open_axes.items()
                        )
                        + "; send an edit with that label, or run the migration (POST /v1/taxonomy/migration) first"
                    )
                try:
                    reviewed = human_classification(
                        current, labels, self.taxonomy, reviewer=reviewer, comment=review.comment
                    )
                except LabelRuleError as exc:
                    raise Invalid(str(exc)) from exc
                reviewed = reviewed.model_copy(update={"ticket_id": ticket_id})
                if review.draft is not None:  # what was actually sent, so timeline and stats see it
                    reviewed = reviewed.model_copy(update={"draft": Draft(text=review.draft.text, citations=review.draft.citations)})
                revision = self._append(
                    session, locked, reason="human_review", actor=actor, classification=reviewed, suggestion={},
                    started_at=started, before=flat_labels(held), note=review.comment,
                )
                self._set_current(locked, revision, reviewed, in_queue=False)
                taught = flat_labels(reviewed)
                result_seq = revision.seq
            session.add(
                ReviewRow(
                    ticket_id=ticket_id, revision_seq=seen if seen is not None else 0, result_seq=result_seq,
                    action=review.action, labels=dict(review.labels) if review.labels else None,
                    comment=review.comment, reviewer=reviewer, created_at=self.clock(),
                )
            )
            session.flush()  # database errors surface before the store is touched
            # inside the transaction: if the store refuses, the review is rolled back and the caller retries
            self._teach(row, teach_subject, teach_text, taught, vector)
            return self._view(session, locked)

    def register_taxonomy(self) -> None:
        """Record the taxonomy in force (once per version), so revisions can name the version they used."""
        content = self.taxonomy.model_dump(mode="json")
        if content.get("migration") is None:  # versions registered before migrations existed keep their hash
            content.pop("migration", None)
        sha = hashlib.sha256(json.dumps(content, sort_keys=True).encode()).hexdigest()
        try:
            with self.records.write() as session:
                found = session.scalars(select(TaxonomyVersionRow).where(TaxonomyVersionRow.ref == self.taxonomy.ref)).first()
                if found is None:
                    session.add(
                        TaxonomyVersionRow(
                            ref=self.taxonomy.ref, name=self.taxonomy.name, version=self.taxonomy.version, sha256=sha,
                            content=content, created_at=self.clock(),
                        )
                    )
                elif found.sha256 != sha:
                    log.warning("taxonomy %s changed without a new version; bump `version` in its YAML", self.taxonomy.ref)
        except IntegrityError:
            pass  # another worker registered it first

    def previous_taxonomy(self, ref: str | None = None) -> Taxonomy:
        """The served version a migration starts from: `ref`, else the one the taxonomy in force migrates from."""
        migration = self.taxonomy.migration
        ref = (ref or "").strip() or None  # "" (a cleared form field) asks for the default, like a missing one
        if ref is None and migration is None:
            raise Invalid(  # the fix is on the server, as for `triage taxonomy migrate`, which has always said it
                f"the taxonomy in force, {self.taxonomy.ref}, has no `migration:` section to apply; serve the new version "
                "first: point TRIAGE_TAXONOMY_PATH at its YAML, whose `migration:` names from_version and the steps, and "
                "restart the API"
            )
        ref = ref or f"{self.taxonomy.name}@{migration.from_version}"  # type: ignore[union-attr]
        found = self.served_taxonomy(ref)
        if found is None:
            raise NotFound(f"this deployment never served taxonomy {shown(ref)}; GET /v1/taxonomy/versions lists the ones it did")
        return found

    def migrate_taxonomy(
        self, previous: Taxonomy, *, commit: bool = False, reviewed_sample: int = 200,
        progress: Callable[[int, int], None] | None = None,
    ) -> MigrationReport:
        """Move the stored history from `previous` to the taxonomy in force (its `migration:` section).

        A dry run (the default) writes nothing and reports what would change and how often the agent, re-asked
        under the new version, agrees with the leads' reviewed labels moved to it. `commit` then writes one
        `taxonomy_migration` revision per changed ticket (history kept: the old revisions stay as they were) and
        relabels the retrieval store. A re-asked axis (split, retire without target) is the agent's choice, so
        such a ticket goes to the review queue."""
        try:
            plan = plan_migration(previous, self.taxonomy)
        except MigrationError as exc:
            raise Invalid(str(exc)) from exc
        if commit:
            self.register_taxonomy()
        with self.records.read() as session:
            ids = list(session.scalars(select(TicketRow.id).where(TicketRow.current_seq.is_not(None)).order_by(TicketRow.id)))
        report = MigrationReport(previous=plan.previous, target=plan.target, committed=commit, tickets=len(ids),
                                 already_current=0, changed=0, unchanged=0, reasked=0, transitions={}, reviewed_tickets=0)
        hits: dict[str, int] = {}
        totals: dict[str, int] = {}
        sample = self._reviewed_on_old_version(ids, reviewed_sample)
        # the store learned from the reviewed tickets: score the agent on them with a head and evidence without them
        held_out = self.service.held_out_context(frozenset(sample)) if sample else None
        for done, ticket_id in enumerate(ids, 1):
            if progress is not None:
                progress(done, len(ids))
            row, messages = self._snapshot(ticket_id)
            current = self._current(ticket_id, row.current_seq)
            if current is None or current.taxonomy_version == self.taxonomy.ref:
                report.already_current += current is not None
                continue
            before = flat_labels(current) or {}
            moved = plan.apply(before, "\n\n".join([row.subject, row.body, *(m.text for m in messages)]))
            after, reask = moved.labels, moved.reask
            thread = self._thread(row, messages)[0] if reask or ticket_id in sample else None
            chosen: dict[str, AxisLabel] = {}
            if reask and thread is not None:
                fresh = self.service.classify(thread)
                chosen = {axis: choose(fresh.labels[axis], choices) for axis, choices in reask.items()}
            after.update({axis: label.label for axis, label in chosen.items()})
            if ticket_id in sample and thread is not None:
                unseen = self.service.classify(thread, context=held_out)
                report.reviewed_tickets += 1
                for axis in ("service", "tier"):
                    if axis not in reask:  # the lead's label predates a split: it is no truth for the new ids
                        totals[axis] = totals.get(axis, 0) + 1
                        hits[axis] = hits.get(axis, 0) + (unseen.labels[axis].label == after[axis])
            if after == before:
                report.unchanged += 1
                continue
            report.changed += 1
            report.reasked += bool(reask)
            report.ruled += bool(moved.ruled)
            for axis in changed_axes(before, after):
                moves = report.transitions.setdefault(axis, {})
                key = f"{before.get(axis)} -> {after[axis]}"
                moves[key] = moves.get(key, 0) + 1
            if len(report.examples) < 50:
                report.examples.append(
                    MigrationChange(ticket_id=ticket_id, before=before, after=after, reasked=sorted(reask), ruled=sorted(moved.ruled))
                )
            if commit:
                report.revisions_written += self._write_migration(ticket_id, row.current_seq, current, after, chosen, plan, moved.ruled)
        report.reviewed_accuracy = {axis: round(hits[axis] / totals[axis], 4) for axis in AXES if totals.get(axis)}
        if commit:
            try:
                report.store_relabelled = self.service.store.relabel_tickets(plan.stored_labels)
            except (ChromaError, httpx.HTTPError, OSError) as exc:
                raise StoreUnavailable(f"the history was migrated but the retrieval store was not ({exc}); run the commit again") from exc
        return report

    def _current(self, ticket_id: str, seq: int | None) -> Classification | None:
        with self.records.read() as session:
            return stored_classification(session.scalars(self._revision_query(ticket_id, seq)).first())

    def _reviewed_on_old_version(self, ids: Sequence[str], limit: int) -> set[str]:
        """Up to `limit` tickets whose current labels a lead set under another taxonomy version."""
        found: set[str] = set()
        for ticket_id in ids:
            if len(found) >= limit:
                break
            with self.records.read() as session:
                row = self._get(session, ticket_id)
                current = stored_classification(session.scalars(self._revision_query(ticket_id, row.current_seq)).first())
            if current is not None and current.taxonomy_version != self.taxonomy.ref and all(
                current.labels[axis].source == "human" for axis in ("service", "tier")
            ):
                found.add(ticket_id)
        return found

    def _write_migration(
        self, ticket_id: str, seen_seq: int | None, current: Classification, after: dict[str, str],
        chosen: dict[str, AxisLabel], plan: MigrationPlan, ruled: dict[str, str],
    ) -> int:
        """One `taxonomy_migration` revision, unless the ticket moved on meanwhile (then the next run picks it up); the
        agent's suggestion a lead has yet to accept or reject comes along, moved to the new ids."""
        labels = {axis: chosen.get(axis) or plan.moved_label(axis, held, after[axis]) for axis, held in current.labels.items()}
        decision = Decision.NEEDS_REVIEW if chosen else current.decision
        how = "; ".join(
            f"{axis} {current.labels[axis].label} {plan.describe(axis, current.labels[axis].label, after[axis], ruled.get(axis, ''))}"
            for axis in AXES if after.get(axis) != current.labels[axis].label
        )
        migrated = current.model_copy(update={
            "labels": labels, "decision": decision, "taxonomy_version": self.taxonomy.ref,
            "route": route_for(self.taxonomy, labels["service"].label),
        })
        started = self.clock()
        with self.records.write() as session:
            locked = self._lock(session, ticket_id)
            if locked.current_seq != seen_seq:
                return 0
            held = session.scalars(self._revision_query(ticket_id, seen_seq)).first()
            suggested = {axis: AxisLabel.model_validate(s) for axis, s in ((held.suggestion if held else None) or {}).items()}
            revision = self._append(
                session, locked, reason="taxonomy_migration", actor="system:taxonomy-migration", classification=migrated,
                suggestion=plan.moved_suggestion(suggested, labels), started_at=started, before=flat_labels(current),
                note=f"{plan.previous} -> {plan.target}: {how}",
            )
            self._set_current(locked, revision, migrated, in_queue=locked.in_queue or bool(chosen))
        return 1

    # ------------------------------------------------------------ internals

    def _reclassify(
        self, ticket_id: str, *, reason: Reason, message: Message | None = None, escalation: EscalationIn | None = None,
        requested_by: str | None = None,
    ) -> TicketView:
        for attempt in range(_RECLASSIFY_ATTEMPTS):
            row, messages = self._snapshot(ticket_id)
            if escalation is not None and row.current_tier in self.taxonomy.axes["tier"].ids:
                self._escalation_target(row.current_tier, escalation)  # refuse a lowering before the slow part
            thread, cuts = self._thread(row, [*messages, *([message] if message else [])])
            started = self.clock()
            proposed = self.service.classify(thread)
            if cuts:
                proposed = proposed.model_copy(update={"warnings": [*proposed.warnings, *cuts]})
            with self.records.write() as session:
                locked = self._lock(session, ticket_id)
                if locked.message_count != row.message_count and attempt < _RECLASSIFY_ATTEMPTS - 1:
                    continue  # a message arrived meanwhile: classify the longer thread
                held = stored_classification(session.scalars(self._revision_query(ticket_id, locked.current_seq)).first())
                current, undecided, moves = self._in_force(held, thread.full_text())
                for axis, choices in undecided.items():  # as the migration would re-ask it: the agent, among the new ids
                    chosen = choose(proposed.labels[axis], choices)
                    proposed = proposed.model_copy(update={"labels": {**proposed.labels, axis: chosen}})
                    current.labels[axis] = chosen  # type: ignore[union-attr]
                tier = current.labels["tier"].label if current is not None else locked.current_tier
                target = self._escalation_target(tier, escalation) if escalation else None
                try:
                    merged, suggestion = merge_agent(current, proposed, self.taxonomy, escalate_to=target)
                except LabelRuleError as exc:
                    raise Invalid(str(exc)) from exc
                if moves:
                    update: dict[str, Any] = {"warnings": [*merged.warnings, *moves]}
                    if undecided:
                        update["decision"] = Decision.NEEDS_REVIEW  # the agent chose where a lead had decided
                    merged = merged.model_copy(update=update)
                current = held  # the revision's `before` is the labels as they were stored
                if message is not None:
                    locked.message_count += 1
                    session.add(
                        MessageRow(
                            ticket_id=ticket_id, seq=locked.message_count, author=message.author, text=message.text,
                            created_at=self.clock(),
                        )
                    )
                revision = self._append(
                    session, locked, reason=reason, actor=_agent(proposed, requested_by), classification=merged, suggestion=suggestion,
                    started_at=started, before=flat_labels(current), note=escalation.note if escalation else None,
                )
                self._set_current(locked, revision, merged, in_queue=merged.decision != Decision.AUTO_APPLY)
                return self._view(session, locked)
        raise AssertionError("unreachable: the last attempt always writes")

    def _in_force(
        self, current: Classification | None, text: str
    ) -> tuple[Classification | None, dict[str, tuple[str, ...]], list[str]]:
        """`current` in the ids of the taxonomy in force, for a ticket still on an earlier version (a new version is
        served before its migration runs): (labels moved as the migration will move them, the axes whose label it
        would re-ask with the ids to choose among, a note per moved axis). A label moved by a rename, a merge, a
        retirement or a rule stays whoever's it was; a re-asked axis keeps its old id here, for the caller to fill."""
        if current is None or current.taxonomy_version == self.taxonomy.ref:
            return current, {}, []
        plan = pending_plan(self.taxonomy, current.taxonomy_version)
        moved = plan.apply(flat_labels(current) or {}, text)
        labels = dict(current.labels)
        undecided: dict[str, tuple[str, ...]] = {}
        notes: list[str] = []
        for axis, held in current.labels.items():
            ids = self.taxonomy.axes[axis].ids  # type: ignore[index]
            new = moved.labels[axis]
            if held.label in ids and axis not in moved.reask:
                continue
            if axis in moved.reask or new not in ids:
                undecided[axis] = moved.reask.get(axis) or tuple(ids)
                notes.append(f"{axis} {held.label} of {current.taxonomy_version} has no one label in {self.taxonomy.ref}: "
                             f"the agent chose among {list(undecided[axis])}; a lead should check")
            else:
                labels[axis] = plan.moved_label(axis, held, new)
                how = plan.describe(axis, held.label, new, moved.ruled.get(axis, ""))
                notes.append(f"{axis} {held.label} of {current.taxonomy_version} is {new} in {self.taxonomy.ref} ({how}), "
                             "as the taxonomy migration will move it")
        return current.model_copy(update={"labels": labels, "taxonomy_version": self.taxonomy.ref}), undecided, notes

    def _escalation_target(self, current_tier: str | None, escalation: EscalationIn) -> str:
        try:
            return escalation_target(self.taxonomy, current_tier, escalation.tier)
        except LabelRuleError as exc:
            raise Invalid(str(exc)) from exc

    def _thread(self, row: TicketRow, messages: Sequence[Message | MessageRow]) -> tuple[TicketIn, list[str]]:
        """The whole thread to classify, and a warning per part left out to stay under the input limit: the oldest
        messages first, then the end of the body, then the end of the newest message. The stored ticket was taken
        whole, so a follow-up message to a long one (or a limit lowered since) is classified on what fits rather
        than refused with an advice to send less that the caller cannot follow. An intake channel that the taxonomy
        in force no longer has is moved as its migration moves it (`intake_channel`), also with a warning."""
        thread = [Message(author=m.author, text=m.text) for m in messages]  # type: ignore[arg-type]
        limit = self.service.settings.max_input_chars
        base = len(row.subject) + len(row.body)
        left_out = 0
        while len(thread) > 1 and (len(thread) > 200 or base + sum(len(m.text) + 2 for m in thread) > limit):
            thread.pop(0)
            left_out += 1
        warnings = [f"the {left_out} oldest messages were left out to stay under the input limit"] if left_out else []
        channel, moved = intake_channel(self.taxonomy, row.channel)  # filed under a version that had another id for it
        warnings += [moved] if moved else []
        ticket = TicketIn(subject=row.subject, body=row.body, channel=channel, messages=thread, ticket_id=row.id)
        for part in ("body", "newest message"):
            over = len(ticket.full_text()) - limit
            if over <= 0 or (part == "newest message" and not thread):
                break
            text = (ticket.body if part == "body" else thread[-1].text).strip()
            kept = text[: max(len(text) - over, 0)]
            if part == "body":
                ticket = ticket.model_copy(update={"body": kept})
            else:
                ticket = ticket.model_copy(update={"messages": [*thread[:-1], thread[-1].model_copy(update={"text": kept})]})
            warnings.append(f"the {part} was cut to its first {len(kept)} of {len(text)} characters to stay under the input limit")
        self.service.check_ticket(ticket)
        return ticket, warnings

    def _replay(self, idempotency_key: str, sha: str) -> TicketView | None:
        with self.records.read() as session:
            row = session.scalars(select(TicketRow).where(TicketRow.idempotency_key == idempotency_key)).first()
            if row is None:
                return None
            if row.request_sha != sha:
                raise Invalid(
                    "this Idempotency-Key was already used with a different request; "
                    "send a new key for a new ticket, or resend the original body"
                )
            return self._view(session, row)

    def _append(
        self,
        session: Session,
        row: TicketRow,
        *,
        reason: Reason,
        actor: str,
        classification: Classification | None,
        suggestion: dict[str, AxisLabel],
        started_at: datetime,
        before: dict[str, str] | None,
        after: dict[str, str] | None = None,
        rejects: int | None = None,
        note: str | None = None,
    ) -> RevisionRow:
        """A new revision; `after` is the labels in force after it when they are not its own (a reject marker)."""
        row.last_seq += 1
        row.updated_at = self.clock()
        labels = flat_labels(classification)
        revision = RevisionRow(
            ticket_id=row.id,
            seq=row.last_seq,
            reason=reason,
            actor=actor,
            classification=classification.model_dump(mode="json") if classification else None,
            labels=labels,
            changed_axes=changed_axes(before, labels if classification is not None else after),
            suggestion={axis: s.model_dump(mode="json") for axis, s in suggestion.items()} or None,
            supersedes=row.current_seq,
            rejects=rejects,
            note=note,
            started_at=started_at,
            created_at=row.updated_at,
        )
        session.add(revision)
        return revision

    @staticmethod
    def _set_current(row: TicketRow, revision: RevisionRow | None, classification: Classification | None, *, in_queue: bool) -> None:
        """Keep the ticket's denormalised current labels (what the queue filters on) in step with the history."""
        labels = classification.labels if classification else {}
        decision = classification.decision.value if classification else Decision.NEEDS_REVIEW.value
        routed = [labels[a].confidence for a in ("service", "tier") if a in labels]
        row.current_seq = revision.seq if revision and classification else None
        row.current_decision = decision
        row.current_confidence = round(min(routed), 6) if routed else 0.0
        row.current_service = labels["service"].label if "service" in labels else None
        row.current_tier = labels["tier"].label if "tier" in labels else None
        row.current_channel = labels["channel"].label if "channel" in labels else None
        row.in_queue = in_queue
        row.queue_rank = QUEUE_RANK[decision]

    def _teach(self, row: TicketRow, subject: str, text: str, labels: dict[str, str] | None, vector: Any) -> None:
        try:
            if labels is None:
                self.service.store.tickets.delete(ids=[row.id])
                return
            example = LabelledTicket(
                id=row.id, subject=subject, body=text, channel=row.channel, labels=labels, source="human", verified=True
            )
            self.service.store.upsert_tickets([example], vector)
        except (ChromaError, httpx.HTTPError, OSError) as exc:
            raise StoreUnavailable(f"the retrieval store did not take the review ({exc}); nothing was saved, retry") from exc

    def _lock(self, session: Session, ticket_id: str) -> TicketRow:
        row = session.get(TicketRow, ticket_id, with_for_update=True)
        if row is None:
            raise NotFound(f"no ticket {shown(ticket_id)}; GET /v1/tickets (or `triage tickets list`) lists them")
        return row

    def _snapshot(self, ticket_id: str) -> tuple[TicketRow, list[MessageRow]]:
        with self.records.read() as session:
            row = self._get(session, ticket_id)
            messages = list(session.scalars(select(MessageRow).where(MessageRow.ticket_id == ticket_id).order_by(MessageRow.seq)))
            return row, messages


# ---------------------------------------------------------------- helpers


def _check_external_id(external_id: str | None) -> None:
    """The caller's `ticket_id` is stored as `external_id`, a column of `_EXTERNAL_ID_LENGTH` characters: refused
    before the classification, since PostgreSQL refuses a longer one (or one with a NUL) only at the insert."""
    if external_id is None:
        return
    if len(external_id) > _EXTERNAL_ID_LENGTH:
        raise Invalid(
            f"ticket_id has {len(external_id)} characters, more than the {_EXTERNAL_ID_LENGTH} kept for your system's id; "
            "send a shorter id (e.g. the key your help desk shows)"
        )
    if "\x00" in external_id:
        raise Invalid("ticket_id holds a NUL character (\\u0000); send your system's id without it")


def _agent(classification: Classification, requested_by: str | None) -> str:
    """The actor of an agent revision: `agent:<model>`, then ` for user:<key name>` when a caller asked for it.

    The model comes first so that every `agent:` reader (the stats, the human-label rules) still sees an agent;
    the column is cut at its length rather than refusing the write."""
    actor = f"agent:{classification.model}" + (f"{FOR_USER}{requested_by}" if requested_by else "")
    return actor[:_ACTOR_LENGTH]


def _join(*parts: str) -> str:
    return "\n\n".join(p.strip() for p in parts if p and p.strip())


def _latest_human_labels(history: Sequence[RevisionRow]) -> dict[str, str] | None:
    """The labels a human vouched for last and nobody rejected: what the store should hold as verified."""
    rejected = {r.rejects for r in history if r.rejects is not None}
    for revision in sorted(history, key=lambda r: r.seq, reverse=True):
        if revision.actor.startswith("user:") and revision.labels and revision.seq not in rejected:
            return dict(revision.labels)
    return None


