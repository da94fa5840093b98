"""Recordings: stop and composite columns, one row per recorded track and per segment.

Revision ID: 0004_recording
Revises: 0003_quality
Create Date: 2026-12-03

``recordings`` gains ``stopping`` as a status, who asked for it, the manifest's key, the
id of the last event applied, and the composite render's state. ``recording_tracks``
holds one row per track file (a peer that leaves and rejoins has two), written when the
recording completes; ``recording_segments`` one row per uploaded segment, written as
they arrive. All three are projected from ``recording.facts`` and ``recording.events``.
Hand-written; names follow db.models.NAMING_CONVENTION (wrapped in op.f()).
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB

revision: str = "0004_recording"
down_revision: str | Sequence[str] | None = "0003_quality"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

TIMESTAMPTZ = sa.TIMESTAMP(timezone=True)
NEW_COLUMNS = (
    "requested_by",
    "stop_reason",
    "manifest_key",
    "last_event_id",
    "composite_status",
    "composite_layout",
    "composite_key",
    "composite_progress",
    "composite_error",
)


def upgrade() -> None:
    op.drop_constraint(op.f("ck_recordings_status"), "recordings", type_="check")
    op.create_check_constraint(
        op.f("ck_recordings_status"), "recordings", "status IN ('recording', 'stopping', 'completed', 'failed')"
    )
    op.add_column("recordings", sa.Column("requested_by", sa.Text(), server_default="", nullable=False))
    op.add_column("recordings", sa.Column("stop_reason", sa.Text(), nullable=True))
    op.add_column("recordings", sa.Column("manifest_key", sa.Text(), nullable=True))
    op.add_column("recordings", sa.Column("last_event_id", sa.Text(), nullable=True))
    op.add_column("recordings", sa.Column("composite_status", sa.Text(), nullable=True))
    op.add_column("recordings", sa.Column("composite_layout", sa.Text(), nullable=True))
    op.add_column("recordings", sa.Column("composite_key", sa.Text(), nullable=True))
    op.add_column("recordings", sa.Column("composite_progress", sa.Double(), nullable=True))
    op.add_column("recordings", sa.Column("composite_error", sa.Text(), nullable=True))
    op.create_table(
        "recording_tracks",
        sa.Column("recording_id", sa.Text(), nullable=False),
        sa.Column("track_id", sa.Text(), nullable=False),
        sa.Column("peer_id", sa.Text(), nullable=False),
        sa.Column("identity", sa.Text(), server_default="", nullable=False),
        sa.Column("source_id", sa.Text(), nullable=False),
        sa.Column("kind", sa.Text(), nullable=False),
        sa.Column("codec", sa.Text(), nullable=False),
        sa.Column("object_key", sa.Text(), nullable=True),
        sa.Column("start_s", sa.Double(), nullable=False),
        sa.Column("duration_s", sa.Double(), nullable=False),
        sa.Column("size_bytes", sa.BigInteger(), nullable=False),
        sa.Column("frames", sa.BigInteger(), nullable=True),
        sa.Column("width", sa.Integer(), nullable=True),
        sa.Column("height", sa.Integer(), nullable=True),
        sa.Column("segments", sa.Integer(), nullable=False),
        sa.Column("gaps", JSONB(), server_default=sa.text("'[]'::jsonb"), nullable=False),
        sa.ForeignKeyConstraint(
            ["recording_id"],
            ["recordings.recording_id"],
            ondelete="CASCADE",
            name=op.f("fk_recording_tracks_recording_id_recordings"),
        ),
        sa.PrimaryKeyConstraint("recording_id", "track_id", name=op.f("pk_recording_tracks")),
    )
    op.create_table(
        "recording_segments",
        sa.Column("recording_id", sa.Text(), nullable=False),
        sa.Column("track_id", sa.Text(), nullable=False),
        sa.Column("index", sa.Integer(), nullable=False),
        sa.Column("object_key", sa.Text(), nullable=False),
        sa.Column("size_bytes", sa.BigInteger(), nullable=False),
        sa.Column("duration_s", sa.Double(), nullable=False),
        sa.Column("start_s", sa.Double(), nullable=True),
        sa.Column("frames", sa.Integer(), nullable=True),
        sa.Column("uploaded_at", TIMESTAMPTZ, nullable=False),
        sa.Column("event_id", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("recording_id", "track_id", "index", name=op.f("pk_recording_segments")),
    )


def downgrade() -> None:
    op.drop_table("recording_segments")
    op.drop_table("recording_tracks")
    for column in reversed(NEW_COLUMNS):
        op.drop_column("recordings", column)
    op.drop_constraint(op.f("ck_recordings_status"), "recordings", type_="check")
    op.create_check_constraint(
        op.f("ck_recordings_status"), "recordings", "status IN ('recording', 'completed', 'failed')"
    )
