"""Recordings: start and stop go through the log as intents (``recording.intents``);
reads come from the Postgres rows streams project (``recordings``, ``recording_tracks``,
``recording_segments``), with presigned MinIO URLs for every file.

- ``POST /v1/rooms/{room_id}/recordings`` (grant ``record``): 403 without the grant, 404
  when the room does not exist or is closed, 409 ``recording_active`` while the room is
  being recorded (unless ``concurrent``). Waits briefly for the row: 201, else 202.
- ``DELETE /v1/recordings/{id}`` (grant ``record``): 404 unknown, 409 ``recording_ended``.
- ``POST /v1/recordings/{id}/composite {layout: grid|speaker}`` (grant ``record``): 409
  ``recording_not_completed`` unless completed (a failed recording has no composite).
- ``GET /v1/recordings?room=`` and ``GET /v1/recordings/{id}``: a token for the room (or
  admin). Finished recordings list each track file, the manifest and the composite
  with a presigned download URL.
"""

from __future__ import annotations

import asyncio
import uuid
from datetime import datetime, timedelta
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Query, Response
from minio import Minio
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import select

from api.errors import ApiError, RecordingActive, RecordingEnded, RecordingNotFound, RestError, RoomNotFound
from api.services import Services, claims, request_id, services
from api.tokens import Claims
from db.models import Recording, RecordingSegment, RecordingTrack, Room
from producers.fields import Grant, Id
from producers.recordings import CompositeRequested, RecordingRequested, RecordingStopRequested

router = APIRouter(tags=["recordings"])
ACTIVE = ("recording", "stopping")


class StartRecording(BaseModel):
    model_config = ConfigDict(extra="forbid")

    #: Segment length in seconds (the recorder's default when omitted).
    segment_s: Annotated[float, Field(gt=0, le=600)] | None = None
    #: Allow a second recording while one is active.
    concurrent: bool = False


class FileView(BaseModel):
    object_key: str
    url: str | None


class TrackView(BaseModel):
    track_id: str
    peer_id: str
    identity: str
    source_id: str
    kind: str
    codec: str
    start_s: float
    duration_s: float
    size_bytes: int
    frames: int | None
    width: int | None
    height: int | None
    segments: int
    gaps: list[Any]
    file: FileView | None


class RecordingView(BaseModel):
    recording_id: str
    room_id: str
    status: str
    requested_by: str
    started_at: datetime
    ended_at: datetime | None
    duration_s: float | None
    size_bytes: int | None
    codecs: list[Any]
    participants: list[Any]
    error: str | None
    stop_reason: str | None
    segments_uploaded: int | None = None
    tracks: list[TrackView] | None = None
    manifest: FileView | None = None
    composite: dict[str, Any] | None = None


class Accepted(BaseModel):
    recording_id: str
    room_id: str
    status: str
    event_id: str


def _minio(svc: Services) -> Minio:
    client: Minio | None = getattr(svc, "_recording_minio", None)
    if client is None:
        s = svc.settings
        client = Minio(
            s.minio_endpoint,
            access_key=s.minio_access_key,
            secret_key=s.minio_secret_key.get_secret_value(),
            secure=s.minio_secure,
            region="us-east-1",
        )
        svc._recording_minio = client  # type: ignore[attr-defined]
    return client


def _file(svc: Services, key: str | None) -> FileView | None:
    if not key:
        return None
    url = _minio(svc).presigned_get_object(
        svc.settings.recording_bucket, key, expires=timedelta(seconds=svc.settings.recording_url_ttl_s)
    )
    return FileView(object_key=key, url=url)


def _view(r: Recording) -> RecordingView:
    return RecordingView(
        recording_id=r.recording_id,
        room_id=r.room_id,
        status=r.status,
        requested_by=r.requested_by,
        started_at=r.started_at,
        ended_at=r.ended_at,
        duration_s=r.duration_s,
        size_bytes=r.size_bytes,
        codecs=r.codecs,
        participants=r.participants,
        error=r.error,
        stop_reason=r.stop_reason,
    )


async def _load(svc: Services, recording_id: str) -> Recording | None:
    async with svc.sessions() as session:
        return await session.get(Recording, recording_id, populate_existing=True)


def _may_read(who: Claims, room_id: str) -> None:
    if who.has(Grant.ADMIN) and who.room in (None, room_id):
        return
    if Grant.RECORD in who.grants:
        who.require(Grant.RECORD, room=room_id)
    else:
        who.require(Grant.JOIN, room=room_id)


@router.post(
    "/v1/rooms/{room_id}/recordings",
    status_code=201,
    response_model=RecordingView,
    responses={202: {"model": Accepted}, 403: {}, 404: {}, 409: {}},
)
async def start_recording(
    room_id: Id,
    response: Response,
    req: StartRecording | None = None,
    who: Claims = Depends(claims),
    svc: Services = Depends(services),
    rid: str | None = Depends(request_id),
) -> RecordingView | Accepted:
    """Record a room (grant ``record``)."""
    req = req or StartRecording()
    who.require(Grant.RECORD, room=room_id)
    async with svc.sessions() as session:
        room = await session.get(Room, room_id, populate_existing=True)
        if room is None or room.status != "open":
            raise RoomNotFound(f"room {room_id} does not exist or is closed")
        active = (
            await session.scalars(
                select(Recording.recording_id).where(Recording.room_id == room_id, Recording.status.in_(ACTIVE))
            )
        ).first()
    if active is not None and not req.concurrent:
        raise RecordingActive(f"room {room_id} is already being recorded ({active})")
    recording_id = f"rec-{uuid.uuid4().hex[:16]}"
    intent = RecordingRequested.new(
        room_id=room_id,
        recording_id=recording_id,
        requested_by=who.identity,
        segment_s=req.segment_s,
        concurrent=req.concurrent,
        correlation_id=rid,
    )
    await svc.publish("recording.intents", intent)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + svc.settings.create_wait_s
    while loop.time() < deadline:
        row = await _load(svc, recording_id)
        if row is not None:
            return _view(row)
        await asyncio.sleep(0.05)
    response.status_code = 202
    return Accepted(recording_id=recording_id, room_id=room_id, status="pending", event_id=str(intent.event_id))


