"""Project station facts into Postgres: ``stations`` and ``station_commands``.

Reads ``station.events`` (streams' registry facts and command outcomes; heartbeats for
``last_heartbeat_at``) and ``station.commands`` (the commands streams sent). Only streams'
decisions move a status, so the rows agree with what operators were told.

Idempotent and order-safe: a station row moves only forward in time (``changed_at``);
a command row never leaves a final status (succeeded, failed, timed_out, rejected) and
``acked`` never overwrites a final one. Heartbeats of a batch become one update per
station (the newest). Retried while Postgres is down (``streams.projection.retrying``).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import sqlalchemy as sa
from sqlalchemy import bindparam, update
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from db.models import Station, StationCommand
from producers.envelope import Event
from producers.sessions import StationCommand as StationCommandEvent
from producers.sessions import StationCommandTimedOut, StationHeartbeat, StationWentOffline
from producers.stations import StationCommandOutcome, StationCommandRejected, StationWentOnline
from streams.projection import retrying

Row = tuple[Any, dict[str, Any]]
FINAL = ("succeeded", "failed", "timed_out", "rejected")

_station = insert(Station)
ONLINE = _station.on_conflict_do_update(
    index_elements=["station_id"],
    set_={
        c: _station.excluded[c]
        for c in ("name", "site", "online", "gateway_id", "cameras", "gates", "changed_at", "last_event_id")
    },
    where=sa.func.coalesce(Station.changed_at, Station.registered_at) <= _station.excluded.changed_at,
)
OFFLINE = (
    update(Station)
    .where(
        Station.station_id == bindparam("k_station_id"),
        sa.func.coalesce(Station.changed_at, Station.registered_at) <= bindparam("at"),
    )
    .values(online=False, changed_at=bindparam("at"), last_event_id=bindparam("event_id"))
)
HEARTBEAT = (
    update(Station)
    .where(
        Station.station_id == bindparam("k_station_id"),
        sa.func.coalesce(Station.last_heartbeat_at, Station.registered_at) <= bindparam("at"),
    )
    .values(last_heartbeat_at=bindparam("at"))
)
_command = insert(StationCommand)
SENT = _command.on_conflict_do_nothing(index_elements=["command_id"])
REJECTED = _command.on_conflict_do_update(
    index_elements=["command_id"],
    set_={"status": "rejected", "error": _command.excluded.error, "completed_at": _command.excluded.completed_at},
    where=StationCommand.status.not_in(FINAL),
)
_open = update(StationCommand).where(
    StationCommand.command_id == bindparam("k_command_id"), StationCommand.status.not_in(FINAL)
)
ACKED = _open.where(StationCommand.status == "pending").values(status="acked", acked_at=bindparam("at"))
FINISHED = _open.values(
    status=bindparam("status"), completed_at=bindparam("at"), error=bindparam("error"), result=bindparam("result")
)


def _online(f: StationWentOnline) -> list[Row]:
    return [
        (
            ONLINE,
            dict(
                station_id=f.station_id,
                name=f.name,
                site=f.site,
                online=True,
                gateway_id=f.gateway_id,
                cameras=[c.model_dump() for c in f.cameras],
                gates=list(f.gates),
                registered_at=f.occurred_at,
                changed_at=f.occurred_at,
                last_heartbeat_at=f.occurred_at,
                last_event_id=str(f.event_id),
            ),
        )
    ]


def _sent(f: StationCommandEvent) -> list[Row]:
    return [
        (
            SENT,
            dict(
                command_id=f.command_id,
                station_id=f.station_id,
                kind=f.kind,
                payload=f.payload,
                status="pending",
                requested_by=str(f.payload.get("requested_by", "")),
                requested_at=f.occurred_at,
                deadline_at=f.deadline,
            ),
        )
    ]


def _rejected(f: StationCommandRejected) -> list[Row]:
    row = dict(
        command_id=f.command_id,
        station_id=f.station_id,
        kind=f.kind,
        status="rejected",
        requested_by="",
        requested_at=f.occurred_at,
        deadline_at=f.occurred_at,
        completed_at=f.occurred_at,
        error=f"{f.code}: {f.message}",
    )
    return [(REJECTED, row)]


def _outcome(f: StationCommandOutcome) -> list[Row]:
    if f.status == "acked":
        return [(ACKED, dict(k_command_id=f.command_id, at=f.occurred_at))]
    params = dict(k_command_id=f.command_id, status=f.status, at=f.occurred_at, error=f.error, result=f.result)
    return [(FINISHED, params)]


PROJECTORS: dict[type[Event], Callable[[Any], list[Row]]] = {
    StationWentOnline: _online,
    StationWentOffline: lambda f: [
        (OFFLINE, dict(k_station_id=f.station_id, at=f.occurred_at, event_id=str(f.event_id)))
    ],
    StationCommandEvent: _sent,
    StationCommandRejected: _rejected,
    StationCommandOutcome: _outcome,
    StationCommandTimedOut: lambda f: [
        (FINISHED, dict(k_command_id=f.command_id, status="timed_out", at=f.occurred_at, error=None, result={}))
    ],
}


def rows(events: Sequence[Event]) -> list[Row]:
    out = [row for e in events if type(e) in PROJECTORS for row in PROJECTORS[type(e)](e)]
    newest: dict[str, Any] = {}
    for e in events:
        if isinstance(e, StationHeartbeat):
            newest[e.station_id] = max(newest.get(e.station_id, e.occurred_at), e.occurred_at)
    out += [(HEARTBEAT, dict(k_station_id=k, at=at)) for k, at in sorted(newest.items())]
    return out


def runs(rows: Sequence[Row]) -> list[tuple[Any, list[dict[str, Any]]]]:
    """Consecutive rows of one statement as one run (executed as one executemany: the
    upserts compile each time they run, and a registration storm is thousands of
    ``StationWentOnline`` in a row); the order of the rows is kept."""
    out: list[tuple[Any, list[dict[str, Any]]]] = []
    keys: set[Any] = set()
    for stmt, params in rows:
        key = next((params[k] for k in KEYS if k in params), None)
        # a row twice in one run would be one multi-row upsert touching a row twice
        if out and out[-1][0] is stmt and key not in keys:
            out[-1][1].append(params)
        else:
            out.append((stmt, [params]))
            keys = set()
        keys.add(key)
    return out


KEYS = ("station_id", "k_station_id", "command_id", "k_command_id")


async def apply_station_events(conn: AsyncConnection, events: Sequence[Event]) -> int:
    batch = rows(events)
    facts = [(stmt, params) for stmt, params in batch if stmt is not HEARTBEAT]
    for stmt, many in runs(facts):
        await conn.execute(stmt, many)
    beats = [params for stmt, params in batch if stmt is HEARTBEAT]
    if beats:  # one statement for the batch's heartbeats (most of a busy registry's input)
        await conn.execute(HEARTBEAT, beats)
    return len(batch)


async def project_stations(engine: AsyncEngine, events: Sequence[Event]) -> int:
    """Apply a batch in one transaction, retried until Postgres takes it."""
    return await retrying(engine, lambda conn: apply_station_events(conn, events))
