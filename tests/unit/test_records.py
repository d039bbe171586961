"""The records on both backends: real SQLite (WAL) files and a real PostgreSQL 15 (tests/pg.py)."""

from __future__ import annotations

import stat
import threading
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import delete, inspect, select, text, update
from sqlalchemy.exc import DBAPIError, IntegrityError

from agent.auth import (
    AuthError,
    authenticate,
    check_key_name,
    create_key,
    ensure_admin_key,
    list_keys,
    require,
    revoke_key,
)
from agent.records import ApiKeyRow, Base, MessageRow, Records, RevisionRow, TicketRow, new_id, utcnow
from agent.settings import Settings


def add_ticket(records: Records, *, key: str | None = None) -> str:
    ticket_id = new_id("tk")
    now = utcnow()
    with records.write() as session:
        session.add(
            TicketRow(
                id=ticket_id, subject="s", body="b", created_by="test", created_at=now, updated_at=now,
                idempotency_key=key, message_count=0, last_seq=0, in_queue=False, queue_rank=0,
            )
        )
    return ticket_id


def add_revision(records: Records, ticket_id: str, seq: int) -> None:
    now = utcnow()
    with records.write() as session:
        session.add(
            RevisionRow(
                ticket_id=ticket_id, seq=seq, reason="new_ticket", actor="agent:x", classification={"k": 1},
                labels={"service": "cloud"}, changed_axes=["service"], started_at=now, created_at=now,
            )
        )


def test_migrations_build_exactly_the_models_and_rerun_as_a_no_op(records: Records) -> None:
    records.upgrade()  # a second start changes nothing
    with records.engine.connect() as conn:
        assert compare_metadata(MigrationContext.configure(conn), Base.metadata) == []
        assert conn.execute(text("SELECT version_num FROM alembic_version")).scalar() == "0003"
    assert {"tickets", "messages", "revisions", "reviews", "api_keys", "taxonomy_versions", "migration_jobs"} <= set(
        inspect(records.engine).get_table_names()
    )


def test_a_database_made_by_the_previous_release_upgrades_in_place(tmp_path: Path) -> None:
    """A deployment at revision 0001 (before migration jobs) gets the new table and indexes on its next start; its tickets stay."""
    url = f"sqlite:///{tmp_path / 'old.db'}"
    old = Records(url)
    old.upgrade("0001")
    ticket_id = add_ticket(old)
    assert "migration_jobs" not in inspect(old.engine).get_table_names()
    old.close()
    recs = Records.open(Settings(data_dir=tmp_path, database_url=url))
    try:
        assert "migration_jobs" in inspect(recs.engine).get_table_names()
        assert "ix_tickets_external_id" in {index["name"] for index in inspect(recs.engine).get_indexes("tickets")}
        with recs.read() as session:
            assert session.get(TicketRow, ticket_id) is not None
            assert session.execute(text("SELECT version_num FROM alembic_version")).scalar() == "0003"
    finally:
        recs.close()


def test_sqlite_runs_in_wal_mode_with_full_sync(tmp_path: Path) -> None:
    recs = Records.open(Settings(data_dir=tmp_path / "data"))
    with recs.engine.connect() as conn:
        assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
        assert conn.exec_driver_sql("PRAGMA synchronous").scalar() == 2  # FULL
    assert (tmp_path / "data" / "triage.db").is_file()
    recs.close()


@pytest.mark.parametrize("table", [RevisionRow, MessageRow])
def test_history_tables_refuse_updates_and_deletes(records: Records, table: type) -> None:
    ticket_id = add_ticket(records)
    add_revision(records, ticket_id, 1)
    now = utcnow()
    with records.write() as session:
        session.add(MessageRow(ticket_id=ticket_id, seq=1, author="customer", text="hi", created_at=now))
    for statement in (update(table).values(ticket_id=ticket_id), delete(table)):
        with pytest.raises(DBAPIError, match="append-only"):
            with records.write() as session:
                session.execute(statement)
    with records.read() as session:
        assert session.scalar(select(table).where(table.ticket_id == ticket_id)) is not None


def test_a_revision_seq_is_taken_once_per_ticket(records: Records) -> None:
    ticket_id = add_ticket(records)
    add_revision(records, ticket_id, 1)
    with pytest.raises(IntegrityError):
        add_revision(records, ticket_id, 1)
    add_revision(records, add_ticket(records), 1)  # the same seq on another ticket is fine


