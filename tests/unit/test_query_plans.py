"""The read paths a review UI and a bot call every few seconds use an index, never a scan of a whole table.

Asserted on SQLite's `EXPLAIN QUERY PLAN` of the SQL the ORM emits, not on timings: at 20,000 tickets a page of the
review queue scanned every revision (each with its classification JSON) to find the 50 current ones.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import event

from agent.reader import TicketReader
from agent.records import Records, RevisionRow, TicketRow, new_id, utcnow


@pytest.fixture
def records(tmp_path: Path) -> Iterator[Records]:
    recs = Records(f"sqlite:///{tmp_path / 'triage.db'}")
    recs.upgrade()
    now = utcnow()
    with recs.write() as session:
        for i in range(30):
            ticket_id = new_id("tk")
            session.add(
                TicketRow(
                    id=ticket_id, external_id=f"ext-{i}", subject="s", body="b", created_by="test", created_at=now, updated_at=now,
                    message_count=0, last_seq=2, current_seq=2, current_decision="needs_review", current_confidence=0.4,
                    current_service="cloud", current_tier="L2", current_channel="email", in_queue=True, queue_rank=0,
                )
            )
            session.flush()
            for seq in (1, 2):
                session.add(
                    RevisionRow(
                        ticket_id=ticket_id, seq=seq, reason="new_ticket", actor="agent:x", classification=None,
                        labels={"service": "cloud", "tier": "L2", "channel": "email"}, changed_axes=["service"], started_at=now, created_at=now,
                    )
                )
    yield recs
    recs.close()


def plans(records: Records, read: Callable[[], Any]) -> list[str]:
    """Every step of the query plans of the statements `read` runs."""
    statements: list[tuple[str, Any]] = []

    def capture(_conn: Any, _cursor: Any, statement: str, parameters: Any, _context: Any, _many: bool) -> None:
        if statement.lstrip().upper().startswith("SELECT"):
            statements.append((statement, parameters))

    event.listen(records.engine, "before_cursor_execute", capture)
    try:
        read()
    finally:
        event.remove(records.engine, "before_cursor_execute", capture)
    assert statements
    connection = records.engine.raw_connection()
    try:
        return [row[3] for statement, parameters in statements for row in connection.execute(f"EXPLAIN QUERY PLAN {statement}", parameters)]
    finally:
        connection.close()


def scans(steps: list[str]) -> list[str]:
    return [step for step in steps if step.startswith("SCAN") and "CONSTANT ROW" not in step]


def test_a_review_queue_page_reads_its_current_revisions_by_index(records: Records) -> None:
    page = TicketReader(records).review_queue(limit=10)
    assert len(page.items) == 10 and all(item.current is not None and item.current.seq == 2 for item in page.items)
    assert scans(plans(records, lambda: TicketReader(records).review_queue(limit=10))) == []


def test_looking_a_ticket_up_by_external_id_uses_an_index(records: Records) -> None:
    page = TicketReader(records).list_tickets(external_id="ext-7")
    assert [item.external_id for item in page.items] == ["ext-7"]
    steps = plans(records, lambda: TicketReader(records).list_tickets(external_id="ext-7"))
    assert scans(steps) == [] and any("ix_tickets_external_id" in step for step in steps)
