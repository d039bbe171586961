"""The records: tickets, their messages, revisions (append-only), reviews, API keys and taxonomy versions.

SQLAlchemy 2 over SQLite (WAL, the embedded default at data_dir/triage.db) or PostgreSQL (psycopg 3, by
`TRIAGE_DATABASE_URL`). The schema is owned by the Alembic migrations in `migrations/`; `Records.open`
applies them, so a fresh data directory and an old one both come up at the current schema.

Why the SQLite set-up looks the way it does: every write transaction starts with `BEGIN IMMEDIATE`, so two
writers queue on the busy timeout instead of failing with "database is locked" when a read lock would have to
be upgraded; `synchronous=FULL` makes an acknowledged commit survive a power cut, not only a killed process.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import (
    JSON,
    Boolean,
    DateTime,
    Engine,
    Float,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    TypeDecorator,
    UniqueConstraint,
    create_engine,
    event,
    text,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.engine import Dialect, make_url
from sqlalchemy.exc import ArgumentError
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column, sessionmaker
from sqlalchemy.sql.elements import ColumnElement

from agent.settings import REPO_ROOT, Settings
from agent.urls import shown_url

MIGRATIONS_DIR = REPO_ROOT / "migrations"
_ADVISORY_LOCK = 7_342_001  # serialises migrations when several API workers start against one PostgreSQL


class RecordsError(RuntimeError):
    """The records database cannot be used; the message says what to check."""


# ---------------------------------------------------------------- column types


class UTCDateTime(TypeDecorator[datetime]):
    """Timezone-aware UTC in Python on both backends (SQLite keeps naive text; PostgreSQL timestamptz)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to a UTC column; use agent.records.utcnow()")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return as_utc(value)


JSONType = JSON().with_variant(JSONB(), "postgresql")


def utcnow() -> datetime:
    return datetime.now(UTC)


def as_utc(moment: datetime) -> datetime:
    """An aware UTC time; a naive one is read as UTC (what the database and API callers send)."""
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


_CROCKFORD = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"


def new_id(prefix: str) -> str:
    """A ULID-style id (48-bit millisecond time + 80 random bits): sortable by creation, safe to show."""
    value = (int(time.time() * 1000) << 80) | secrets.randbits(80)
    chars = []
    for _ in range(26):
        value, digit = divmod(value, 32)
        chars.append(_CROCKFORD[digit])
    return f"{prefix}_{''.join(reversed(chars)).lower()}"


# ---------------------------------------------------------------- tables


class Base(DeclarativeBase):
    type_annotation_map = {datetime: UTCDateTime, dict[str, Any]: JSONType, list[str]: JSONType}


class TicketRow(Base):
    """A ticket and, denormalised from its revisions, what the queue filters and sorts on."""

    __tablename__ = "tickets"

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    external_id: Mapped[str | None] = mapped_column(String(200), index=True)  # GET /v1/tickets?external_id=
    subject: Mapped[str] = mapped_column(Text, default="")
    body: Mapped[str] = mapped_column(Text, default="")
    channel: Mapped[str | None] = mapped_column(String(64))
    created_by: Mapped[str] = mapped_column(String(200))
    created_at: Mapped[datetime]
    updated_at: Mapped[datetime]
    idempotency_key: Mapped[str | None] = mapped_column(String(300), unique=True)
    request_sha: Mapped[str | None] = mapped_column(String(64))
    message_count: Mapped[int] = mapped_column(Integer, default=0)
    last_seq: Mapped[int] = mapped_column(Integer, default=0)
    # the current labels (latest revision not rejected by a human), kept in the same transaction as the revision
    current_seq: Mapped[int | None] = mapped_column(Integer)
    current_decision: Mapped[str | None] = mapped_column(String(16))
    current_confidence: Mapped[float | None] = mapped_column(Float)
    current_service: Mapped[str | None] = mapped_column(String(64))
    current_tier: Mapped[str | None] = mapped_column(String(64))
    current_channel: Mapped[str | None] = mapped_column(String(64))
    in_queue: Mapped[bool] = mapped_column(Boolean, default=False)
    queue_rank: Mapped[int] = mapped_column(Integer, default=9)

    __table_args__ = (Index("ix_tickets_queue", "in_queue", "queue_rank", "current_confidence", "id"),)

    @staticmethod
    def matching(
        *,
        service: str | None = None,
        tier: str | None = None,
        channel: str | None = None,
        created_after: datetime | None = None,
        created_before: datetime | None = None,
    ) -> list[ColumnElement[bool]]:
        """WHERE clauses on the current labels and the creation time (a naive time is UTC): the review queue and
        its counts filter alike. An empty label (`?service=`, a cleared form field) is no filter, not "no label"."""
        clauses: list[ColumnElement[bool]] = [
            column == value
            for column, value in ((TicketRow.current_service, service), (TicketRow.current_tier, tier), (TicketRow.current_channel, channel))
            if value
        ]
        if created_after is not None:
            clauses.append(TicketRow.created_at >= as_utc(created_after))
        if created_before is not None:
            clauses.append(TicketRow.created_at < as_utc(created_before))
        return clauses


