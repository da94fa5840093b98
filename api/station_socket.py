"""``WS /v1/station?token=``: the socket an edge agent keeps to a gateway (docs/protocol.md,
"Station socket").

The token must carry the ``station`` grant and is bound to one station id; every
message naming another station is refused (``station_mismatch``) and writes nothing.
After ``register-station`` the gateway writes ``StationRegistered`` and answers
``registered`` with the heartbeat interval; ``heartbeat`` → ``StationHeartbeat``;
``command-ack`` / ``command-result`` → ``StationCommandAcked`` / ``StationCommandCompleted``;
``stream-ended`` → ``StationStreamEnded``. Commands streams address to this socket arrive
as ``command`` messages; a ``start-stream`` gets a short-lived publish token for its room
added here (secrets never go into the log).
"""

from __future__ import annotations

import asyncio
import json
import logging
import uuid
from collections.abc import Awaitable, Callable
from typing import Annotated, Any, Literal, Union

from fastapi import APIRouter, WebSocket, WebSocketDisconnect
from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError
from starlette.websockets import WebSocketState

from api.errors import ApiError
from api.services import Services
from api.signaling import TokenBucket
from api.socket_metrics import SocketMeter
from api.tokens import Claims
from observability import metrics, tracing
from producers.envelope import Event, utcnow
from producers.fields import Grant, Id
from producers.kafka import traceparent
from producers.sessions import (
    StationCamera,
    StationCommandAcked,
    StationCommandCompleted,
    StationHeartbeat,
    StationRegistered,
)
from producers.stations import StationStreamEnded, station_publisher

log = logging.getLogger(__name__)
router = APIRouter()

CLOSE_UNAUTHORIZED = 4001
CLOSE_FORBIDDEN = 4003
MAX_FRAME = 64 * 1024
RATE_PER_S = 20.0
RATE_BURST = 50.0


class StationError(Exception):
    def __init__(self, code: str, message: str, request_id: str | None = None) -> None:
        super().__init__(message)
        self.code, self.message, self.request_id = code, message, request_id


