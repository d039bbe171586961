"""Ticket lifecycle use cases shared by the API, the CLI and the UI: create, message, escalate, review, read.

Each write is one database transaction that ends in a new revision; its commit is the acknowledgement, so
an answered request is on disk. The slow part (classification) runs before the transaction, and the rules
that depend on the state in force (a human's labels win, the tier never drops) are applied inside it, on the
locked ticket. A review teaches the retrieval store in the same step (agent/corrections.py explains how).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import logging
import math
from collections.abc import Callable, Iterator, Sequence
from datetime import datetime
from typing import Any

import httpx
from chromadb.errors import ChromaError
from sqlalchemy import select, tuple_
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
    MessageView,
    MigrationChange,
    MigrationReport,
    Page,
    QueueItem,
    Reason,
    ReviewedTicket,
    ReviewIn,
    ReviewView,
    RevisionView,
    Taxonomy,
    TicketIn,
    TicketSummary,
    TicketView,
    has_text,
)
from agent.migration import MigrationError, MigrationPlan, choose, intake_channel, pending_plan, plan_migration
from agent.nodes.normalize import clean, redact, thread_text
from agent.records import (
    MessageRow,
    Records,
    ReviewRow,
    RevisionRow,
    TaxonomyVersionRow,
    TicketRow,
    as_utc,
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
    rejected_by,
    route_for,
    validate_labels,
)
from agent.service import TriageService

log = logging.getLogger(__name__)

QUEUE_RANK = {Decision.NEEDS_REVIEW.value: 0, Decision.SUGGEST.value: 1, Decision.AUTO_APPLY.value: 2}
MAX_PAGE = 200
_RECLASSIFY_ATTEMPTS = 3
_FOR_USER = " for user:"  # joins an agent actor to the key that asked: agent:<model> for user:<key name>
_ACTOR_LENGTH = RevisionRow.__table__.c.actor.type.length
_EXTERNAL_ID_LENGTH = TicketRow.__table__.c.external_id.type.length


# ---------------------------------------------------------------- errors (each maps to one HTTP status)


class LifecycleError(Exception):
    status = 400
    code = "bad_request"


class NotFound(LifecycleError):
    status = 404
    code = "not_found"


class Conflict(LifecycleError):
    status = 409
    code = "conflict"


class Invalid(LifecycleError):
    status = 422
    code = "invalid_request"


class StoreUnavailable(LifecycleError):
    status = 503
    code = "store_unavailable"


def shown(value: str, limit: int = 80) -> str:
    """An id from the request as an error message quotes it: repr'd, and cut with its length past `limit`, so a
    10,000-character path id is not echoed back whole."""
    if len(value) <= limit:
        return repr(value)
    return f"{value[:limit]!r}… ({len(value)} characters)"


# ---------------------------------------------------------------- the use cases


class TicketReader:
    """The read side: needs only the records (the CLI's `tickets show` and `history` load no model)."""

    def __init__(self, records: Records, taxonomy: Taxonomy | None = None) -> None:
        self.records = records
        self._taxonomy = taxonomy

    @property
    def taxonomy(self) -> Taxonomy:
        if self._taxonomy is None:
            raise RuntimeError("this reader has no taxonomy; build a Lifecycle for label checks")
        return self._taxonomy

    def served_taxonomy(self, ref: str) -> Taxonomy | None:
        """A taxonomy version this deployment served (registered when the API started or a migration committed)."""
        with self.records.read() as session:
            row = session.scalars(select(TaxonomyVersionRow).where(TaxonomyVersionRow.ref == ref)).first()
            return Taxonomy.model_validate(row.content) if row is not None else None

    def ticket(self, ticket_id: str) -> TicketView:
        with self.records.read() as session:
            return self._view(session, self._get(session, ticket_id))

    def revisions(self, ticket_id: str) -> list[RevisionView]:
        """The whole timeline, oldest first, with reviews and rejections attached."""
        with self.records.read() as session:
            self._get(session, ticket_id)
            history = self._revisions(session, ticket_id)
            reviews = {r.result_seq: r for r in session.scalars(select(ReviewRow).where(ReviewRow.ticket_id == ticket_id))}
            rejected = rejected_by(history)
            return [_revision_view(r, reviews.get(r.seq), rejected.get(r.seq)) for r in history]

    def list_tickets(self, *, limit: int = 50, cursor: str | None = None, external_id: str | None = None) -> Page[TicketSummary]:
        """Newest first; `external_id` finds the tickets an integration created under its own id (`ticket_id`)."""
        limit = _limit(limit)
        query = select(TicketRow).order_by(TicketRow.id.desc()).limit(limit + 1)
        if external_id is not None:
            query = query.where(TicketRow.external_id == external_id)
        if cursor is not None:
            (after,) = _decode_cursor(cursor, (str,))
            query = query.where(TicketRow.id < after)
        with self.records.read() as session:
            rows = list(session.scalars(query))
        page = rows[:limit]
        next_cursor = _encode_cursor([page[-1].id]) if len(rows) > limit else None
        return Page[TicketSummary](items=[_summary(r) for r in page], next_cursor=next_cursor)

    def review_queue(
        self,
        *,
        limit: int = 50,
        cursor: str | None = None,
        decision: str | None = None,
        service: str | None = None,
        tier: str | None = None,
        channel: str | None = None,
        created_after: datetime | None = None,
        created_before: datetime | None = None,
    ) -> Page[QueueItem]:
        """Tickets waiting for a lead: needs_review first, then suggest; lowest confidence first within each.

        `created_after` / `created_before` (a naive time is read as UTC) filter on when the ticket came in, so an
        age filter pages through every match rather than filtering one page.
        """
        limit = _limit(limit)
        if decision is not None and decision not in (Decision.NEEDS_REVIEW.value, Decision.SUGGEST.value):
            raise Invalid(f"decision must be needs_review or suggest, not {decision!r}")
        if self._taxonomy is not None:
            check_label_filters(self._taxonomy, service=service, tier=tier, channel=channel)
        key = (TicketRow.queue_rank, TicketRow.current_confidence, TicketRow.id)
        query = select(TicketRow).where(TicketRow.in_queue.is_(True)).order_by(*key).limit(limit + 1)
        query = query.where(
            *TicketRow.matching(service=service, tier=tier, channel=channel, created_after=created_after, created_before=created_before)
        )
        if decision is not None:
            query = query.where(TicketRow.current_decision == decision)
        if cursor is not None:
            rank, confidence, after = _decode_cursor(cursor, (int, float, str))
            query = query.where(tuple_(*key) > tuple_(rank, confidence, after))
        with self.records.read() as session:
            rows = list(session.scalars(query))
            page = rows[:limit]
            current = self._current_rows(session, page)
            items = [QueueItem(**_summary(r).model_dump(), current=current.get(r.id)) for r in page]
        last = page[-1] if page else None
        next_cursor = (
            _encode_cursor([last.queue_rank, last.current_confidence, last.id]) if last is not None and len(rows) > limit else None
        )
        return Page[QueueItem](items=items, next_cursor=next_cursor)

    def reviewed(self, *, batch: int = 500) -> Iterator[ReviewedTicket]:
        """Every ticket a lead accepted or edited, by id, with its latest review that was not rejected later.

        The labels are the review's, in the ids of the reader's taxonomy when it has one (`_in_force_ids`), and the
        text is the thread up to that review (a later message is not what the lead judged). Read in batches of
        tickets, so a large history streams.
        """
        after = ""
        while True:
            with self.records.read() as session:
                reviewed_ids = (
                    select(RevisionRow.ticket_id)
                    .where(RevisionRow.reason == "human_review", RevisionRow.ticket_id > after)
                    .distinct()
                    .order_by(RevisionRow.ticket_id)
                    .limit(batch)
                )
                ids = list(session.scalars(reviewed_ids))
                if not ids:
                    return
                tickets = {t.id: t for t in session.scalars(select(TicketRow).where(TicketRow.id.in_(ids)))}
                human: dict[str, list[RevisionRow]] = {}
                for rev in session.scalars(
                    select(RevisionRow).where(RevisionRow.ticket_id.in_(ids), RevisionRow.reason == "human_review").order_by(RevisionRow.seq)
                ):
                    human.setdefault(rev.ticket_id, []).append(rev)
                actions = {
                    (r.ticket_id, r.result_seq): r.action for r in session.scalars(select(ReviewRow).where(ReviewRow.ticket_id.in_(ids)))
                }
                messages: dict[str, list[MessageRow]] = {}
                for m in session.scalars(select(MessageRow).where(MessageRow.ticket_id.in_(ids)).order_by(MessageRow.seq)):
                    messages.setdefault(m.ticket_id, []).append(m)
            for ticket_id in ids:
                revisions = human.get(ticket_id, [])
                rejected = rejected_by(revisions)
                kept = [r for r in revisions if r.labels and r.rejects is None and r.seq not in rejected]
                if not kept:
                    continue  # only rejections: no label a lead stands behind
                review, row = kept[-1], tickets[ticket_id]
                thread = messages.get(ticket_id, [])
                seen = [m.text.strip() for m in thread if as_utc(m.created_at) <= as_utc(review.created_at)]
                yield ReviewedTicket(
                    id=ticket_id,
                    subject=row.subject,
                    body="\n\n".join(part for part in (row.body.strip(), *seen) if part),
                    intake_channel=row.channel,
                    labels=self._in_force_ids(review, "\n\n".join([row.subject, row.body, *(m.text for m in thread)])),
                    action=actions.get((ticket_id, review.seq), "accept"),
                    reviewer=review.actor.removeprefix("user:"),
                    reviewed_at=as_utc(review.created_at),
                )
            after = ids[-1]

    # ------------------------------------------------------------ helpers

    def _in_force_ids(self, review: RevisionRow, text: str) -> dict[str, str]:
        """A review's labels in the ids of the taxonomy in force: one made before a taxonomy migration holds ids the
        taxonomy no longer has, which `triage eval --taxonomy` scores as wrong. They move as the migration moves
        them (rules read the whole thread, as there); an axis it re-asks (a split the lead's label predates) is
        left out, an empty label that `triage eval` does not score."""
        labels = dict(review.labels or {})
        version = (review.classification or {}).get("taxonomy_version")
        if self._taxonomy is None or version in (None, self._taxonomy.ref):
            return labels
        return pending_plan(self._taxonomy, version).stored_labels(labels, text)

    @staticmethod
    def _revision_query(ticket_id: str, seq: int | None) -> Any:
        return select(RevisionRow).where(RevisionRow.ticket_id == ticket_id, RevisionRow.seq == (seq if seq is not None else -1))

    @staticmethod
    def _revisions(session: Session, ticket_id: str) -> list[RevisionRow]:
        return list(session.scalars(select(RevisionRow).where(RevisionRow.ticket_id == ticket_id).order_by(RevisionRow.seq)))

    @staticmethod
    def _get(session: Session, ticket_id: str) -> TicketRow:
        row = session.get(TicketRow, ticket_id)
        if row is None:
            raise NotFound(f"no ticket {shown(ticket_id)}; GET /v1/tickets (or `triage tickets list`) lists them")
        return row

    def _current_rows(self, session: Session, rows: Sequence[TicketRow]) -> dict[str, RevisionView]:
        """The current revision of each row. The plain `ticket_id IN` is what lets SQLite use the revisions' index:
        on the row-value IN alone it scanned every revision (and its classification JSON) for each queue page."""
        pairs = [(r.id, r.current_seq) for r in rows if r.current_seq is not None]
        if not pairs:
            return {}
        found = session.scalars(
            select(RevisionRow).where(
                RevisionRow.ticket_id.in_([ticket_id for ticket_id, _ in pairs]), tuple_(RevisionRow.ticket_id, RevisionRow.seq).in_(pairs)
            )
        )
        return {r.ticket_id: _revision_view(r, None, None) for r in found}

    def _view(self, session: Session, row: TicketRow) -> TicketView:
        messages = session.scalars(select(MessageRow).where(MessageRow.ticket_id == row.id).order_by(MessageRow.seq))
        current = session.scalars(self._revision_query(row.id, row.current_seq)).first() if row.current_seq else None
        review = None
        if current is not None and current.actor.startswith("user:"):
            review = session.scalars(
                select(ReviewRow).where(ReviewRow.ticket_id == row.id, ReviewRow.result_seq == current.seq)
            ).first()
        return TicketView(
            **_summary(row).model_dump(),
            body=row.body,
            created_by=row.created_by,
            messages=[MessageView(seq=m.seq, author=m.author, text=m.text, created_at=m.created_at) for m in messages],
            current=_revision_view(current, review, None) if current is not None else None,
        )


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
            held = _classification(current_row)
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
                fallback = _classification(new_row)
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
            return _classification(session.scalars(self._revision_query(ticket_id, seq)).first())

    def _reviewed_on_old_version(self, ids: Sequence[str], limit: int) -> set[str]:
        """Up to `limit` tickets whose current labels a lead set under another taxonomy version."""
        found: set[str] = set()
        for ticket_id in ids:
            if len(found) >= limit:
                break
            with self.records.read() as session:
                row = self._get(session, ticket_id)
                current = _classification(session.scalars(self._revision_query(ticket_id, row.current_seq)).first())
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
                held = _classification(session.scalars(self._revision_query(ticket_id, locked.current_seq)).first())
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


def check_label_filters(taxonomy: Taxonomy, **filters: str | None) -> None:
    """Refuse a label filter the taxonomy lacks: an unknown label is a typo, so say so rather than show nothing.
    An empty value (a cleared form field) is no filter, here and in `TicketRow.matching`."""
    wanted = {axis: value for axis, value in filters.items() if value}
    if not wanted:
        return
    try:
        validate_labels(taxonomy, wanted)
    except LabelRuleError as exc:
        raise Invalid(str(exc)) from exc


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
    actor = f"agent:{classification.model}" + (f"{_FOR_USER}{requested_by}" if requested_by else "")
    return actor[:_ACTOR_LENGTH]


def _requested_by(actor: str) -> str | None:
    """Who asked for a revision, from its actor: the user an agent revision ran for, else the actor itself."""
    if not actor.startswith("agent:"):
        return actor
    _, found, name = actor.partition(_FOR_USER)
    return f"user:{name}" if found else None


def _join(*parts: str) -> str:
    return "\n\n".join(p.strip() for p in parts if p and p.strip())


def _classification(revision: RevisionRow | None) -> Classification | None:
    if revision is None or revision.classification is None:
        return None
    return Classification.model_validate(revision.classification)


def _latest_human_labels(history: Sequence[RevisionRow]) -> dict[str, str] | None:
    """The labels a human vouched for last and nobody rejected: what the store should hold as verified."""
    rejected = {r.rejects for r in history if r.rejects is not None}
    for revision in sorted(history, key=lambda r: r.seq, reverse=True):
        if revision.actor.startswith("user:") and revision.labels and revision.seq not in rejected:
            return dict(revision.labels)
    return None


def _summary(row: TicketRow) -> TicketSummary:
    labelled = row.current_seq is not None
    return TicketSummary(
        id=row.id,
        external_id=row.external_id,
        subject=row.subject,
        preview=" ".join((row.body or "").split())[:120],
        channel=row.channel,
        created_at=row.created_at,
        updated_at=row.updated_at,
        labels={"service": row.current_service, "tier": row.current_tier, "channel": row.current_channel} if labelled else None,  # type: ignore[dict-item]
        decision=row.current_decision,
        confidence=row.current_confidence if labelled else None,
        current_seq=row.current_seq,
        revisions=row.last_seq,
        in_queue=row.in_queue,
    )


def _revision_view(row: RevisionRow, review: ReviewRow | None, rejected: int | None) -> RevisionView:
    return RevisionView(
        ticket_id=row.ticket_id,
        seq=row.seq,
        reason=row.reason,  # type: ignore[arg-type]
        actor=row.actor,
        started_at=row.started_at,
        created_at=row.created_at,
        supersedes=row.supersedes,
        changed_axes=list(row.changed_axes or []),
        labels=row.labels,
        classification=_classification(row),
        suggestion={a: AxisLabel.model_validate(s) for a, s in row.suggestion.items()} if row.suggestion else None,
        rejects=row.rejects,
        rejected_by=rejected,
        note=row.note,
        requested_by=_requested_by(row.actor),
        review=ReviewView(
            action=review.action, reviewer=review.reviewer, comment=review.comment, labels=review.labels,
            revision=review.revision_seq,
        )
        if review is not None
        else None,
    )


def _limit(limit: int) -> int:
    if not 1 <= limit <= MAX_PAGE:
        raise Invalid(f"limit must be between 1 and {MAX_PAGE}, not {limit}")
    return limit


def _encode_cursor(values: list[Any]) -> str:
    return base64.urlsafe_b64encode(json.dumps(values).encode()).decode().rstrip("=")


def _decode_cursor(cursor: str, kinds: tuple[type, ...]) -> list[Any]:
    """The values a `next_cursor` was made of, each of the kind its place holds (an int of the integer column's
    range, a finite float, a string without NUL): an edited cursor is a 422 here, not a query that fails."""
    try:
        values = json.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
    except (binascii.Error, ValueError, UnicodeDecodeError):
        values = None
    if not isinstance(values, list) or len(values) != len(kinds) or not all(map(_of_kind, values, kinds)):
        raise Invalid("bad cursor: pass the next_cursor of the previous page unchanged, or leave it out for the first page")
    return [float(v) if kind is float else v for v, kind in zip(values, kinds, strict=True)]


def _of_kind(value: object, kind: type) -> bool:
    if isinstance(value, bool):
        return False
    if kind is int:
        return isinstance(value, int) and -(2**31) <= value < 2**31
    if kind is float:
        return isinstance(value, int | float) and math.isfinite(value)
    return isinstance(value, str) and "\x00" not in value