class MessageRow(Base):
    __tablename__ = "messages"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    ticket_id: Mapped[str] = mapped_column(ForeignKey("tickets.id"), index=True)
    seq: Mapped[int]
    author: Mapped[str] = mapped_column(String(16))
    text: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime]

    __table_args__ = (UniqueConstraint("ticket_id", "seq", name="uq_messages_ticket_seq"),)


class RevisionRow(Base):
    """One classification event. Never updated (the migration installs triggers that refuse it)."""

    __tablename__ = "revisions"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    ticket_id: Mapped[str] = mapped_column(ForeignKey("tickets.id"), index=True)
    seq: Mapped[int]
    reason: Mapped[str] = mapped_column(String(32))
    actor: Mapped[str] = mapped_column(String(300))
    classification: Mapped[dict[str, Any] | None]  # agent.contracts.Classification; None for a reject marker
    labels: Mapped[dict[str, Any] | None]  # {axis: label}, for reading without parsing the classification
    changed_axes: Mapped[list[str]]
    suggestion: Mapped[dict[str, Any] | None]  # the agent's own labels where a human's or the tier floor won
    supersedes: Mapped[int | None]  # seq of the revision that was current before this one
    rejects: Mapped[int | None]  # seq this reject marker rejects
    note: Mapped[str | None] = mapped_column(Text)
    started_at: Mapped[datetime]
    created_at: Mapped[datetime]

    __table_args__ = (UniqueConstraint("ticket_id", "seq", name="uq_revisions_ticket_seq"),)


class ReviewRow(Base):
    __tablename__ = "reviews"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    ticket_id: Mapped[str] = mapped_column(ForeignKey("tickets.id"), index=True)
    revision_seq: Mapped[int]  # the revision the lead looked at
    result_seq: Mapped[int]  # the revision the review wrote
    action: Mapped[str] = mapped_column(String(8))
    labels: Mapped[dict[str, Any] | None]
    comment: Mapped[str | None] = mapped_column(Text)
    reviewer: Mapped[str] = mapped_column(String(200))
    created_at: Mapped[datetime]


class ApiKeyRow(Base):
    """An API key: only the SHA-256 of the secret is kept, so a leaked database leaks no key."""

    __tablename__ = "api_keys"

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    scope: Mapped[str] = mapped_column(String(16))
    key_hash: Mapped[str] = mapped_column(String(64), unique=True)
    created_by: Mapped[str] = mapped_column(String(200))
    created_at: Mapped[datetime]
    revoked_at: Mapped[datetime | None]


class TaxonomyVersionRow(Base):
    __tablename__ = "taxonomy_versions"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    ref: Mapped[str] = mapped_column(String(200), unique=True)
    name: Mapped[str] = mapped_column(String(120))
    version: Mapped[str] = mapped_column(String(80))
    sha256: Mapped[str] = mapped_column(String(64))
    content: Mapped[dict[str, Any]]
    created_at: Mapped[datetime]


class MigrationJobRow(Base):
    """A taxonomy migration run in the background for the HTTP API: its progress is readable from any worker,
    and a heartbeat (`updated_at`) tells a running job from one whose worker stopped."""

    __tablename__ = "migration_jobs"

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    state: Mapped[str] = mapped_column(String(16))  # running | done | failed
    commit: Mapped[bool] = mapped_column(Boolean)
    previous: Mapped[str] = mapped_column(String(200))
    target: Mapped[str] = mapped_column(String(200))
    reviewed_sample: Mapped[int] = mapped_column(Integer)
    done: Mapped[int] = mapped_column(Integer, default=0)
    total: Mapped[int] = mapped_column(Integer, default=0)
    created_by: Mapped[str] = mapped_column(String(200))
    started_at: Mapped[datetime]
    updated_at: Mapped[datetime]
    finished_at: Mapped[datetime | None]
    report: Mapped[dict[str, Any] | None]  # agent.contracts.MigrationReport once done
    error: Mapped[str | None] = mapped_column(Text)

    __table_args__ = (Index("ix_migration_jobs_started", "started_at"),)


# ---------------------------------------------------------------- engine and sessions


