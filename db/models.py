"""Postgres read models projected from the Kafka log.

The log is the source of truth; every row here can be rebuilt by replaying it.
Timestamps therefore never default to ``now()``: they come from the event that
produced the row. Enumerated text columns are plain ``text`` guarded by CHECK
constraints (no native enum types), so adding a value is a one-line migration.

Constraint and index names follow ``NAMING_CONVENTION``; the hand-written
migrations in ``db/migrations/versions`` use the same names, wrapped in ``op.f()``.
"""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Any, Final, Literal, get_args

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import ARRAY, JSONB
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

NAMING_CONVENTION: Final[dict[str, str]] = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

RoomType = Literal["sfu", "p2p", "broadcast"]
RoomStatus = Literal["open", "closed"]
MemberState = Literal["joined", "disconnected", "left"]
RecordingStatus = Literal["recording", "stopping", "completed", "failed"]
QualitySource = Literal["node", "client"]
CommandStatus = Literal["pending", "acked", "succeeded", "failed", "timed_out", "rejected"]
PresenceStatus = Literal["online", "busy", "offline"]

ROOM_TYPES: Final[tuple[str, ...]] = get_args(RoomType)
ROOM_STATUSES: Final[tuple[str, ...]] = get_args(RoomStatus)
MEMBER_STATES: Final[tuple[str, ...]] = get_args(MemberState)
RECORDING_STATUSES: Final[tuple[str, ...]] = get_args(RecordingStatus)
QUALITY_SOURCES: Final[tuple[str, ...]] = get_args(QualitySource)
QUALITY_LAYERS: Final[tuple[str, ...]] = ("low", "mid", "high", "paused")
COMMAND_STATUSES: Final[tuple[str, ...]] = get_args(CommandStatus)
PRESENCE_STATUSES: Final[tuple[str, ...]] = get_args(PresenceStatus)

_EMPTY_OBJECT: Final = sa.text("'{}'::jsonb")
_EMPTY_ARRAY: Final = sa.text("'[]'::jsonb")


def one_of(column: str, values: tuple[str, ...]) -> str:
    """SQL for a CHECK constraint limiting ``column`` to ``values``."""
    quoted = ", ".join(f"'{value}'" for value in values)
    return f"{column} IN ({quoted})"


class Base(DeclarativeBase):
    metadata = sa.MetaData(naming_convention=NAMING_CONVENTION)
    type_annotation_map = {
        datetime: sa.TIMESTAMP(timezone=True),
        dict[str, Any]: JSONB,
        list[Any]: JSONB,
        str: sa.Text,
    }


class Room(Base):
    __tablename__ = "rooms"
    __table_args__ = (
        sa.CheckConstraint(one_of("room_type", ROOM_TYPES), name="room_type"),
        sa.CheckConstraint(one_of("status", ROOM_STATUSES), name="status"),
        sa.Index(None, "status"),
        sa.Index(None, "created_at"),
    )

    room_id: Mapped[str] = mapped_column(primary_key=True)
    room_type: Mapped[RoomType] = mapped_column(sa.Text)
    creator: Mapped[str | None]
    max_participants: Mapped[int] = mapped_column(default=50, server_default=sa.text("50"))
    empty_timeout_s: Mapped[int] = mapped_column(default=300, server_default=sa.text("300"))
    status: Mapped[RoomStatus] = mapped_column(sa.Text)
    # Media node the room is placed on; null until placement decides.
    node_id: Mapped[str | None]
    created_at: Mapped[datetime]
    closed_at: Mapped[datetime | None]
    meta: Mapped[dict[str, Any]] = mapped_column("metadata", default=dict, server_default=_EMPTY_OBJECT)
    # Id of the fact (log event) that last changed this row.
    last_event_id: Mapped[str]


class RoomMember(Base):
    __tablename__ = "room_members"
    __table_args__ = (
        sa.CheckConstraint(one_of("state", MEMBER_STATES), name="state"),
        sa.Index(None, "identity"),
        sa.Index(None, "room_id", "state"),
    )

    room_id: Mapped[str] = mapped_column(sa.ForeignKey("rooms.room_id", ondelete="CASCADE"), primary_key=True)
    peer_id: Mapped[str] = mapped_column(primary_key=True)
    identity: Mapped[str]
    name: Mapped[str] = mapped_column(default="", server_default="")
    state: Mapped[MemberState] = mapped_column(sa.Text)
    joined_at: Mapped[datetime]
    left_at: Mapped[datetime | None]
    left_reason: Mapped[str | None]
    audio_enabled: Mapped[bool] = mapped_column(default=True, server_default=sa.true())
    video_enabled: Mapped[bool] = mapped_column(default=True, server_default=sa.true())
    last_event_id: Mapped[str]


