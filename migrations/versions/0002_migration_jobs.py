"""Taxonomy migrations run as background jobs (POST /v1/taxonomy/migration/jobs): progress readable from any worker.

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-01
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from agent.records import JSONType, UTCDateTime

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "migration_jobs",
        sa.Column("id", sa.String(40), primary_key=True),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("commit", sa.Boolean(), nullable=False),
        sa.Column("previous", sa.String(200), nullable=False),
        sa.Column("target", sa.String(200), nullable=False),
        sa.Column("reviewed_sample", sa.Integer(), nullable=False),
        sa.Column("done", sa.Integer(), nullable=False),
        sa.Column("total", sa.Integer(), nullable=False),
        sa.Column("created_by", sa.String(200), nullable=False),
        sa.Column("started_at", UTCDateTime(), nullable=False),
        sa.Column("updated_at", UTCDateTime(), nullable=False),
        sa.Column("finished_at", UTCDateTime(), nullable=True),
        sa.Column("report", JSONType, nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
    )
    op.create_index("ix_migration_jobs_started", "migration_jobs", ["started_at"])


def downgrade() -> None:
    op.drop_index("ix_migration_jobs_started", table_name="migration_jobs")
    op.drop_table("migration_jobs")