def normalise_url(url: str) -> str:
    """`postgresql://` means psycopg 3 here (SQLAlchemy would otherwise pick psycopg2, which is not installed)."""
    for plain in ("postgresql://", "postgres://"):
        if url.startswith(plain):
            return "postgresql+psycopg://" + url[len(plain) :]
    return url


def display_url(url: str) -> str:
    """The database URL as messages show it: the password masked, since a terminal or a log is no place for it."""
    try:
        return make_url(normalise_url(url)).render_as_string(hide_password=True)
    except ArgumentError:
        return shown_url(url)


def open_problem(exc: Exception, url: str) -> tuple[str, bool]:
    """Why `Records.open` failed, on one line with what to do, and whether it is the configuration (a wrong URL or
    data directory: the user's to fix) rather than the database itself (down, or a damaged file). SQLAlchemy's own
    text adds a 'Background on this error' line and psycopg a hint line, which scatter a one-line CLI error."""
    where = f"the records at {display_url(url)}"
    if isinstance(exc, ArgumentError):
        return f"TRIAGE_DATABASE_URL {shown_url(url)[:80]!r} is not a database URL; use sqlite:///PATH or postgresql://USER@HOST/DB", True
    if isinstance(exc, RecordsError):
        return f"cannot open {where}: {exc}", True
    if isinstance(exc, OSError):
        name = f" {exc.filename}" if exc.filename else ""
        return (f"cannot open {where}: {exc.strerror or exc}{name}; TRIAGE_DATA_DIR must be a directory this user can "
                "write (it is created if missing)"), True
    reason = " ".join(str(getattr(exc, "orig", None) or exc).split())
    if make_url(normalise_url(url)).get_backend_name() == "sqlite":
        if "not a database" in reason or "malformed" in reason:
            return (f"cannot open {where}: the file is not a usable SQLite database ({reason}); move it aside to start "
                    "an empty one, or point TRIAGE_DATA_DIR or TRIAGE_DATABASE_URL at the right one"), False
        return f"cannot open {where}: {reason}", False
    return f"cannot open {where}: {reason}; check that the server is up and that TRIAGE_DATABASE_URL is right", False


def _sqlite_engine(url: str) -> Engine:
    path = make_url(url).database
    if path and path != ":memory:":
        Path(path).parent.mkdir(parents=True, exist_ok=True)
    engine = create_engine(url, connect_args={"check_same_thread": False, "timeout": 30}, pool_size=16, max_overflow=16)

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn: Any, _record: Any) -> None:
        dbapi_conn.isolation_level = None  # SQLAlchemy's "begin" event issues BEGIN itself (below)
        cursor = dbapi_conn.cursor()
        for pragma in ("journal_mode=WAL", "synchronous=FULL", "foreign_keys=ON", "busy_timeout=30000"):
            cursor.execute(f"PRAGMA {pragma}")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Any) -> None:
        conn.exec_driver_sql("BEGIN IMMEDIATE" if conn.get_execution_options().get("triage_write") else "BEGIN")

    return engine


class Records:
    """The records database: an engine, a session factory for reads and one for writes."""

    def __init__(self, url: str) -> None:
        self.url = normalise_url(url)
        self.dialect = make_url(self.url).get_backend_name()
        if self.dialect == "sqlite":
            self.engine = _sqlite_engine(self.url)
        elif self.dialect == "postgresql":
            self.engine = create_engine(self.url, pool_pre_ping=True, pool_size=16, max_overflow=16)
        else:
            raise RecordsError(f"unsupported database {self.dialect!r}: use sqlite:///PATH or postgresql://USER@HOST/DB")
        self._reader = sessionmaker(self.engine, expire_on_commit=False)
        self._writer = sessionmaker(self.engine.execution_options(triage_write=True), expire_on_commit=False)

    @classmethod
    def open(cls, settings: Settings, *, migrate: bool = True) -> Records:
        records = cls(settings.resolved_database_url)
        if migrate:
            records.upgrade()
        return records

    def upgrade(self, revision: str = "head") -> None:
        """Apply the Alembic migrations, one migrating process at a time."""
        from alembic import command

        config = alembic_config(self.url)
        with self.engine.execution_options(triage_write=True).begin() as conn:
            if self.dialect == "postgresql":
                conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _ADVISORY_LOCK})
            config.attributes["connection"] = conn
            command.upgrade(config, revision)

    @contextmanager
    def read(self) -> Iterator[Session]:
        with self._reader() as session:
            yield session

    @contextmanager
    def write(self) -> Iterator[Session]:
        """A write transaction: committed when the block ends (the acknowledgement point), else rolled back."""
        with self._writer() as session, session.begin():
            yield session

    def close(self) -> None:
        self.engine.dispose()


def alembic_config(url: str) -> Any:
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    config.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return config

