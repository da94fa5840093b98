"""Stations for operators: ``GET /v1/stations``, ``GET /v1/stations/{id}``, request a camera
stream, open a gate, read a command's outcome; and the same requests as socket messages
(``request-stream``, ``open-gate``, ``stations-subscribe`` on ``/v1/rtc``).

Reads come from the Postgres read model (``stations``, ``station_commands``) that streams
project. A request is checked here first (grant ``station_control``, station, camera or
gate known from the read model, station online) and refused with its code writing
nothing; streams check again when they decide (``StationCommandRejected``). The outcome
of an accepted request is addressed to the asking socket (``command``, ``stream-ready``,
``stream-failed`` messages); a REST request waits for it a little (``wait_s``).
"""

from __future__ import annotations

import asyncio
import re
import uuid
from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Response
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import select

from api.errors import (
    ApiError,
    CameraNotFound,
    CommandNotFound,
    Forbidden,
    GateNotFound,
    StationNotFound,
    StationOffline,
)
from api.messages import SocketError
from api.services import Services, claims, request_id, services
from api.signaling import Message, OpenGate, RequestStream, SignalingError, StationsSubscribe
from api.tokens import Claims
from db.models import Station, StationCommand
from producers.fields import Grant, Id
from producers.sessions import StreamRequested
from producers.stations import StationCommandRequested, station_room

router = APIRouter(prefix="/v1", tags=["stations"])


class CameraView(BaseModel):
    camera_id: str
    name: str = ""
    codec: str = "h264"


class StationView(BaseModel):
    station_id: str
    name: str
    site: str
    status: Literal["online", "offline"]
    cameras: list[CameraView]
    gates: list[str]
    gateway_id: str | None
    last_heartbeat_at: datetime | None
    changed_at: datetime | None


class StationList(BaseModel):
    stations: list[StationView]


class CommandView(BaseModel):
    command_id: str
    station_id: str
    kind: str
    #: ``pending`` (sent to the station), ``acked``, ``succeeded``, ``failed``, ``timed_out``,
    #: ``rejected``; a REST request answered before streams projected the row says ``requested``.
    status: str
    error: str | None = None
    result: dict[str, Any] = Field(default_factory=dict)


class StreamView(BaseModel):
    station_id: str
    camera_id: str
    command_id: str
    #: ``ready``: play ``room``/``source_id`` (SDK) or ``whep_url``; ``pending``: not yet
    #: (the asking socket, if any, gets ``stream-ready``); ``failed``: see ``reason``.
    status: Literal["ready", "pending", "failed"]
    room: str
    source_id: str = "camera"
    whep_url: str
    reason: str | None = None


class GateRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    #: The operator's command id: a retry with the same id never opens the gate twice.
    command_id: Id | None = None
    #: How long to wait for the outcome before answering 202 (0: answer at once).
    wait_s: Annotated[float, Field(ge=0, le=30)] = 0.0


class StreamRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    wait_s: Annotated[float, Field(ge=0, le=30)] = 10.0


def view(row: Station) -> StationView:
    return StationView(
        station_id=row.station_id,
        name=row.name,
        site=row.site,
        status="online" if row.online else "offline",
        cameras=[CameraView(**c) for c in row.cameras],
        gates=[str(g) for g in row.gates],
        gateway_id=row.gateway_id,
        last_heartbeat_at=row.last_heartbeat_at,
        changed_at=row.changed_at,
    )


def require_control(who: Claims) -> None:
    if not who.has(Grant.STATION_CONTROL):
        raise Forbidden("token does not grant station_control")


def viewer_id(who: Claims) -> str:
    """The operator's identity as a log id (``viewer_id`` of ``StreamRequested``)."""
    return re.sub(r"[^A-Za-z0-9_.:-]", "-", who.identity)[:64] or "operator"


async def load(svc: Services, status: str | None = None) -> list[StationView]:
    query = select(Station).order_by(Station.station_id)
    if status is not None:
        query = query.where(Station.online.is_(status == "online"))
    async with svc.sessions() as session:
        return [view(r) for r in (await session.scalars(query)).all()]


async def load_one(svc: Services, station_id: str) -> StationView:
    async with svc.sessions() as session:
        row = await session.get(Station, station_id)
    if row is None:
        raise StationNotFound(f"no station {station_id!r}")
    return view(row)


