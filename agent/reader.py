"""The read side of the ticket records: tickets, their timelines, the review queue and the reviewed tickets an
export writes, and the errors every use case raises (each maps to one HTTP status).

Apart from agent/lifecycle.py (the writes, which classify and so load the models) on purpose: `triage tickets
list|show|export` and `triage history` read the records only, and importing the write side (the graph, the
classifier head, scikit-learn, Chroma) made each of them take ~6 s on 2 cores before it printed a line.
"""

from __future__ import annotations

import base64
import binascii
import json
import math
from collections.abc import Iterator, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import select, tuple_
from sqlalchemy.orm import Session

from agent.contracts import (
    AxisLabel,
    Classification,
    Decision,
    MessageView,
    Page,
    QueueItem,
    ReviewedTicket,
    ReviewView,
    RevisionView,
    Taxonomy,
    TicketSummary,
    TicketView,
)
from agent.migration import pending_plan
from agent.records import MessageRow, Records, ReviewRow, RevisionRow, TaxonomyVersionRow, TicketRow, as_utc
from agent.revisions import LabelRuleError, rejected_by, validate_labels

MAX_PAGE = 200

FOR_USER = " for user:"  # joins an agent actor to the key that asked: agent:<model> for user:<key name>


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


def _requested_by(actor: str) -> str | None:
    """Who asked for a revision, from its actor: the user an agent revision ran for, else the actor itself."""
    if not actor.startswith("agent:"):
        return actor
    _, found, name = actor.partition(FOR_USER)
    return f"user:{name}" if found else None


def stored_classification(revision: RevisionRow | None) -> Classification | None:
    if revision is None or revision.classification is None:
        return None
    return Classification.model_validate(revision.classification)


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
        classification=stored_classification(row),
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