class Recording(Base):
    __tablename__ = "recordings"
    __table_args__ = (
        sa.CheckConstraint(one_of("status", RECORDING_STATUSES), name="status"),
        sa.Index(None, "room_id", "started_at"),
    )

    recording_id: Mapped[str] = mapped_column(primary_key=True)
    # No FK to rooms: recordings outlive the room row and are kept for audit.
    room_id: Mapped[str]
    status: Mapped[RecordingStatus] = mapped_column(sa.Text)
    started_at: Mapped[datetime]
    ended_at: Mapped[datetime | None]
    duration_s: Mapped[float | None] = mapped_column(sa.Double)
    size_bytes: Mapped[int | None] = mapped_column(sa.BigInteger)
    codecs: Mapped[list[Any]] = mapped_column(default=list, server_default=_EMPTY_ARRAY)
    object_keys: Mapped[list[Any]] = mapped_column(default=list, server_default=_EMPTY_ARRAY)
    participants: Mapped[list[Any]] = mapped_column(default=list, server_default=_EMPTY_ARRAY)
    error: Mapped[str | None]
    requested_by: Mapped[str] = mapped_column(default="", server_default="")
    stop_reason: Mapped[str | None]
    manifest_key: Mapped[str | None]
    last_event_id: Mapped[str | None]
    # The composite render (POST /v1/recordings/{id}/composite): pending | rendering | done | failed.
    composite_status: Mapped[str | None]
    composite_layout: Mapped[str | None]
    composite_key: Mapped[str | None]
    composite_progress: Mapped[float | None] = mapped_column(sa.Double)
    composite_error: Mapped[str | None]


class RecordingTrack(Base):
    """One track file of a recording (a peer that publishes a source again gets a new one)."""

    __tablename__ = "recording_tracks"

    recording_id: Mapped[str] = mapped_column(
        sa.ForeignKey("recordings.recording_id", ondelete="CASCADE"), primary_key=True
    )
    track_id: Mapped[str] = mapped_column(primary_key=True)
    peer_id: Mapped[str]
    identity: Mapped[str] = mapped_column(default="", server_default="")
    source_id: Mapped[str]
    kind: Mapped[str]
    codec: Mapped[str]
    object_key: Mapped[str | None]
    # Seconds from the recording's start to the track's first frame.
    start_s: Mapped[float] = mapped_column(sa.Double)
    duration_s: Mapped[float] = mapped_column(sa.Double)
    size_bytes: Mapped[int] = mapped_column(sa.BigInteger)
    frames: Mapped[int | None] = mapped_column(sa.BigInteger)
    width: Mapped[int | None]
    height: Mapped[int | None]
    segments: Mapped[int]
    # Segment numbers that never arrived (a recorder killed with the segment open).
    gaps: Mapped[list[Any]] = mapped_column(default=list, server_default=_EMPTY_ARRAY)


class RecordingSegment(Base):
    __tablename__ = "recording_segments"

    recording_id: Mapped[str] = mapped_column(primary_key=True)
    track_id: Mapped[str] = mapped_column(primary_key=True)
    index: Mapped[int] = mapped_column(primary_key=True)
    object_key: Mapped[str]
    size_bytes: Mapped[int] = mapped_column(sa.BigInteger)
    duration_s: Mapped[float] = mapped_column(sa.Double)
    start_s: Mapped[float | None] = mapped_column(sa.Double)
    frames: Mapped[int | None]
    uploaded_at: Mapped[datetime]
    event_id: Mapped[str]


class QualityStat(Base):
    """One quality sample for a peer's leg, from the media node or the client.

    The unique key treats a null ``leg`` as equal to another null ``leg``
    (``NULLS NOT DISTINCT``, Postgres 15+), so re-projecting the same sample is
    an ``ON CONFLICT DO NOTHING`` no-op even when the sample has no leg.
    """

    __tablename__ = "quality_stats"
    __table_args__ = (
        sa.CheckConstraint(one_of("source", QUALITY_SOURCES), name="source"),
        sa.UniqueConstraint(
            "room_id",
            "peer_id",
            "leg",
            "sampled_at",
            "source",
            postgresql_nulls_not_distinct=True,
        ),
        sa.Index(None, "room_id", "sampled_at"),
        sa.Index(None, "peer_id", "sampled_at"),
        sa.Index(None, "sampled_at"),  # retention deletes by age
    )

    id: Mapped[int] = mapped_column(sa.BigInteger, primary_key=True, autoincrement=True)
    room_id: Mapped[str]
    peer_id: Mapped[str]
    # 'publisher', 'subscriber' or a track id; null for a whole-peer sample.
    leg: Mapped[str | None]
    sampled_at: Mapped[datetime]
    # Metrics are nullable: not every source reports every metric for every leg.
    loss_pct: Mapped[Decimal | None] = mapped_column(sa.Numeric(5, 2))
    jitter_ms: Mapped[float | None] = mapped_column(sa.Double)
    rtt_ms: Mapped[float | None] = mapped_column(sa.Double)
    bitrate_kbps: Mapped[float | None] = mapped_column(sa.Double)
    source: Mapped[QualitySource] = mapped_column(sa.Text)
    # Since 0003_quality a row is a 10 s bucket: the metrics above are means over
    # ``samples`` samples, whose ids are in ``event_ids`` (a re-delivered one is not
    # counted twice). The table has fillfactor 50 (set by the migration: SQLAlchemy's Table
    # has no option for it) so the updates of a bucket stay on its page.
    samples: Mapped[int] = mapped_column(default=1, server_default=sa.text("1"))
    loss_max: Mapped[Decimal | None] = mapped_column(sa.Numeric(5, 2))
    packets: Mapped[int | None] = mapped_column(sa.BigInteger)
    nacks: Mapped[int | None] = mapped_column(sa.BigInteger)
    plis: Mapped[int | None] = mapped_column(sa.BigInteger)
    layer: Mapped[str | None]
    bandwidth_kbps: Mapped[float | None] = mapped_column(sa.Double)
    event_ids: Mapped[list[str]] = mapped_column(ARRAY(sa.Text), default=list, server_default=sa.text("'{}'"))