async def check_stream(svc: Services, who: Claims, station_id: str, camera_id: str) -> StationView:
    require_control(who)
    station = await load_one(svc, station_id)
    if camera_id not in [c.camera_id for c in station.cameras]:
        raise CameraNotFound(f"station {station_id} has no camera {camera_id!r}")
    if station.status != "online":
        raise StationOffline(f"station {station_id} is offline")
    return station


async def check_gate(svc: Services, who: Claims, station_id: str, gate_id: str) -> StationView:
    require_control(who)
    station = await load_one(svc, station_id)
    if gate_id not in station.gates:
        raise GateNotFound(f"station {station_id} has no gate {gate_id!r}")
    if station.status != "online":
        raise StationOffline(f"station {station_id} is offline")
    return station


def stream_requested(
    svc: Services, who: Claims, station_id: str, camera_id: str, session_id: str, rid: str | None
) -> StreamRequested:
    return StreamRequested.new(
        station_id=station_id,
        camera_id=camera_id,
        viewer_id=viewer_id(who),
        command_id=f"K{uuid.uuid4().hex[:16]}",
        gateway_id=svc.settings.gateway_id,
        session_id=session_id,
        correlation_id=rid,
    )


def gate_requested(
    svc: Services, who: Claims, station_id: str, gate_id: str, command_id: str | None, session_id: str, rid: str | None
) -> StationCommandRequested:
    return StationCommandRequested.new(
        station_id=station_id,
        command_id=command_id or f"K{uuid.uuid4().hex[:16]}",
        kind="open-gate",
        payload={"gate_id": gate_id},
        requested_by=who.identity[:128],
        gateway_id=svc.settings.gateway_id,
        session_id=session_id,
        correlation_id=rid,
    )


async def publish_and_wait(
    svc: Services, event: StreamRequested | StationCommandRequested, reply: str, wait_s: float, final: set[str]
) -> dict[str, Any] | None:
    """Publish ``event`` with ``reply`` as its answer address; the first message whose
    ``type`` or ``status`` is in ``final`` within ``wait_s``, else None."""
    done: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()

    async def on_reply(message: dict[str, Any]) -> None:
        if not done.done() and (message.get("type") in final or message.get("status") in final):
            done.set_result(message)

    svc.hub.register(reply, on_reply)
    try:
        await svc.publish("station.events", event)
        if wait_s <= 0:
            return None
        return await asyncio.wait_for(done, wait_s)
    except TimeoutError:
        return None
    finally:
        svc.hub.unregister(reply)


@router.get("/stations", response_model=StationList)
async def list_stations(
    status: Literal["online", "offline"] | None = None,
    who: Claims = Depends(claims),
    svc: Services = Depends(services),
) -> StationList:
    """Every station the registry knows (``status`` filters); grant ``station_control``."""
    require_control(who)
    return StationList(stations=await load(svc, status))


@router.get("/stations/{station_id}", response_model=StationView)
async def get_station(station_id: str, who: Claims = Depends(claims), svc: Services = Depends(services)) -> StationView:
    require_control(who)
    return await load_one(svc, station_id)


@router.post(
    "/stations/{station_id}/cameras/{camera_id}/stream",
    response_model=StreamView,
    responses={202: {"model": StreamView}, 403: {}, 404: {}, 409: {}},
)
async def request_stream(
    station_id: str,
    camera_id: str,
    response: Response,
    req: StreamRequest | None = None,
    who: Claims = Depends(claims),
    svc: Services = Depends(services),
    rid: str | None = Depends(request_id),
) -> StreamView:
    """Start (or join) the camera's stream: 200 ``ready`` with the room and WHEP URL once
    the station publishes it, 202 ``pending`` if it is not ready within ``wait_s``."""
    await check_stream(svc, who, station_id, camera_id)
    reply = f"R{uuid.uuid4().hex[:16]}"
    event = stream_requested(svc, who, station_id, camera_id, reply, rid)
    room = station_room(station_id, camera_id)
    wait_s = (req or StreamRequest()).wait_s
    message = await publish_and_wait(svc, event, reply, wait_s, {"stream-ready", "stream-failed"})
    out = StreamView(
        station_id=station_id,
        camera_id=camera_id,
        command_id=event.command_id,
        status="pending",
        room=room,
        whep_url=f"/v1/whep/{room}/camera",
    )
    if message is None:
        response.status_code = 202
        return out
    if message["type"] == "stream-failed":
        return out.model_copy(update={"status": "failed", "reason": message.get("reason")})
    return out.model_copy(update={"status": "ready", "whep_url": message.get("whep_url", out.whep_url)})


