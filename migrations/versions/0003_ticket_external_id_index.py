"""An index on tickets.external_id: `GET /v1/tickets?external_id=` (a bot finding its ticket by its own id) scanned
every ticket without it.

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-06
"""

from __future__ import annotations

from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index("ix_tickets_external_id", "tickets", ["external_id"])


def downgrade() -> None:
    op.drop_index("ix_tickets_external_id", table_name="tickets")
