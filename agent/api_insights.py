"""`GET /v1/stats` and `GET /v1/stats/queue`: the KPIs of `agent/insights.py` over the records, for the UI and
any other dashboard. Include with `app.include_router(insights_router)`; it reads `app.state.records` (and the
service, for article titles and the draft floor) as `create_app` sets them.

The facts are read with a few column and JSON-path queries (no classification blob is parsed in Python) and
kept in memory; a call after writes re-reads only the tickets whose revisions or reviews are new (by id), and
everything when the counts show a row it could not see by id (e.g. a PostgreSQL transaction that committed late).
"""

from __future__ import annotations

import threading
from collections.abc import Collection
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, tzinfo
from typing import Annotated, Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from fastapi import APIRouter, Depends, Query, Request
from fastapi.concurrency import run_in_threadpool
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from agent.api_guards import CreatedAfter, CreatedBefore, UtcTime, check_range, needs
from agent.auth import Principal
from agent.insights import GroupBy, TicketFact, filter_facts, stats_report
from agent.reader import Invalid, check_label_filters
from agent.records import Records, ReviewRow, RevisionRow, TicketRow

Lead = Annotated[Principal, Depends(needs("lead"))]
TEXT_CHARS = 600  # of the body, for KB-gap clustering

router = APIRouter(tags=["insights"])


INCREMENTAL_LIMIT = 2000  # more changed tickets than this: read everything again


@dataclass
class _Cached:
    revisions: tuple[int, int]  # (max id, count)
    reviews: tuple[int, int]
    facts: dict[str, TicketFact]


_lock = threading.Lock()


def _state(session: Session, table: type[RevisionRow] | type[ReviewRow]) -> tuple[int, int]:
    biggest, count = session.execute(select(func.max(table.id), func.count(table.id))).one()
    return int(biggest or 0), int(count or 0)


def load_facts(session: Session, ticket_ids: Collection[str] | None = None) -> dict[str, TicketFact]:
    """Every ticket (or those of `ticket_ids`) as a `TicketFact`, by id, in three queries."""

    def only(column: Any) -> list[Any]:
        return [] if ticket_ids is None else [column.in_(list(ticket_ids))]

    clf = RevisionRow.classification
    agent_rows = session.execute(
        select(
            RevisionRow.ticket_id,
            RevisionRow.seq,
            RevisionRow.created_at,
            RevisionRow.labels,
            clf["decision"].as_string(),
            clf[("evidence", "articles", 0, "id")].as_string(),
            clf[("evidence", "articles", 0, "score")].as_float(),
            clf[("draft", "citations")],
            RevisionRow.actor,
        )
        # a lead's too: the current revision's draft is the one that counts, and a review stores what the lead sent
        .where(RevisionRow.classification.is_not(None), *only(RevisionRow.ticket_id))
        .order_by(RevisionRow.ticket_id, RevisionRow.seq)
    ).all()
    first_agent: dict[str, Any] = {}
    first_auto: dict[str, Any] = {}
    latest_agent: dict[str, Any] = {}
    agent_labels: dict[tuple[str, int], dict[str, str]] = {}
    cited: dict[tuple[str, int], tuple[str, ...]] = {}
    for row in agent_rows:
        cited[(row[0], row[1])] = tuple(dict.fromkeys(str(c) for c in row[7] or []))
        if row[8].startswith("user:"):
            continue
        # the agent's revisions, and the migration's: its labels are the agent's moved to the new ids, and a lead
        # who reviews a migrated ticket looks at them
        agent_labels[(row[0], row[1])] = row[3] or {}
        if not row[8].startswith("agent:"):
            continue
        first_agent.setdefault(row[0], row)
        if row[4] == "auto_apply":
            first_auto.setdefault(row[0], row[2])
        latest_agent[row[0]] = row

    first_review: dict[str, Any] = {}
    for review in session.execute(
        select(ReviewRow.ticket_id, ReviewRow.revision_seq, ReviewRow.action, ReviewRow.labels, ReviewRow.created_at)
        .where(*only(ReviewRow.ticket_id))
        .order_by(ReviewRow.id)
    ):
        first_review.setdefault(review[0], review)

    facts: dict[str, TicketFact] = {}
    for t in session.execute(
        select(
            TicketRow.id,
            TicketRow.created_at,
            TicketRow.subject,
            func.substr(TicketRow.body, 1, TEXT_CHARS),
            TicketRow.current_service,
            TicketRow.current_tier,
            TicketRow.current_channel,
            TicketRow.channel,
            TicketRow.current_seq,
        ).where(*only(TicketRow.id))
    ):
        ticket_id = t[0]
        first, latest, review = first_agent.get(ticket_id), latest_agent.get(ticket_id), first_review.get(ticket_id)
        looked_at = agent_labels.get((ticket_id, review[1])) if review is not None else None
        facts[ticket_id] = TicketFact(
            id=ticket_id,
            created_at=t[1],
            labels={k: v for k, v in (("service", t[4]), ("tier", t[5]), ("channel", t[6] or t[7])) if v},
            text="\n".join(p for p in (t[2], t[3]) if p),
            agent_decision=first[4] if first is not None else None,
            agent_at=first[2] if first is not None else None,
            auto_applied_at=first_auto.get(ticket_id),
            agent_labels=looked_at or ((first[3] or {}) if first is not None else {}),
            review_action=review[2] if review is not None and looked_at is not None else None,
            review_labels=(review[3] or {}) if review is not None else {},
            reviewed_at=review[4] if review is not None else None,
            best_article_id=latest[5] if latest is not None else None,
            best_article_score=latest[6] if latest is not None else None,
            # the draft in force (a lead's sent answer, a re-classification's new one), not every draft ever written
            citations=cited.get((ticket_id, t[8]), ()),
        )
    return facts


