"""Initial read-model schema: rooms, members, recordings, quality, stations.

Revision ID: 0001
Revises:
Create Date: 2025-11-25

Hand-written. Constraint and index names match db.models.NAMING_CONVENTION and are
wrapped in op.f() so Alembic does not apply that convention to them a second time.
The quality_stats unique key uses NULLS NOT DISTINCT, so Postgres 15+ is required.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB

revision: str = "0001"
down_revision: str | Sequence[str] | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

TIMESTAMPTZ = sa.TIMESTAMP(timezone=True)
EMPTY_OBJECT = sa.text("'{}'::jsonb")
EMPTY_ARRAY = sa.text("'[]'::jsonb")


def upgrade() -> None:
    op.create_table(
        "rooms",
        sa.Column("room_id", sa.Text(), nullable=False),
        sa.Column("room_type", sa.Text(), nullable=False),
        sa.Column("creator", sa.Text(), nullable=True),
        sa.Column("max_participants", sa.Integer(), server_default=sa.text("50"), nullable=False),
        sa.Column("empty_timeout_s", sa.Integer(), server_default=sa.text("300"), nullable=False),
        sa.Column("status", sa.Text(), nullable=False),
        sa.Column("node_id", sa.Text(), nullable=True),
        sa.Column("created_at", TIMESTAMPTZ, nullable=False),
        sa.Column("closed_at", TIMESTAMPTZ, nullable=True),
        sa.Column("metadata", JSONB(), server_default=EMPTY_OBJECT, nullable=False),
        sa.Column("last_event_id", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("room_id", name=op.f("pk_rooms")),
        sa.CheckConstraint("room_type IN ('sfu', 'p2p', 'broadcast')", name=op.f("ck_rooms_room_type")),
        sa.CheckConstraint("status IN ('open', 'closed')", name=op.f("ck_rooms_status")),
    )
    op.create_index(op.f("ix_rooms_status"), "rooms", ["status"])
    op.create_index(op.f("ix_rooms_created_at"), "rooms", ["created_at"])

    op.create_table(
        "room_members",
        sa.Column("room_id", sa.Text(), nullable=False),
        sa.Column("peer_id", sa.Text(), nullable=False),
        sa.Column("identity", sa.Text(), nullable=False),
        sa.Column("name", sa.Text(), server_default="", nullable=False),
        sa.Column("state", sa.Text(), nullable=False),
        sa.Column("joined_at", TIMESTAMPTZ, nullable=False),
        sa.Column("left_at", TIMESTAMPTZ, nullable=True),
        sa.Column("left_reason", sa.Text(), nullable=True),
        sa.Column("audio_enabled", sa.Boolean(), server_default=sa.true(), nullable=False),
        sa.Column("video_enabled", sa.Boolean(), server_default=sa.true(), nullable=False),
        sa.Column("last_event_id", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("room_id", "peer_id", name=op.f("pk_room_members")),
        sa.ForeignKeyConstraint(
            ["room_id"],
            ["rooms.room_id"],
            name=op.f("fk_room_members_room_id_rooms"),
            ondelete="CASCADE",
        ),
        sa.CheckConstraint("state IN ('joined', 'disconnected', 'left')", name=op.f("ck_room_members_state")),
    )
    op.create_index(op.f("ix_room_members_identity"), "room_members", ["identity"])
    op.create_index(op.f("ix_room_members_room_id_state"), "room_members", ["room_id", "state"])

    op.create_table(
        "recordings",
        sa.Column("recording_id", sa.Text(), nullable=False),
        sa.Column("room_id", sa.Text(), nullable=False),
        sa.Column("status", sa.Text(), nullable=False),
        sa.Column("started_at", TIMESTAMPTZ, nullable=False),
        sa.Column("ended_at", TIMESTAMPTZ, nullable=True),
        sa.Column("duration_s", sa.Double(), nullable=True),
        sa.Column("size_bytes", sa.BigInteger(), nullable=True),
        sa.Column("codecs", JSONB(), server_default=EMPTY_ARRAY, nullable=False),
        sa.Column("object_keys", JSONB(), server_default=EMPTY_ARRAY, nullable=False),
        sa.Column("participants", JSONB(), server_default=EMPTY_ARRAY, nullable=False),
        sa.Column("error", sa.Text(), nullable=True),
        sa.PrimaryKeyConstraint("recording_id", name=op.f("pk_recordings")),
        sa.CheckConstraint("status IN ('recording', 'completed', 'failed')", name=op.f("ck_recordings_status")),
    )
    op.create_index(op.f("ix_recordings_room_id_started_at"), "recordings", ["room_id", "started_at"])

    op.create_table(
        "quality_stats",
        sa.Column("id", sa.BigInteger(), autoincrement=True, nullable=False),
        sa.Column("room_id", sa.Text(), nullable=False),
        sa.Column("peer_id", sa.Text(), nullable=False),
        sa.Column("leg", sa.Text(), nullable=True),
        sa.Column("sampled_at", TIMESTAMPTZ, nullable=False),
        sa.Column("loss_pct", sa.Numeric(5, 2), nullable=True),
        sa.Column("jitter_ms", sa.Double(), nullable=True),
        sa.Column("rtt_ms", sa.Double(), nullable=True),
        sa.Column("bitrate_kbps", sa.Double(), nullable=True),
        sa.Column("source", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_quality_stats")),
        sa.CheckConstraint("source IN ('node', 'client')", name=op.f("ck_quality_stats_source")),
        sa.UniqueConstraint(
            "room_id",
            "peer_id",
            "leg",
            "sampled_at",
            "source",
            name=op.f("uq_quality_stats_room_id_peer_id_leg_sampled_at_source"),
            postgresql_nulls_not_distinct=True,
        ),
    )
    op.create_index(op.f("ix_quality_stats_room_id_sampled_at"), "quality_stats", ["room_id", "sampled_at"])

    op.create_table(
        "stations",
        sa.Column("station_id", sa.Text(), nullable=False),
        sa.Column("name", sa.Text(), nullable=False),
        sa.Column("online", sa.Boolean(), server_default=sa.false(), nullable=False),
        sa.Column("gateway_id", sa.Text(), nullable=True),
        sa.Column("metadata", JSONB(), server_default=EMPTY_OBJECT, nullable=False),
        sa.Column("cameras", JSONB(), server_default=EMPTY_ARRAY, nullable=False),
        sa.Column("last_heartbeat_at", TIMESTAMPTZ, nullable=True),
        sa.Column("registered_at", TIMESTAMPTZ, nullable=False),
        sa.PrimaryKeyConstraint("station_id", name=op.f("pk_stations")),
    )
    op.create_index(op.f("ix_stations_gateway_id"), "stations", ["gateway_id"])

    op.create_table(
        "station_commands",
        sa.Column("command_id", sa.Text(), nullable=False),
        sa.Column("station_id", sa.Text(), nullable=False),
        sa.Column("kind", sa.Text(), nullable=False),
        sa.Column("payload", JSONB(), server_default=EMPTY_OBJECT, nullable=False),
        sa.Column("status", sa.Text(), nullable=False),
        sa.Column("requested_by", sa.Text(), nullable=False),
        sa.Column("requested_at", TIMESTAMPTZ, nullable=False),
        sa.Column("deadline_at", TIMESTAMPTZ, nullable=False),
        sa.Column("completed_at", TIMESTAMPTZ, nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
        sa.PrimaryKeyConstraint("command_id", name=op.f("pk_station_commands")),
        sa.ForeignKeyConstraint(
            ["station_id"],
            ["stations.station_id"],
            name=op.f("fk_station_commands_station_id_stations"),
            ondelete="CASCADE",
        ),
        sa.CheckConstraint(
            "status IN ('pending', 'acked', 'succeeded', 'failed', 'timed_out')",
            name=op.f("ck_station_commands_status"),
        ),
    )
    op.create_index(
        op.f("ix_station_commands_station_id_requested_at"),
        "station_commands",
        ["station_id", "requested_at"],
    )
    op.create_index(
        op.f("ix_station_commands_status_deadline_at"),
        "station_commands",
        ["status", "deadline_at"],
    )


def downgrade() -> None:
    op.drop_index(op.f("ix_station_commands_status_deadline_at"), table_name="station_commands")
    op.drop_index(op.f("ix_station_commands_station_id_requested_at"), table_name="station_commands")
    op.drop_table("station_commands")

    op.drop_index(op.f("ix_stations_gateway_id"), table_name="stations")
    op.drop_table("stations")

    op.drop_index(op.f("ix_quality_stats_room_id_sampled_at"), table_name="quality_stats")
    op.drop_table("quality_stats")

    op.drop_index(op.f("ix_recordings_room_id_started_at"), table_name="recordings")
    op.drop_table("recordings")

    op.drop_index(op.f("ix_room_members_room_id_state"), table_name="room_members")
    op.drop_index(op.f("ix_room_members_identity"), table_name="room_members")
    op.drop_table("room_members")

    op.drop_index(op.f("ix_rooms_created_at"), table_name="rooms")
    op.drop_index(op.f("ix_rooms_status"), table_name="rooms")
    op.drop_table("rooms")
