"""Presence read model: one row per user (online / busy / offline).

Revision ID: 0002_presence
Revises: 0001
Create Date: 2026-01-20

Hand-written; names follow db.models.NAMING_CONVENTION (wrapped in op.f()).
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002_presence"
down_revision: str | Sequence[str] | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "presence",
        sa.Column("user_id", sa.Text(), nullable=False),
        sa.Column("name", sa.Text(), server_default="", nullable=False),
        sa.Column("status", sa.Text(), nullable=False),
        sa.Column("changed_at", sa.TIMESTAMP(timezone=True), nullable=False),
        sa.Column("last_event_id", sa.Text(), nullable=False),
        sa.CheckConstraint("status IN ('online', 'busy', 'offline')", name=op.f("ck_presence_status")),
        sa.PrimaryKeyConstraint("user_id", name=op.f("pk_presence")),
    )
    op.create_index(op.f("ix_presence_status"), "presence", ["status"])


def downgrade() -> None:
    op.drop_index(op.f("ix_presence_status"), table_name="presence")
    op.drop_table("presence")