@router.post(
    "/stations/{station_id}/gates/{gate_id}/open",
    response_model=CommandView,
    responses={202: {"model": CommandView}, 403: {}, 404: {}, 409: {}},
)
async def open_gate(
    station_id: str,
    gate_id: str,
    response: Response,
    req: GateRequest | None = None,
    who: Claims = Depends(claims),
    svc: Services = Depends(services),
    rid: str | None = Depends(request_id),
) -> CommandView:
    """Open a gate: 202 with the command id (poll ``GET .../commands/{id}``), or 200 with
    the outcome if it arrives within ``wait_s``. The same ``command_id`` twice opens once."""
    body = req or GateRequest()
    await check_gate(svc, who, station_id, gate_id)
    reply = f"R{uuid.uuid4().hex[:16]}"
    event = gate_requested(svc, who, station_id, gate_id, body.command_id, reply, rid)
    final = {"succeeded", "failed", "timed-out", "rejected"}
    message = await publish_and_wait(svc, event, reply, body.wait_s, final)
    if message is None:
        response.status_code = 202
        return CommandView(command_id=event.command_id, station_id=station_id, kind="open-gate", status="requested")
    return CommandView(
        command_id=event.command_id,
        station_id=station_id,
        kind="open-gate",
        status=str(message["status"]).replace("-", "_"),
        error=message.get("error") or message.get("code"),
        result=message.get("result") or {},
    )


@router.get("/stations/{station_id}/commands/{command_id}", response_model=CommandView)
async def get_command(
    station_id: str, command_id: str, who: Claims = Depends(claims), svc: Services = Depends(services)
) -> CommandView:
    require_control(who)
    async with svc.sessions() as session:
        row = await session.get(StationCommand, command_id)
    if row is None or row.station_id != station_id:
        raise CommandNotFound(f"no command {command_id!r} for station {station_id!r}")
    return CommandView(
        command_id=row.command_id,
        station_id=row.station_id,
        kind=row.kind,
        status=row.status,
        error=row.error,
        result=row.result,
    )


# --- the operator's socket (``/v1/rtc``) ------------------------------------------------

Send = Callable[[dict[str, Any]], Awaitable[None]]


async def socket_request(svc: Services, who: Claims, session_id: str, send: Send, m: Message) -> None:
    """``request-stream``, ``open-gate``, ``stations-subscribe`` from an operator's socket:
    checked like the REST routes (same codes, as ``error`` messages), answered on the socket."""
    try:
        if isinstance(m, StationsSubscribe):
            require_control(who)
            if svc.stations is None:
                raise SignalingError(
                    SocketError.UNAVAILABLE, "stations are not available on this gateway", m.request_id
                )
            svc.stations.watch(session_id, send)  # changes first, then the snapshot
            rows = await load(svc)
            snapshot = [s.model_dump(mode="json") for s in rows]
            await send({"type": "stations", "snapshot": True, "stations": snapshot, "request_id": m.request_id})
        elif isinstance(m, RequestStream):
            await check_stream(svc, who, m.station_id, m.camera_id)
            event = stream_requested(svc, who, m.station_id, m.camera_id, session_id, m.request_id)
            await svc.publish("station.events", event)
            room = station_room(m.station_id, m.camera_id)
            await send(
                {
                    "type": "stream-requested",
                    "station_id": m.station_id,
                    "camera_id": m.camera_id,
                    "command_id": event.command_id,
                    "room": room,
                    "request_id": m.request_id,
                }
            )
        elif isinstance(m, OpenGate):
            await check_gate(svc, who, m.station_id, m.gate_id)
            gate = gate_requested(svc, who, m.station_id, m.gate_id, m.command_id, session_id, m.request_id)
            await svc.publish("station.events", gate)
    except ApiError as exc:
        raise SignalingError(SocketError(exc.code.value), exc.message, m.request_id) from None