class QualityDecision(Base):
    """One ``QualityDecided`` fact: a subscriber of a video source moved to a layer,
    paused or resumed (``quality.facts``)."""

    __tablename__ = "quality_decisions"
    __table_args__ = (
        sa.CheckConstraint(one_of("layer", QUALITY_LAYERS), name="layer"),
        sa.Index(None, "room_id", "decided_at"),
        sa.Index(None, "peer_id", "decided_at"),
        sa.Index(None, "decided_at"),  # retention deletes by age
    )

    event_id: Mapped[str] = mapped_column(primary_key=True)
    room_id: Mapped[str]
    peer_id: Mapped[str]
    source_id: Mapped[str]
    publisher_peer_id: Mapped[str | None]
    layer: Mapped[str]
    previous: Mapped[str | None]
    reason: Mapped[str] = mapped_column(default="", server_default="")
    loss_pct: Mapped[float] = mapped_column(sa.Double)
    level: Mapped[int | None]
    bandwidth_kbps: Mapped[float | None] = mapped_column(sa.Double)
    decided_at: Mapped[datetime]


class Station(Base):
    """A station as streams derive it (``station.events``; 0005 added site, gates, changed_at)."""

    __tablename__ = "stations"
    __table_args__ = (sa.Index(None, "gateway_id"), sa.Index(None, "online"))

    station_id: Mapped[str] = mapped_column(primary_key=True)
    name: Mapped[str]
    online: Mapped[bool] = mapped_column(default=False, server_default=sa.false())
    gateway_id: Mapped[str | None]
    meta: Mapped[dict[str, Any]] = mapped_column("metadata", default=dict, server_default=_EMPTY_OBJECT)
    cameras: Mapped[list[Any]] = mapped_column(default=list, server_default=_EMPTY_ARRAY)
    last_heartbeat_at: Mapped[datetime | None]
    registered_at: Mapped[datetime]
    site: Mapped[str] = mapped_column(default="", server_default="")
    gates: Mapped[list[Any]] = mapped_column(default=list, server_default=_EMPTY_ARRAY)
    changed_at: Mapped[datetime | None]
    last_event_id: Mapped[str | None]


class StationCommand(Base):
    __tablename__ = "station_commands"
    __table_args__ = (
        sa.CheckConstraint(one_of("status", COMMAND_STATUSES), name="status"),
        sa.Index(None, "station_id", "requested_at"),
        # Finds pending/acked commands whose deadline has passed.
        sa.Index(None, "status", "deadline_at"),
    )

    command_id: Mapped[str] = mapped_column(primary_key=True)
    #: No foreign key since 0005: a command's row may be projected before its station's.
    station_id: Mapped[str]
    kind: Mapped[str]
    payload: Mapped[dict[str, Any]] = mapped_column(default=dict, server_default=_EMPTY_OBJECT)
    status: Mapped[CommandStatus] = mapped_column(sa.Text)
    requested_by: Mapped[str]
    requested_at: Mapped[datetime]
    deadline_at: Mapped[datetime]
    completed_at: Mapped[datetime | None]
    error: Mapped[str | None]
    result: Mapped[dict[str, Any]] = mapped_column(default=dict, server_default=_EMPTY_OBJECT)
    acked_at: Mapped[datetime | None]


class Presence(Base):
    """A user's presence as streams derive it (``PresenceChanged`` on ``presence.facts``)."""

    __tablename__ = "presence"
    __table_args__ = (
        sa.CheckConstraint(one_of("status", PRESENCE_STATUSES), name="status"),
        sa.Index(None, "status"),
    )

    user_id: Mapped[str] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(default="", server_default="")
    status: Mapped[PresenceStatus] = mapped_column(sa.Text)
    changed_at: Mapped[datetime]
    last_event_id: Mapped[str]
