"""Tickets, messages, revisions, reviews, API keys, taxonomy versions; append-only guards.

Revision ID: 0001
Revises:
Create Date: 2025-11-25
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from agent.records import JSONType, UTCDateTime

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

APPEND_ONLY = ("messages", "revisions", "reviews")


def upgrade() -> None:
    op.create_table(
        "tickets",
        sa.Column("id", sa.String(40), primary_key=True),
        sa.Column("external_id", sa.String(200), nullable=True),
        sa.Column("subject", sa.Text(), nullable=False),
        sa.Column("body", sa.Text(), nullable=False),
        sa.Column("channel", sa.String(64), nullable=True),
        sa.Column("created_by", sa.String(200), nullable=False),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("updated_at", UTCDateTime(), nullable=False),
        sa.Column("idempotency_key", sa.String(300), nullable=True, unique=True),
        sa.Column("request_sha", sa.String(64), nullable=True),
        sa.Column("message_count", sa.Integer(), nullable=False),
        sa.Column("last_seq", sa.Integer(), nullable=False),
        sa.Column("current_seq", sa.Integer(), nullable=True),
        sa.Column("current_decision", sa.String(16), nullable=True),
        sa.Column("current_confidence", sa.Float(), nullable=True),
        sa.Column("current_service", sa.String(64), nullable=True),
        sa.Column("current_tier", sa.String(64), nullable=True),
        sa.Column("current_channel", sa.String(64), nullable=True),
        sa.Column("in_queue", sa.Boolean(), nullable=False),
        sa.Column("queue_rank", sa.Integer(), nullable=False),
    )
    op.create_index("ix_tickets_queue", "tickets", ["in_queue", "queue_rank", "current_confidence", "id"])
    op.create_table(
        "messages",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("ticket_id", sa.String(40), sa.ForeignKey("tickets.id"), nullable=False),
        sa.Column("seq", sa.Integer(), nullable=False),
        sa.Column("author", sa.String(16), nullable=False),
        sa.Column("text", sa.Text(), nullable=False),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.UniqueConstraint("ticket_id", "seq", name="uq_messages_ticket_seq"),
    )
    op.create_index("ix_messages_ticket_id", "messages", ["ticket_id"])
    op.create_table(
        "revisions",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("ticket_id", sa.String(40), sa.ForeignKey("tickets.id"), nullable=False),
        sa.Column("seq", sa.Integer(), nullable=False),
        sa.Column("reason", sa.String(32), nullable=False),
        sa.Column("actor", sa.String(300), nullable=False),
        sa.Column("classification", JSONType, nullable=True),
        sa.Column("labels", JSONType, nullable=True),
        sa.Column("changed_axes", JSONType, nullable=False),
        sa.Column("suggestion", JSONType, nullable=True),
        sa.Column("supersedes", sa.Integer(), nullable=True),
        sa.Column("rejects", sa.Integer(), nullable=True),
        sa.Column("note", sa.Text(), nullable=True),
        sa.Column("started_at", UTCDateTime(), nullable=False),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.UniqueConstraint("ticket_id", "seq", name="uq_revisions_ticket_seq"),
    )
    op.create_index("ix_revisions_ticket_id", "revisions", ["ticket_id"])
    op.create_table(
        "reviews",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("ticket_id", sa.String(40), sa.ForeignKey("tickets.id"), nullable=False),
        sa.Column("revision_seq", sa.Integer(), nullable=False),
        sa.Column("result_seq", sa.Integer(), nullable=False),
        sa.Column("action", sa.String(8), nullable=False),
        sa.Column("labels", JSONType, nullable=True),
        sa.Column("comment", sa.Text(), nullable=True),
        sa.Column("reviewer", sa.String(200), nullable=False),
        sa.Column("created_at", UTCDateTime(), nullable=False),
    )
    op.create_index("ix_reviews_ticket_id", "reviews", ["ticket_id"])
    op.create_table(
        "api_keys",
        sa.Column("id", sa.String(40), primary_key=True),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("scope", sa.String(16), nullable=False),
        sa.Column("key_hash", sa.String(64), nullable=False, unique=True),
        sa.Column("created_by", sa.String(200), nullable=False),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("revoked_at", UTCDateTime(), nullable=True),
    )
    op.create_table(
        "taxonomy_versions",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("ref", sa.String(200), nullable=False, unique=True),
        sa.Column("name", sa.String(120), nullable=False),
        sa.Column("version", sa.String(80), nullable=False),
        sa.Column("sha256", sa.String(64), nullable=False),
        sa.Column("content", JSONType, nullable=False),
        sa.Column("created_at", UTCDateTime(), nullable=False),
    )
    _append_only_guards()


def _append_only_guards() -> None:
    """History is evidence: the database itself refuses to change or delete it, whatever the code does."""
    if op.get_bind().dialect.name == "postgresql":
        op.execute(
            "CREATE FUNCTION triage_append_only() RETURNS trigger LANGUAGE plpgsql AS $$ "
            "BEGIN RAISE EXCEPTION '% is append-only: add a new row instead', TG_TABLE_NAME; END $$"
        )
        for table in APPEND_ONLY:
            op.execute(
                f"CREATE TRIGGER {table}_append_only BEFORE UPDATE OR DELETE ON {table} "
                "FOR EACH ROW EXECUTE FUNCTION triage_append_only()"
            )
        return
    for table in APPEND_ONLY:
        for event in ("UPDATE", "DELETE"):
            op.execute(
                f"CREATE TRIGGER {table}_no_{event.lower()} BEFORE {event} ON {table} "
                f"BEGIN SELECT RAISE(ABORT, '{table} is append-only: add a new row instead'); END"
            )


def downgrade() -> None:
    for table in ("taxonomy_versions", "api_keys", "reviews", "revisions", "messages", "tickets"):
        op.drop_table(table)
    if op.get_bind().dialect.name == "postgresql":
        op.execute("DROP FUNCTION IF EXISTS triage_append_only()")
