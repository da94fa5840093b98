"""Project room facts into Postgres (``rooms``, ``room_members``).

Idempotent: every statement is an upsert or an update keyed by room/peer, so a fact
applied twice leaves the same rows. Facts of one room arrive in order (same key).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence
from itertools import groupby
from typing import Any

import asyncpg
from sqlalchemy import bindparam, update
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
#: What a projection retries on: Postgres down, starting or shutting down. asyncpg raises
#: some of these unwrapped (CannotConnectNowError while the server shuts down or starts,
#: InternalClientError on a connection broken mid-query).
POSTGRES_UNAVAILABLE: tuple[type[BaseException], ...] = (
    OSError,
    DBAPIError,
    asyncpg.PostgresError,
    asyncpg.InterfaceError,
    asyncpg.exceptions.InternalClientError,
)
log = logging.getLogger(__name__)


def _upsert(model: Any, keys: tuple[str, ...]) -> Statement:
    """INSERT ... ON CONFLICT (keys) DO UPDATE every other column to the new values.
    Built once; values come as parameters, so the compiled form is cached and a run
    of rows goes out as one executemany."""
    stmt = insert(model)
    columns = [c.name for c in model.__table__.columns if c.name not in keys]
    return stmt.on_conflict_do_update(index_elements=list(keys), set_={c: stmt.excluded[c] for c in columns})


def _update(model: Any, keys: tuple[str, ...], columns: tuple[str, ...]) -> Statement:
    """UPDATE model SET columns WHERE keys, all bound (parameters ``k_<key>``, ``<column>``)."""
    where = [getattr(model, k) == bindparam(f"k_{k}") for k in keys]
    return update(model).where(*where).values({c: bindparam(c) for c in columns})


ROOM_UPSERT = _upsert(Room, ("room_id",))
MEMBER_UPSERT = _upsert(RoomMember, ("room_id", "peer_id"))
ROOM_CLOSED = _update(Room, ("room_id",), ("status", "closed_at", "node_id", "last_event_id"))
ROOM_PLACED = _update(Room, ("room_id",), ("node_id", "last_event_id"))
MEMBER_LEFT = _update(RoomMember, ("room_id", "peer_id"), ("state", "left_at", "left_reason", "last_event_id"))
MEMBER_STATE = _update(RoomMember, ("room_id", "peer_id"), ("state", "last_event_id"))
MEMBER_MEDIA = _update(RoomMember, ("room_id", "peer_id"), ("audio_enabled", "video_enabled", "last_event_id"))

Row = tuple[Statement, dict[str, Any]]


def _room_created(f: RoomCreated) -> Row:
    return ROOM_UPSERT, dict(
        room_id=f.room_id,
        room_type=f.room_type.value,
        creator=f.creator,
        max_participants=f.max_participants,
        empty_timeout_s=f.empty_timeout_s,
        status="open",
        node_id=None,
        created_at=f.occurred_at,
        closed_at=None,
        metadata=dict(f.metadata),
        last_event_id=str(f.event_id),
    )


def _room_closed(f: RoomClosed) -> Row:
    return ROOM_CLOSED, dict(
        k_room_id=f.room_id, status="closed", closed_at=f.occurred_at, node_id=None, last_event_id=str(f.event_id)
    )


def _room_placed(f: RoomPlaced) -> Row:
    return ROOM_PLACED, dict(k_room_id=f.room_id, node_id=f.node_id, last_event_id=str(f.event_id))


def _member(stmt: Statement, f: Event, peer_id: str, **values: Any) -> Row:
    return stmt, dict(
        k_room_id=getattr(f, "room_id"),  # noqa: B009
        k_peer_id=peer_id,
        last_event_id=str(f.event_id),
        **values,
    )


def _peer_joined(f: PeerJoined) -> Row | None:
    if f.hidden:
        return None  # a recorder is not a member anyone lists
    return MEMBER_UPSERT, dict(
        room_id=f.room_id,
        peer_id=f.peer_id,
        identity=f.identity,
        name=f.name,
        state="joined",
        joined_at=f.occurred_at,
        left_at=None,
        left_reason=None,
        audio_enabled=True,
        video_enabled=True,
        last_event_id=str(f.event_id),
    )


def _peer_left(f: PeerLeft) -> Row:
    return _member(MEMBER_LEFT, f, f.peer_id, state="left", left_at=f.occurred_at, left_reason=f.reason)


def _peer_disconnected(f: PeerDisconnected) -> Row:
    return _member(MEMBER_STATE, f, f.peer_id, state="disconnected")


def _peer_resumed(f: PeerResumed) -> Row:
    return _member(MEMBER_STATE, f, f.peer_id, state="joined")


def _peer_updated(f: PeerUpdated) -> Row:
    return _member(MEMBER_MEDIA, f, f.peer_id, audio_enabled=not f.audio_muted, video_enabled=not f.video_muted)


PROJECTORS: dict[type[Event], Callable[[Any], Row | None]] = {
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
    """Apply facts in order on one connection (caller owns the transaction). Consecutive
    rows of the same statement go out as one executemany; order is kept."""
    rows = [row for f in facts if type(f) in PROJECTORS and (row := PROJECTORS[type(f)](f)) is not None]
    for _, run in groupby(rows, key=lambda row: id(row[0])):
        batch = list(run)
        params = [p for _, p in batch]
        await conn.execute(batch[0][0], params if len(params) > 1 else params[0])
    return len(rows)


async def project(engine: AsyncEngine, facts: Sequence[Event]) -> int:
    """Apply a batch in one transaction, retrying until Postgres takes it: an outage
    delays the projection (the batch is not acknowledged meanwhile), never loses it."""
    return await retrying(engine, lambda conn: apply_facts(conn, facts))


async def retrying(engine: AsyncEngine, apply: Callable[[AsyncConnection], Awaitable[int]]) -> int:
    """Run ``apply`` in one transaction until Postgres takes it (backoff up to 5 s)."""
    delay = 0.2
    while True:
        try:
            async with engine.begin() as conn:
                return await apply(conn)
        except POSTGRES_UNAVAILABLE as exc:
            log.warning("projection failed, retrying in %.1fs: %s", delay, exc)
            await engine.dispose()  # drop pooled connections a restart broke
            await asyncio.sleep(delay)
            delay = min(delay * 2, 5.0)