def test_an_idempotency_key_is_taken_once(records: Records) -> None:
    add_ticket(records, key="bot:abc")
    with pytest.raises(IntegrityError):
        add_ticket(records, key="bot:abc")


def test_timestamps_come_back_as_the_same_utc_instant(records: Records) -> None:
    ticket_id = add_ticket(records)
    moment = datetime(2025, 3, 1, 12, 30, 15, 123456, tzinfo=timezone(timedelta(hours=2)))
    with records.write() as session:
        session.get(TicketRow, ticket_id).updated_at = moment
    with records.read() as session:
        stored = session.get(TicketRow, ticket_id).updated_at
    assert stored == moment and stored.tzinfo == UTC
    with pytest.raises(Exception, match="naive datetime"):
        with records.write() as session:
            session.get(TicketRow, ticket_id).updated_at = datetime(2025, 1, 1)


def test_concurrent_writers_queue_up_without_losing_an_update(records: Records) -> None:
    """Read-modify-write under the row lock (PostgreSQL) / BEGIN IMMEDIATE (SQLite): no lost update, no 'locked'."""
    ticket_id = add_ticket(records)
    errors: list[BaseException] = []

    def bump(times: int) -> None:
        try:
            for _ in range(times):
                with records.write() as session:
                    row = session.get(TicketRow, ticket_id, with_for_update=True)
                    row.last_seq += 1
        except BaseException as exc:  # noqa: BLE001 - collected and asserted below
            errors.append(exc)

    threads = [threading.Thread(target=bump, args=(20,)) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    with records.read() as session:
        assert session.get(TicketRow, ticket_id).last_seq == 120


# ---------------------------------------------------------------- API keys


def test_a_key_is_stored_only_as_its_hash(records: Records) -> None:
    secret, info = create_key(records, scope="lead", name="alice")
    with records.read() as session:
        row = session.get(ApiKeyRow, info.id)
        stored = " ".join(str(getattr(row, c.key)) for c in ApiKeyRow.__table__.columns)
    assert secret not in stored and secret[4:20] not in stored
    who = authenticate(records, secret)
    assert (who.name, who.scope) == ("alice", "lead")
    with pytest.raises(AuthError) as unknown:
        authenticate(records, secret + "x")
    assert unknown.value.status == 401


def test_scopes_are_ordered_and_revocation_is_immediate(records: Records) -> None:
    bot_secret, bot = create_key(records, scope="bot", name="helpdesk")
    admin_secret, _ = create_key(records, scope="admin", name="root")
    require(authenticate(records, admin_secret), "lead")
    with pytest.raises(AuthError) as denied:
        require(authenticate(records, bot_secret), "lead")
    assert denied.value.status == 403 and "lead" in str(denied.value)
    revoke_key(records, bot.id)
    with pytest.raises(AuthError, match="revoked"):
        authenticate(records, bot_secret)
    assert [k.revoked_at is not None for k in list_keys(records)] == [True, False]
    with pytest.raises(ValueError, match="unknown scope"):
        create_key(records, scope="root", name="x")


@pytest.mark.parametrize("name", ["alice\nuser:admin <script>", "bob smith", ".hidden", "", "x" * 65, "a\u202eb"])
def test_a_key_name_that_could_forge_a_timeline_line_is_refused_with_the_rule(name: str) -> None:
    with pytest.raises(ValueError, match="use 1 to 64 letters, digits"):
        check_key_name(name)


def test_a_key_name_keeps_to_one_printable_word() -> None:
    assert [check_key_name(n) for n in ("alice", " helpdesk-bot ", "ops.team_2@acme.example", "x" * 64)] == [
        "alice", "helpdesk-bot", "ops.team_2@acme.example", "x" * 64,
    ]


def test_first_start_creates_one_admin_key_in_a_private_file(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path / "data")
    key, path = ensure_admin_key(settings)
    assert key is not None and path == settings.data_dir / "admin.key"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert path.read_text().strip() == key
    assert ensure_admin_key(settings) == (None, path)  # printed once only
    recs = Records.open(settings)
    assert authenticate(recs, key).scope == "admin"
    recs.close()
    (settings.data_dir / "triage.db").unlink()  # records reset: the stale file gets a new key
    for suffix in ("-wal", "-shm"):
        (settings.data_dir / f"triage.db{suffix}").unlink(missing_ok=True)
    new_key, _ = ensure_admin_key(settings)
    assert new_key is not None and new_key != key and path.read_text().strip() == new_key