@router.delete(
    "/v1/recordings/{recording_id}", status_code=202, response_model=Accepted, responses={403: {}, 404: {}, 409: {}}
)
async def stop_recording(
    recording_id: Id,
    who: Claims = Depends(claims),
    svc: Services = Depends(services),
    rid: str | None = Depends(request_id),
) -> Accepted:
    """Stop a recording (grant ``record``); the recorder assembles its files."""
    who.require(Grant.RECORD)
    row = await _load(svc, recording_id)
    if row is None:
        raise RecordingNotFound(f"recording {recording_id} does not exist")
    who.require(Grant.RECORD, room=row.room_id)
    if row.status not in ACTIVE:
        raise RecordingEnded(f"recording {recording_id} is {row.status}")
    intent = RecordingStopRequested.new(
        room_id=row.room_id, recording_id=recording_id, requested_by=who.identity, correlation_id=rid
    )
    await svc.publish("recording.intents", intent)
    return Accepted(recording_id=recording_id, room_id=row.room_id, status="stopping", event_id=str(intent.event_id))


class CompositeRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    layout: Literal["grid", "speaker"] = "grid"


class RecordingNotCompleted(ApiError):
    status = 409
    code = RestError.RECORDING_NOT_COMPLETED


@router.post(
    "/v1/recordings/{recording_id}/composite",
    status_code=202,
    response_model=Accepted,
    responses={403: {}, 404: {}, 409: {}},
)
async def render_composite(
    recording_id: Id,
    req: CompositeRequest | None = None,
    who: Claims = Depends(claims),
    svc: Services = Depends(services),
    rid: str | None = Depends(request_id),
) -> Accepted:
    """Render a completed recording into one MP4 (grant ``record``); progress shows in
    ``GET /v1/recordings/{id}`` (``composite``)."""
    req = req or CompositeRequest()
    who.require(Grant.RECORD)
    row = await _load(svc, recording_id)
    if row is None:
        raise RecordingNotFound(f"recording {recording_id} does not exist")
    who.require(Grant.RECORD, room=row.room_id)
    if row.status != "completed":
        raise RecordingNotCompleted(f"recording {recording_id} is {row.status}, not completed")
    intent = CompositeRequested.new(
        room_id=row.room_id, recording_id=recording_id, layout=req.layout, requested_by=who.identity, correlation_id=rid
    )
    await svc.publish("recording.intents", intent)
    return Accepted(recording_id=recording_id, room_id=row.room_id, status="rendering", event_id=str(intent.event_id))


@router.get("/v1/recordings", response_model=list[RecordingView])
async def list_recordings(
    room: Id,
    who: Claims = Depends(claims),
    svc: Services = Depends(services),
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
) -> list[RecordingView]:
    """A room's recordings, newest first (a token for the room, or admin)."""
    _may_read(who, room)
    async with svc.sessions() as session:
        rows = (
            await session.scalars(
                select(Recording).where(Recording.room_id == room).order_by(Recording.started_at.desc()).limit(limit)
            )
        ).all()
    return [_view(r) for r in rows]


@router.get("/v1/recordings/{recording_id}", response_model=RecordingView)
async def get_recording(
    recording_id: Id, who: Claims = Depends(claims), svc: Services = Depends(services)
) -> RecordingView:
    """One recording: its tracks with presigned URLs once completed, segments so far."""
    row = await _load(svc, recording_id)
    if row is None:
        raise RecordingNotFound(f"recording {recording_id} does not exist")
    _may_read(who, row.room_id)
    async with svc.sessions() as session:
        tracks = (
            await session.scalars(
                select(RecordingTrack)
                .where(RecordingTrack.recording_id == recording_id)
                .order_by(RecordingTrack.start_s, RecordingTrack.track_id)
            )
        ).all()
        segments = len(
            (
                await session.scalars(
                    select(RecordingSegment.index).where(RecordingSegment.recording_id == recording_id)
                )
            ).all()
        )
    view = _view(row)
    view.segments_uploaded = segments
    view.tracks = [
        TrackView(
            track_id=t.track_id,
            peer_id=t.peer_id,
            identity=t.identity,
            source_id=t.source_id,
            kind=t.kind,
            codec=t.codec,
            start_s=t.start_s,
            duration_s=t.duration_s,
            size_bytes=t.size_bytes,
            frames=t.frames,
            width=t.width,
            height=t.height,
            segments=t.segments,
            gaps=t.gaps,
            file=_file(svc, t.object_key),
        )
        for t in tracks
    ]
    view.manifest = _file(svc, row.manifest_key)
    if row.composite_status is not None:
        view.composite = {
            "status": row.composite_status,
            "layout": row.composite_layout,
            "progress": row.composite_progress,
            "error": row.composite_error,
            "file": _file(svc, row.composite_key) if row.composite_status == "done" else None,
        }
    return view
