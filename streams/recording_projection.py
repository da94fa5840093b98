"""Project recording facts and recorder reports into Postgres: ``recordings``,
``recording_tracks``, ``recording_segments``.

Reads ``recording.facts`` (streams' decisions) and ``recording.events`` (the recorder's
reports). The two topics are not ordered against each other, so every statement is
monotonic: a row is created by whichever event comes first, ``stopping`` never
overwrites an ended row, and an ended row never goes back. Idempotent: a re-delivered
event leaves the same rows. Postgres down: ``project`` retries until it takes the batch.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy import bindparam, update
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from db.models import Recording, RecordingSegment, RecordingTrack
from producers.envelope import Event
from producers.recordings import (
    CompositeAccepted,
    CompositeFailed,
    CompositeProgress,
    CompositeRendered,
    RecordingAccepted,
    RecordingStopping,
)
from producers.sessions import RecordingCompleted, RecordingFailed, RecordingSegmentUploaded
from streams.projection import retrying

Statement = Any
Row = tuple[Statement, dict[str, Any]]
ENDED = ("completed", "failed")

_insert = insert(Recording)
#: Accepted: the row, or (a report came first) who asked and when it started.
ACCEPTED = _insert.on_conflict_do_update(
    index_elements=["recording_id"],
    set_={"requested_by": _insert.excluded.requested_by, "started_at": _insert.excluded.started_at},
)
#: Ended (completed or failed): the row with the outcome, whatever came before.
ENDED_UPSERT = _insert.on_conflict_do_update(
    index_elements=["recording_id"],
    set_={
        c: _insert.excluded[c]
        for c in (
            "status",
            "ended_at",
            "duration_s",
            "size_bytes",
            "codecs",
            "object_keys",
            "participants",
            "error",
            "manifest_key",
            "last_event_id",
        )
    },
)
STOPPING = (
    update(Recording)
    .where(Recording.recording_id == bindparam("k_recording_id"), Recording.status == "recording")
    .values(status="stopping", stop_reason=bindparam("stop_reason"), last_event_id=bindparam("last_event_id"))
)
_COMPOSITE = update(Recording).where(Recording.recording_id == bindparam("k_recording_id"))
COMPOSITE_PENDING = _COMPOSITE.values(
    composite_status="pending", composite_layout=bindparam("layout"), composite_progress=0.0, composite_error=None
)
#: Progress moves forward only, and never after the render finished.
COMPOSITE_PROGRESS = _COMPOSITE.where(
    Recording.composite_status.in_(("pending", "rendering")),
    sa.func.coalesce(Recording.composite_progress, 0) <= bindparam("percent"),
).values(composite_status="rendering", composite_progress=bindparam("percent"))
COMPOSITE_DONE = _COMPOSITE.values(
    composite_status="done",
    composite_progress=100.0,
    composite_key=bindparam("key"),
    composite_layout=bindparam("layout"),
)
COMPOSITE_FAILED = _COMPOSITE.values(composite_status="failed", composite_error=bindparam("error"))
_segment = insert(RecordingSegment)
SEGMENT = _segment.on_conflict_do_nothing(index_elements=["recording_id", "track_id", "index"])
_track = insert(RecordingTrack)
TRACK = _track.on_conflict_do_update(
    index_elements=["recording_id", "track_id"],
    set_={
        c.name: _track.excluded[c.name]
        for c in RecordingTrack.__table__.columns
        if c.name not in ("recording_id", "track_id")
    },
)


def _base(f: Event, status: str) -> dict[str, Any]:
    return dict(
        recording_id=getattr(f, "recording_id"),  # noqa: B009
        room_id=getattr(f, "room_id"),  # noqa: B009
        status=status,
        started_at=f.occurred_at,
        ended_at=None,
        duration_s=None,
        size_bytes=None,
        codecs=[],
        object_keys=[],
        participants=[],
        error=None,
        requested_by="",
        stop_reason=None,
        manifest_key=None,
        last_event_id=str(f.event_id),
    )


def _accepted(f: RecordingAccepted) -> list[Row]:
    return [(ACCEPTED, {**_base(f, "recording"), "requested_by": f.requested_by})]


def _stopping(f: RecordingStopping) -> list[Row]:
    return [(STOPPING, dict(k_recording_id=f.recording_id, stop_reason=f.reason, last_event_id=str(f.event_id)))]


def _segment_uploaded(f: RecordingSegmentUploaded) -> list[Row]:
    if f.track_id is None or f.index is None:
        return []
    return [
        (
            SEGMENT,
            dict(
                recording_id=f.recording_id,
                track_id=f.track_id,
                index=f.index,
                object_key=f.object_key,
                size_bytes=f.size_bytes,
                duration_s=f.duration_s,
                start_s=f.start_s,
                frames=f.frames,
                uploaded_at=f.occurred_at,
                event_id=str(f.event_id),
            ),
        )
    ]


def _completed(f: RecordingCompleted) -> list[Row]:
    row = {
        **_base(f, "completed"),
        "started_at": f.occurred_at - timedelta(seconds=f.duration_s),
        "ended_at": f.occurred_at,
        "duration_s": f.duration_s,
        "size_bytes": f.size_bytes,
        "codecs": list(f.codecs),
        "participants": list(f.participants),
        "manifest_key": f.manifest_key,
        "object_keys": [t["object_key"] for t in f.tracks if t.get("object_key")],
    }
    rows: list[Row] = [(ENDED_UPSERT, row)]
    for t in f.tracks:
        rows.append(
            (
                TRACK,
                dict(
                    recording_id=f.recording_id,
                    track_id=t["track_id"],
                    peer_id=t.get("peer_id", ""),
                    identity=t.get("identity", ""),
                    source_id=t.get("source_id", ""),
                    kind=t.get("kind", ""),
                    codec=t.get("codec", ""),
                    object_key=t.get("object_key"),
                    start_s=float(t.get("start_s", 0.0)),
                    duration_s=float(t.get("duration_s", 0.0)),
                    size_bytes=int(t.get("size_bytes", 0)),
                    frames=t.get("frames"),
                    width=t.get("width"),
                    height=t.get("height"),
                    segments=int(t.get("segments", 0)),
                    gaps=list(t.get("gaps", [])),
                ),
            )
        )
    return rows


def _failed(f: RecordingFailed) -> list[Row]:
    return [(ENDED_UPSERT, {**_base(f, "failed"), "ended_at": f.occurred_at, "error": f.error})]


PROJECTORS: dict[type[Event], Callable[[Any], list[Row]]] = {
    CompositeAccepted: lambda f: [(COMPOSITE_PENDING, dict(k_recording_id=f.recording_id, layout=f.layout))],
    CompositeProgress: lambda f: [(COMPOSITE_PROGRESS, dict(k_recording_id=f.recording_id, percent=f.percent))],
    CompositeRendered: lambda f: [
        (COMPOSITE_DONE, dict(k_recording_id=f.recording_id, key=f.object_key, layout=f.layout))
    ],
    CompositeFailed: lambda f: [(COMPOSITE_FAILED, dict(k_recording_id=f.recording_id, error=f.error))],
    RecordingAccepted: _accepted,
    RecordingStopping: _stopping,
    RecordingSegmentUploaded: _segment_uploaded,
    RecordingCompleted: _completed,
    RecordingFailed: _failed,
}


async def apply_recording_events(conn: AsyncConnection, events: Sequence[Event]) -> int:
    rows = [row for e in events if type(e) in PROJECTORS for row in PROJECTORS[type(e)](e)]
    for stmt, params in rows:
        await conn.execute(stmt, params)
    return len(rows)


async def project_recordings(engine: AsyncEngine, events: Sequence[Event]) -> int:
    """Apply a batch in one transaction; retried until Postgres takes it (an outage
    delays the projection, never loses it: the batch is not acknowledged meanwhile)."""
    return await retrying(engine, lambda conn: apply_recording_events(conn, events))
