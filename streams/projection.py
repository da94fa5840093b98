"""Project room facts into Postgres (``rooms``, ``room_members``).

Idempotent: every statement is an upsert or an update keyed by room/peer, so a fact
applied twice leaves the same rows. Facts of one room arrive in order (same key).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence
from typing import Any

from sqlalchemy import update
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from db.models import Room, RoomMember
from producers.envelope import Event
from producers.rtc import (
    PeerDisconnected,
    PeerJoined,
    PeerLeft,
    PeerResumed,
    PeerUpdated,
    RoomClosed,
    RoomCreated,
    RoomPlaced,
)

Statement = Any
log = logging.getLogger(__name__)


def _upsert(model: Any, values: dict[str, Any], keys: tuple[str, ...]) -> Statement:
    """INSERT ... ON CONFLICT (keys) DO UPDATE every other column to the new values."""
    stmt = insert(model).values(**values)
    columns = [c.name for c in model.__table__.columns if c.name not in keys]
    return stmt.on_conflict_do_update(index_elements=list(keys),
                                      set_={c: stmt.excluded[c] for c in columns})


def _room_created(f: RoomCreated) -> list[Statement]:
    values = dict(room_id=f.room_id, room_type=f.room_type.value, creator=f.creator,
                  max_participants=f.max_participants, empty_timeout_s=f.empty_timeout_s,
                  status="open", node_id=None, created_at=f.occurred_at, closed_at=None,
                  meta=dict(f.metadata), last_event_id=str(f.event_id))
    return [_upsert(Room, values, ("room_id",))]


def _room_closed(f: RoomClosed) -> list[Statement]:
    return [update(Room).where(Room.room_id == f.room_id).values(
        status="closed", closed_at=f.occurred_at, node_id=None, last_event_id=str(f.event_id))]


def _room_placed(f: RoomPlaced) -> list[Statement]:
    return [update(Room).where(Room.room_id == f.room_id).values(
        node_id=f.node_id, last_event_id=str(f.event_id))]


def _member(f: Event, peer_id: str, **values: Any) -> Statement:
    return update(RoomMember).where(
        RoomMember.room_id == f.room_id, RoomMember.peer_id == peer_id  # type: ignore[attr-defined]
    ).values(last_event_id=str(f.event_id), **values)


def _peer_joined(f: PeerJoined) -> list[Statement]:
    values = dict(room_id=f.room_id, peer_id=f.peer_id, identity=f.identity, name=f.name,
                  state="joined", joined_at=f.occurred_at, left_at=None, left_reason=None,
                  audio_enabled=True, video_enabled=True, last_event_id=str(f.event_id))
    return [_upsert(RoomMember, values, ("room_id", "peer_id"))]


def _peer_left(f: PeerLeft) -> list[Statement]:
    return [_member(f, f.peer_id, state="left", left_at=f.occurred_at, left_reason=f.reason)]


def _peer_disconnected(f: PeerDisconnected) -> list[Statement]:
    return [_member(f, f.peer_id, state="disconnected")]


def _peer_resumed(f: PeerResumed) -> list[Statement]:
    return [_member(f, f.peer_id, state="joined")]


def _peer_updated(f: PeerUpdated) -> list[Statement]:
    return [_member(f, f.peer_id, audio_enabled=not f.audio_muted,
                    video_enabled=not f.video_muted)]


PROJECTORS: dict[type[Event], Callable[[Any], list[Statement]]] = {
    RoomCreated: _room_created,
    RoomClosed: _room_closed,
    RoomPlaced: _room_placed,
    PeerJoined: _peer_joined,
    PeerLeft: _peer_left,
    PeerDisconnected: _peer_disconnected,
    PeerResumed: _peer_resumed,
    PeerUpdated: _peer_updated,
}


async def apply_facts(conn: AsyncConnection, facts: Sequence[Event]) -> int:
    """Apply facts in order on one connection (caller owns the transaction)."""
    applied = 0
    for fact in facts:
        projector = PROJECTORS.get(type(fact))
        if projector is None:
            continue
        for stmt in projector(fact):
            await conn.execute(stmt)
        applied += 1
    return applied


async def project(engine: AsyncEngine, facts: Sequence[Event]) -> int:
    """Apply a batch in one transaction, retrying until Postgres takes it: an outage
    delays the projection (the batch is not acknowledged meanwhile), never loses it."""
    delay = 0.2
    while True:
        try:
            async with engine.begin() as conn:
                return await apply_facts(conn, facts)
        except (OSError, DBAPIError) as exc:
            log.warning("projection failed, retrying in %.1fs: %s", delay, exc)
            await asyncio.sleep(delay)
            delay = min(delay * 2, 5.0)
