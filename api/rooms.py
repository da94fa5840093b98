"""Rooms: create and delete go through the log as intents; reads come from the
Postgres read model that streams project."""

from __future__ import annotations

import asyncio
import uuid
from datetime import datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Query, Response
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import select

from api.errors import InvalidRequest, RoomExists, RoomNotFound, UnsupportedRoomType
from api.services import Services, claims, request_id, services
from api.tokens import Claims
from db.models import Room, RoomMember
from producers.fields import Grant, Id, RoomType
from producers.rtc import CreateRoomRequested, DeleteRoomRequested

router = APIRouter(prefix="/v1/rooms", tags=["rooms"])

UNSUPPORTED_ROOM_TYPES = {"mcu": "mcu rooms (server-side mixing) are not supported; use sfu"}


class CreateRoom(BaseModel):
    model_config = ConfigDict(extra="forbid")

    room_id: Id | None = None
    type: Annotated[str, Field(max_length=32)] = "sfu"
    max_participants: Annotated[int, Field(ge=1, le=1000)] = 50
    empty_timeout_s: Annotated[int, Field(ge=1, le=86_400)] = 300
    metadata: dict[str, Any] = Field(default_factory=dict)


class MemberView(BaseModel):
    peer_id: str
    identity: str
    name: str
    state: str
    joined_at: datetime
    audio_enabled: bool
    video_enabled: bool


class RoomView(BaseModel):
    room_id: str
    type: str
    status: str
    max_participants: int
    empty_timeout_s: int
    creator: str | None
    node_id: str | None
    created_at: datetime
    closed_at: datetime | None
    metadata: dict[str, Any]
    members: list[MemberView] | None = None


class Accepted(BaseModel):
    room_id: str
    status: Literal["pending", "closing"]
    event_id: str


def _view(room: Room, members: list[RoomMember] | None = None) -> RoomView:
    return RoomView(
        room_id=room.room_id,
        type=room.room_type,
        status=room.status,
        max_participants=room.max_participants,
        empty_timeout_s=room.empty_timeout_s,
        creator=room.creator,
        node_id=room.node_id,
        created_at=room.created_at,
        closed_at=room.closed_at,
        metadata=room.meta,
        members=None
        if members is None
        else [
            MemberView(
                peer_id=m.peer_id,
                identity=m.identity,
                name=m.name,
                state=m.state,
                joined_at=m.joined_at,
                audio_enabled=m.audio_enabled,
                video_enabled=m.video_enabled,
            )
            for m in members
        ],
    )


async def _load(svc: Services, room_id: str) -> Room | None:
    async with svc.sessions() as session:
        return await session.get(Room, room_id, populate_existing=True)


@router.post("", status_code=201, response_model=RoomView, responses={202: {"model": Accepted}, 409: {}, 400: {}})
async def create_room(
    req: CreateRoom,
    response: Response,
    who: Claims = Depends(claims),
    svc: Services = Depends(services),
    rid: str | None = Depends(request_id),
) -> RoomView | Accepted:
    """Create a room (admin grant). Waits briefly for the room to be projected; answers
    202 with ``status: pending`` if it is not visible yet."""
    who.require(Grant.ADMIN)
    if req.type in UNSUPPORTED_ROOM_TYPES:
        raise UnsupportedRoomType(UNSUPPORTED_ROOM_TYPES[req.type])
    try:
        room_type = RoomType(req.type)
    except ValueError:
        raise InvalidRequest(f"type must be one of {[t.value for t in RoomType]}") from None
    if len(str(req.metadata)) > 4096:
        raise InvalidRequest("metadata is larger than 4 KiB")
    room_id = req.room_id or f"room-{uuid.uuid4().hex[:12]}"
    existing = await _load(svc, room_id)
    if existing is not None and existing.status == "open":
        raise RoomExists(f"room {room_id} already exists")
    intent = CreateRoomRequested.new(
        room_id=room_id,
        room_type=room_type,
        max_participants=req.max_participants,
        empty_timeout_s=req.empty_timeout_s,
        creator=who.identity,
        metadata=req.metadata,
        correlation_id=rid,
    )
    await svc.publish("rtc.intents", intent)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + svc.settings.create_wait_s
    while loop.time() < deadline:
        room = await _load(svc, room_id)
        if room is not None and room.status == "open" and room.created_at == intent.occurred_at:
            return _view(room)
        await asyncio.sleep(0.05)
    response.status_code = 202
    return Accepted(room_id=room_id, status="pending", event_id=str(intent.event_id))


@router.get("", response_model=list[RoomView])
async def list_rooms(
    who: Claims = Depends(claims),
    svc: Services = Depends(services),
    status: Literal["open", "closed", "all"] = "open",
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> list[RoomView]:
    """Rooms from the read model (admin grant), without the private rooms of 1:1 calls."""
    who.require(Grant.ADMIN)
    # a 1:1 call's p2p room (metadata names its call) belongs to its two parties: never listed
    query = select(Room).where(~Room.meta.has_key("call_id")).order_by(Room.created_at.desc()).limit(limit)
    if status != "all":
        query = query.where(Room.status == status)
    async with svc.sessions() as session:
        rooms = (await session.scalars(query)).all()
    return [_view(room) for room in rooms]


@router.get("/{room_id}", response_model=RoomView)
async def get_room(room_id: Id, who: Claims = Depends(claims), svc: Services = Depends(services)) -> RoomView:
    """One room and its current members (admin, or a token for this room)."""
    if not who.has(Grant.ADMIN) or who.room not in (None, room_id):
        who.require(Grant.JOIN, room=room_id)
        if who.room is None:
            who.require(Grant.ADMIN)
    room = await _load(svc, room_id)
    if room is None:
        raise RoomNotFound(f"room {room_id} does not exist")
    async with svc.sessions() as session:
        members = (
            await session.scalars(
                select(RoomMember)
                .where(RoomMember.room_id == room_id, RoomMember.state != "left")
                .order_by(RoomMember.joined_at)
            )
        ).all()
    return _view(room, list(members))


@router.delete("/{room_id}", status_code=202, response_model=Accepted)
async def delete_room(
    room_id: Id, who: Claims = Depends(claims), svc: Services = Depends(services), rid: str | None = Depends(request_id)
) -> Accepted:
    """Close a room (admin grant): every peer is removed and the media node told."""
    who.require(Grant.ADMIN, room=room_id)
    room = await _load(svc, room_id)
    if room is None or room.status != "open":
        raise RoomNotFound(f"room {room_id} does not exist or is closed")
    intent = DeleteRoomRequested.new(room_id=room_id, requested_by=who.identity, correlation_id=rid)
    await svc.publish("rtc.intents", intent)
    return Accepted(room_id=room_id, status="closing", event_id=str(intent.event_id))