class _Message(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    request_id: Annotated[str, Field(min_length=1, max_length=64)] | None = None
    #: May be repeated in every message; must be the token's station.
    station_id: Id | None = None


class CameraSpec(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    camera_id: Id
    name: Annotated[str, Field(max_length=128)] = ""
    codec: Literal["h264", "vp8"] = "h264"


class Register(_Message):
    type: Literal["register-station"]
    station_id: Id
    name: Annotated[str, Field(max_length=128)] = ""
    site: Annotated[str, Field(max_length=128)] = ""
    cameras: Annotated[list[CameraSpec], Field(max_length=64)] = Field(default_factory=list)
    gates: Annotated[list[Id], Field(max_length=64)] = Field(default_factory=list)
    #: Camera streams the agent still runs (it reconnected without restarting).
    live_cameras: Annotated[list[Id], Field(max_length=64)] = Field(default_factory=list)


class Heartbeat(_Message):
    type: Literal["heartbeat"]


class CommandAck(_Message):
    type: Literal["command-ack"]
    command_id: Id


class CommandResult(_Message):
    type: Literal["command-result"]
    command_id: Id
    ok: bool
    error: Annotated[str, Field(max_length=512)] | None = None
    result: dict[str, Any] = Field(default_factory=dict)


class StreamEnded(_Message):
    type: Literal["stream-ended"]
    camera_id: Id
    reason: Annotated[str, Field(max_length=512)] = ""


StationMessage = Annotated[
    Union[Register, Heartbeat, CommandAck, CommandResult, StreamEnded],  # noqa: UP007
    Field(discriminator="type"),
]
_ADAPTER: TypeAdapter[Any] = TypeAdapter(StationMessage)
TYPES = {"register-station", "heartbeat", "command-ack", "command-result", "stream-ended"}
METER = SocketMeter("station", TYPES)


def parse(text: str) -> _Message:
    try:
        raw = json.loads(text)
    except ValueError as exc:
        raise StationError("invalid_message", f"not JSON: {exc}") from None
    if not isinstance(raw, dict):
        raise StationError("invalid_message", "a message is a JSON object")
    request_id = raw.get("request_id") if isinstance(raw.get("request_id"), str) else None
    if raw.get("type") not in TYPES:
        raise StationError("unknown_type", f"unknown message type {raw.get('type')!r}", request_id)
    try:
        message: _Message = _ADAPTER.validate_python(raw)
    except ValidationError as exc:
        first = exc.errors(include_url=False)[0]
        where = ".".join(str(p) for p in first["loc"][1:])
        raise StationError("invalid_message", f"{where}: {first['msg']}", request_id) from None
    return message


class StationConnection:
    def __init__(self, ws: WebSocket, svc: Services, claims: Claims, station_id: str) -> None:
        self.ws, self.svc, self.claims, self.station_id = ws, svc, claims, station_id
        self.session_id = f"T{uuid.uuid4().hex[:16]}"
        self.registered = False
        self._lock = asyncio.Lock()
        self._rate = TokenBucket(RATE_PER_S, RATE_BURST)
        self.handlers: dict[type[_Message], Callable[[Any], Awaitable[None]]] = {
            Register: self.on_register,
            Heartbeat: self.on_heartbeat,
            CommandAck: self.on_ack,
            CommandResult: self.on_result,
            StreamEnded: self.on_stream_ended,
        }

    async def send(self, message: dict[str, Any]) -> None:
        async with self._lock:
            if self.ws.client_state == WebSocketState.CONNECTED:
                await self.ws.send_json(message)

    async def error(self, code: str, message: str, request_id: str | None) -> None:
        METER.error(code)
        await self.send({"type": "error", "code": code, "message": message, "request_id": request_id})

    async def deliver(self, message: dict[str, Any]) -> None:
        """A command streams addressed to this station's socket."""
        if message.get("type") == "command" and message.get("kind") == "start-stream":
            room = str(message.get("payload", {}).get("room_id", ""))
            token, _ = self.svc.issuer.mint(
                identity=station_publisher(self.station_id),
                name=f"station {self.station_id}",
                room=room,
                grants=[Grant.JOIN, Grant.PUBLISH],
                ttl_s=self.svc.settings.station_publish_token_ttl_s,
                now=utcnow(),
            )
            message = {**message, "token": token}
        if tracing.enabled():  # the edge agent runs the command in this trace (edge/agent.py)
            message = {**message, "traceparent": traceparent()}
        await self.send(message)

    async def handle(self, text: str) -> None:
        if not self._rate.take():
            await self.error("rate_limited", "too many messages; slow down", None)
            return
        try:
            message = parse(text)
            METER.message(getattr(message, "type", ""))
            if message.station_id is not None and message.station_id != self.station_id:
                raise StationError(
                    "station_mismatch",
                    f"this token is for station {self.station_id!r}, not {message.station_id!r}",
                    message.request_id,
                )
            if not isinstance(message, Register) and not self.registered:
                raise StationError("not_registered", "send register-station first", message.request_id)
            await self.handlers[type(message)](message)
        except StationError as exc:
            await self.error(exc.code, exc.message, exc.request_id)

    async def _publish(self, event: Event) -> None:
        await self.svc.publish("station.events", event)

    async def _publish_soon(self, event: Event) -> None:
        """Hand ``event`` to the producer without waiting for the broker: heartbeats and acks.
        Order is kept (one station, one partition, an idempotent producer), so a result
        published after an ack is acknowledged only once the ack is on the log too."""
        future = await self.svc.producer.send_soon(self.svc.topics.name("station.events"), event)
        metrics.API_INTENTS.labels(event.type).inc()

        def failed(f: asyncio.Future[Any]) -> None:
            if not f.cancelled() and f.exception() is not None:
                log.warning("station event not written: %s", f.exception(), extra={"station_id": self.station_id})

        future.add_done_callback(failed)

    async def on_register(self, m: Register) -> None:
        ids = [c.camera_id for c in m.cameras]
        if len(set(ids)) != len(ids) or len(set(m.gates)) != len(m.gates):
            raise StationError("invalid_message", "camera and gate ids must be unique", m.request_id)
        self.svc.hub.register(self.session_id, self.deliver)
        heartbeat_s = self.svc.settings.station_heartbeat_s
        await self._publish(
            StationRegistered.new(
                station_id=self.station_id,
                gateway_id=self.svc.settings.gateway_id,
                session_id=self.session_id,
                name=m.name,
                site=m.site,
                cameras=ids,
                camera_info=[StationCamera(**c.model_dump()) for c in m.cameras],
                gates=list(m.gates),
                heartbeat_s=heartbeat_s,
                live_cameras=list(m.live_cameras),
                correlation_id=m.request_id,
            )
        )
        self.registered = True
        await self.send(
            {
                "type": "registered",
                "station_id": self.station_id,
                "session_id": self.session_id,
                "heartbeat_s": heartbeat_s,
                "request_id": m.request_id,
            }
        )

    async def on_heartbeat(self, m: Heartbeat) -> None:
        if self.svc.heartbeats is not None:  # coalesced: api/stations_heartbeats.py
            self.svc.heartbeats.beat(self.station_id, self.session_id)
            return
        await self._publish_soon(
            StationHeartbeat.new(
                station_id=self.station_id, gateway_id=self.svc.settings.gateway_id, session_id=self.session_id
            )
        )

    async def on_ack(self, m: CommandAck) -> None:
        await self._publish_soon(
            StationCommandAcked.new(station_id=self.station_id, command_id=m.command_id, correlation_id=m.request_id)
        )

    async def on_result(self, m: CommandResult) -> None:
        await self._publish(
            StationCommandCompleted.new(
                station_id=self.station_id,
                command_id=m.command_id,
                ok=m.ok,
                error=m.error,
                result=m.result,
                correlation_id=m.request_id,
            )
        )
        # the agent may forget the report once it is on the log
        await self.send({"type": "accepted", "command_id": m.command_id, "request_id": m.request_id})

    async def on_stream_ended(self, m: StreamEnded) -> None:
        await self._publish(
            StationStreamEnded.new(
                station_id=self.station_id, camera_id=m.camera_id, reason=m.reason, correlation_id=m.request_id
            )
        )


def station_of(claims: Claims) -> str:
    if Grant.STATION not in claims.grants or not claims.station:
        raise StationError("forbidden", "a station socket needs a station token (grant station, bound to a station)")
    return claims.station


@router.websocket("/v1/station")
async def station_socket(ws: WebSocket, token: str | None = None) -> None:
    svc: Services = ws.app.state.services
    await ws.accept()
    try:
        claims = svc.issuer.verify(token or "")
        station_id = station_of(claims)
    except ApiError as exc:
        METER.error(exc.code)
        await ws.send_json({"type": "error", "code": exc.code, "message": exc.message, "request_id": None})
        await ws.close(CLOSE_UNAUTHORIZED, "unauthorized")
        return
    except StationError as exc:
        METER.error(exc.code)
        await ws.send_json({"type": "error", "code": exc.code, "message": exc.message, "request_id": None})
        await ws.close(CLOSE_FORBIDDEN, "forbidden")
        return
    conn = StationConnection(ws, svc, claims, station_id)
    METER.sockets.inc()
    try:
        while True:
            frame = await ws.receive()
            if frame["type"] == "websocket.disconnect":
                break
            text = frame.get("text")
            if text is None:
                await conn.error("invalid_message", "frames are JSON text", None)
                continue
            if len(text) > MAX_FRAME:
                await ws.close(1009, "message too big")
                break
            await conn.handle(text)
    except WebSocketDisconnect:
        pass
    finally:
        METER.sockets.dec()
        svc.hub.unregister(conn.session_id)
        log.info("station socket closed", extra={"station_id": station_id, "session_id": conn.session_id})