def cached_facts(request: Request) -> list[TicketFact]:
    """The facts of every ticket, read again only where revisions or reviews were written since the last call."""
    records: Records = request.app.state.records
    with _lock, records.read() as session:
        revisions, reviews = _state(session, RevisionRow), _state(session, ReviewRow)
        cached: _Cached | None = getattr(request.app.state, "insights_cache", None)
        if cached is not None and (cached.revisions, cached.reviews) == (revisions, reviews):
            return list(cached.facts.values())
        facts: dict[str, TicketFact] | None = None
        if cached is not None:
            new_revisions = session.scalars(select(RevisionRow.ticket_id).where(RevisionRow.id > cached.revisions[0])).all()
            new_reviews = session.scalars(select(ReviewRow.ticket_id).where(ReviewRow.id > cached.reviews[0])).all()
            seen_all = len(new_revisions) == revisions[1] - cached.revisions[1] and len(new_reviews) == reviews[1] - cached.reviews[1]
            changed = set(new_revisions) | set(new_reviews)
            if seen_all and len(changed) <= INCREMENTAL_LIMIT:
                facts = {**cached.facts, **load_facts(session, changed)}
        if facts is None:
            facts = load_facts(session)
        request.app.state.insights_cache = _Cached(revisions, reviews, facts)
        return list(facts.values())


def _titles(request: Request, ids: list[str]) -> dict[str, str]:
    service = getattr(request.app.state, "service", None)
    if service is None or not ids:
        return {}
    got = service.store.articles.get(ids=ids, include=["metadatas"])
    return {i: (m or {}).get("title", i) for i, m in zip(got["ids"], got["metadatas"] or [], strict=False)}


@router.get("/v1/stats")
async def stats(
    request: Request,
    who: Lead,
    days: Annotated[int | None, Query(ge=1, le=3650, description="Tickets created in the last N days; default all.")] = None,
    since: Annotated[datetime | None, Query(description="Created at or after (ISO 8601); overrides `days`."), UtcTime] = None,
    until: Annotated[datetime | None, Query(description="Created before (ISO 8601)."), UtcTime] = None,
    service: str | None = None,
    channel: str | None = None,
    tier: str | None = None,
    group_by: GroupBy = "service",
    bucket: Literal["day", "week"] | None = Query(default=None, description="Default: day up to 92 days, else week."),
    gap_threshold: Annotated[float | None, Query(ge=0.0, le=1.0, description="Default: the draft floor.")] = None,
    tz: Annotated[
        str | None, Query(max_length=64, description="IANA time zone whose calendar days the volumes are counted in (e.g. America/New_York); default UTC.")
    ] = None,
) -> dict[str, Any]:
    """KPIs per service, channel or tier: volumes over time; shares auto-applied, suggested and sent to review;
    the human overturn rate per label; time from intake to a decision; the KB articles drafts cite; KB gaps
    (clusters of recent tickets whose best KB match is weak, with examples)."""
    now = datetime.now(UTC)
    start = since or (now - timedelta(days=days) if days else None)
    end = until
    check_range(start, end, ("since" if since else f"now minus days={days}", "until"))
    _known_labels(request, service=service, channel=channel, tier=tier)
    zone = time_zone(tz)

    def compute() -> dict[str, Any]:
        facts = filter_facts(cached_facts(request), since=start, until=end, service=service, channel=channel, tier=tier)
        span = ((end or now) - (start or min((f.created_at for f in facts), default=now))).days
        settings = getattr(getattr(request.app.state, "service", None), "settings", None)
        threshold = gap_threshold if gap_threshold is not None else getattr(settings, "draft_min_article_score", 0.35)
        report = stats_report(facts, now=now, by=group_by, bucket=bucket or ("day" if span <= 92 else "week"), gap_threshold=threshold,
                              zone=zone)
        titles = _titles(request, [row["article_id"] for row in report["cited_articles"]])
        for row in report["cited_articles"]:
            row["title"] = titles.get(row["article_id"], row["title"])
        return {
            "generated_at": now.isoformat(),
            "window": {"since": start.isoformat() if start else None, "until": end.isoformat() if end else None},
            "filters": {"service": service, "channel": channel, "tier": tier},
            "timezone": str(zone),
            **report,
        }

    return await run_in_threadpool(compute)


@router.get("/v1/stats/queue")
def queue_counts(
    request: Request,
    who: Lead,
    service: str | None = None,
    channel: str | None = None,
    tier: str | None = None,
    created_after: CreatedAfter = None,
    created_before: CreatedBefore = None,
) -> dict[str, int]:
    """Tickets per state: in the review queue (`needs_review`, `suggest`), settled by the agent (`auto_apply`),
    settled by a lead (`reviewed`), and `total`; filtered on the current labels and the creation time like the
    queue, so the counts above a filtered queue are its counts."""
    check_range(created_after, created_before, ("created_after", "created_before"))
    _known_labels(request, service=service, channel=channel, tier=tier)
    records: Records = request.app.state.records
    wanted = TicketRow.matching(service=service, tier=tier, channel=channel, created_after=created_after, created_before=created_before)
    reviewed = select(ReviewRow.id).where(ReviewRow.ticket_id == TicketRow.id).exists()
    with records.read() as session:
        rows = session.execute(
            select(TicketRow.in_queue, TicketRow.current_decision, reviewed.label("reviewed"), func.count())
            .where(*wanted)
            .group_by(TicketRow.in_queue, TicketRow.current_decision, "reviewed")
        ).all()
    counts = {"needs_review": 0, "suggest": 0, "auto_apply": 0, "reviewed": 0, "total": 0}
    for in_queue, decision, was_reviewed, n in rows:
        counts["total"] += n
        if in_queue:
            counts[decision if decision in ("needs_review", "suggest") else "needs_review"] += n
        else:
            counts["reviewed" if was_reviewed else "auto_apply"] += n
    return counts


def time_zone(name: str | None) -> tzinfo:
    """The zone whose days the volumes count: a ticket at 21:00 in New York is that day's there, the next one in
    UTC. An unknown name is a 422 with an example, not a silent UTC."""
    if not name:
        return UTC
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError, OSError) as exc:  # a typo, a path, a folder such as "America"
        raise Invalid(f"unknown time zone tz={name!r}; send an IANA name such as Europe/Paris or America/New_York, or leave it out for UTC") from exc


def _known_labels(request: Request, **filters: str | None) -> None:
    """Label filters as the review queue takes them: an unknown label is a 422 naming the taxonomy's labels."""
    service = getattr(request.app.state, "service", None)
    if service is not None:
        check_label_filters(service.taxonomy, **filters)
