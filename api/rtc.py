"""``WS /v1/rtc``: the signaling socket (docs/protocol.md).

The gateway authenticates the token when the socket opens, validates and authorizes
every message, turns it into an intent on the log, and forwards to the socket what
streams address to this session. A refused message gets an ``error`` and writes
nothing.

Tracing (on with ``ROOMLOG_TRACING``): each message is a span, ``ws <type>``, and the intent
it writes is its child. A ``join`` starts a trace; the messages that negotiate the joined
peer's media (``JOIN_TRACE``) continue it, so a join and its first publish read as one trace
down to the node and back (``notify <type>`` in ``api/hub.py`` sends the answer). Any other
message starts a trace of its own.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections import deque
from collections.abc import Awaitable, Callable
from typing import Any, Literal

from aiokafka.errors import KafkaError
from fastapi import APIRouter, WebSocket, WebSocketDisconnect
from opentelemetry.context import Context
from pydantic import ValidationError
from starlette.websockets import WebSocketState

from api.errors import ApiError, SocketError
from api.ice import ice_servers
from api.messages import Error, Pong, ServerMessage, parse_server
from api.presence import subscribe as subscribe_presence
from api.services import Services
from api.sessions import is_user_id
from api.signaling import TYPES as MESSAGE_TYPES
from api.signaling import (
    CallAnswer,
    Chat,
    IceCandidate,
    IceRestart,
    Join,
    Leave,
    Message,
    Mute,
    OpenGate,
    P2PDescription,
    Ping,
    PresenceSubscribe,
    Publish,
    QualityReport,
    RequestStream,
    SignalingError,
    StationsSubscribe,
    Subscribe,
    SubscriberAnswer,
    TokenBucket,
    Unpublish,
    Unsubscribe,
    check_sdp,
    parse_message,
)
from api.socket_metrics import SocketMeter
from api.stations import socket_request as station_request
from api.tokens import Claims
from observability import tracing
from producers.errors import InvalidChatText
from producers.fields import Grant, RoomType, SourceKind, TrackInfo, chat_text
from producers.media import ClientLeg, QualitySample
from producers.rtc import (
    ChatMessageRequested,
    ConnectionLost,
    JoinRequested,
    LeaveRequested,
    MuteRequested,
    PeerSignalRequested,
    PublishRequested,
    ResumeRequested,
    SubscriberAnswerSubmitted,
    SubscribeRequested,
    UnpublishRequested,
    UnsubscribeRequested,
)
from producers.sessions import CallAnswerRequested

log = logging.getLogger(__name__)
router = APIRouter()

CLOSE_UNAUTHORIZED = 4001
RATE_PER_S = 50.0
RATE_BURST = 100.0
#: At most one ``quality-report`` per this many seconds per connection (accepted reports count).
QUALITY_REPORT_INTERVAL_S = 2.0
METER = SocketMeter("rtc", MESSAGE_TYPES)
#: Messages a socket may have waiting for the log; more get ``unavailable`` (nothing written).
INBOX_LIMIT = 64
#: Messages traced as part of the session's join (docs above).
JOIN_TRACE: tuple[type[Message], ...] = (Publish, SubscriberAnswer, Subscribe, Unpublish, Unsubscribe)


class Connection:
    """One client socket: its token, session and (after join) peer."""

    #: The handler of each message type (``ping`` is answered in ``receive``). Set below the class.
    handlers: dict[type[Message], Callable[[Any, Any], Awaitable[None]]]

    def __init__(self, ws: WebSocket, svc: Services, claims: Claims) -> None:
        self.ws = ws
        self.svc = svc
        self.claims = claims
        self.session_id = f"S{uuid.uuid4().hex[:16]}"
        self.peer_id: str | None = None
        self.room: str | None = None
        self.room_type: str | None = None
        self.joining = False
        self.left = False
        #: The trace context of this session's ``join`` (tracing on; see the module docs).
        self.join_trace: Context | None = None
        #: Sources this peer declared (its accepted `publish` requests, `resumed.tracks`) and
        #: the other peers' sources by id (from what streams told this session): `unpublish`
        #: of an unknown or someone else's source is refused here and writes nothing. A
        #: declared source that is not live (never started, already unpublished) is refused
        #: by streams (`source_not_found`, a RequestRejected fact): a slot may carry media again.
        self.own_sources: set[str] = set()
        self.other_sources: dict[str, str] = {}
        self._send_lock = asyncio.Lock()
        self._rate = TokenBucket(RATE_PER_S, RATE_BURST)
        #: The clock of the quality-report rate (a test may set its own).
        self.clock: Callable[[], float] = time.monotonic
        self._last_report = float("-inf")
        #: Messages waiting for the worker (``receive``) and the worker while they wait.
        self._inbox: deque[Message] = deque()
        self._worker: asyncio.Task[None] | None = None

    # --- outbound ----------------------------------------------------------------

    async def send(self, message: ServerMessage | dict[str, Any]) -> None:
        """Send one server message (``api.messages``); anything else is logged and dropped."""
        if not isinstance(message, ServerMessage):
            raw = message
            try:
                message = parse_server(raw)
            except ValidationError as exc:
                log.error(
                    "not a server message, not sent: %s: %s",
                    raw.get("type"),
                    exc.errors(include_url=False)[:3],
                    extra={"session_id": self.session_id, "peer_id": self.peer_id},
                )
                return
        if isinstance(message, Error):
            METER.error(message.code)
        async with self._send_lock:
            if self.ws.client_state == WebSocketState.CONNECTED:
                await self.ws.send_json(message.wire())

    async def error(self, code: SocketError, message: str, request_id: str | None) -> None:
        await self.send(Error(code=code, message=message, request_id=request_id))

    async def deliver(self, message: dict[str, Any]) -> None:
        """A notification from streams for this session."""
        kind = message.get("type")
        if kind in ("joined", "resumed"):
            self.peer_id, self.joining = message.get("peer_id"), False
            self.room = message.get("room", self.room)
            self.room_type = message.get("room_type", self.room_type)
            message = {**message, "ice_servers": ice_servers(self.svc.settings, self.claims.identity)}
        elif kind == "error" and self.joining:
            self.joining = False
        elif kind == "call-accepted" and "answered_session_id" in message:
            answered = message["answered_session_id"]
            message = {k: v for k, v in message.items() if k != "answered_session_id"}
            message["answered_here"] = answered == self.session_id
        self._track_sources(message)
        await self.send(message)
        if kind == "left" and message.get("peer_id") == self.peer_id:
            # the socket (the user's session: presence, calls) stays open and may join again
            self.peer_id, self.room, self.room_type = None, None, None
            self.own_sources.clear()
            self.other_sources.clear()

    def _track_sources(self, message: dict[str, Any]) -> None:
        """Keep who publishes which source, from the notifications this session gets."""
        kind = message.get("type")
        if kind in ("joined", "resumed"):
            self.other_sources = {
                t["source_id"]: p["peer_id"] for p in message.get("peers", []) for t in p.get("tracks", [])
            }
            if kind == "resumed":
                self.own_sources = {t["source_id"] for t in message.get("tracks", [])}
        elif kind == "track-published":
            self.other_sources[message["track"]["source_id"]] = message["peer_id"]
        elif kind == "track-unpublished":
            self.other_sources.pop(message["source_id"], None)
        elif kind == "peer-left":
            self.other_sources = {s: p for s, p in self.other_sources.items() if p != message.get("peer_id")}

    # --- inbound -----------------------------------------------------------------

    async def handle(self, text: str) -> None:
        """One frame, handled to the end (its intent acknowledged by the broker)."""
        message = await self._accept(text)
        if message is not None:
            await self.dispatch(message)

    async def receive(self, text: str) -> None:
        """One frame from the read loop, which must never wait on the log: ``ping`` is
        answered here; any other message is queued for this socket's worker, which handles
        them one at a time in order (it exists only while messages wait)."""
        message = await self._accept(text)
        if message is None:
            return
        if isinstance(message, Ping):
            await self.on_ping(message)
            return
        if len(self._inbox) >= INBOX_LIMIT:
            request_id = getattr(message, "request_id", None)
            await self.error(SocketError.UNAVAILABLE, "too many requests wait for the log; retry", request_id)
            return
        self._inbox.append(message)
        if self._worker is None:
            self._worker = asyncio.create_task(self._work(), name=f"rtc-{self.session_id}")

    async def _accept(self, text: str) -> Message | None:
        """The rate limit and parsing: the message, or ``None`` when an ``error`` was sent."""
        if not self._rate.take():
            await self.error(SocketError.RATE_LIMITED, "too many messages; slow down", None)
            return None
        try:
            message = parse_message(text)
        except SignalingError as exc:
            await self.error(exc.code, exc.message, exc.request_id)
            return None
        METER.message(getattr(message, "type", ""))
        return message

    async def _work(self) -> None:
        try:
            while self._inbox:
                message = self._inbox.popleft()
                try:
                    await self.dispatch(message)
                except Exception:  # noqa: BLE001 - a bug: closed like an unhandled error in the loop
                    log.exception("rtc message failed", extra={"session_id": self.session_id})
                    self._inbox.clear()
                    with contextlib.suppress(Exception):
                        await self.ws.close(1011)
        finally:
            self._worker = None

    async def drain(self) -> None:
        """Wait until the queued messages are handled (the socket closed: before ``closed``)."""
        worker = self._worker
        if worker is not None:
            with contextlib.suppress(Exception):
                await asyncio.shield(worker)

    async def dispatch(self, message: Message) -> None:
        """Handle one parsed message; a refusal or a log that is away is an ``error``."""
        try:
            if not tracing.enabled():
                await self.handlers[type(message)](self, message)
                return
            parent = self.join_trace if isinstance(message, JOIN_TRACE) else None
            kind = getattr(message, "type", type(message).__name__)
            with tracing.span(
                f"ws {kind}",
                parent=parent,
                root=parent is None,
                room_id=self.room or getattr(message, "room", None),
                peer_id=self.peer_id,
                session_id=self.session_id,
            ):
                if isinstance(message, Join):
                    self.join_trace = tracing.current()
                await self.handlers[type(message)](self, message)
        except SignalingError as exc:
            await self.error(exc.code, exc.message, exc.request_id)
        except KafkaError as exc:
            log.warning(
                "intent not written: %s", exc, extra={"session_id": self.session_id, "type": type(message).__name__}
            )
            if isinstance(message, Join):
                self.joining = False
                if self.peer_id is None:
                    self.room = None
            await self.error(
                SocketError.UNAVAILABLE, "the log did not take the request; retry", getattr(message, "request_id", None)
            )

    def _require(self, grant: Grant, request_id: str | None) -> None:
        if not self.claims.has(grant):
            raise SignalingError(SocketError.FORBIDDEN, f"token does not grant {grant.value}", request_id)

    def _joined(self, request_id: str | None) -> tuple[str, str]:
        if self.peer_id is None or self.room is None:
            raise SignalingError(SocketError.NOT_JOINED, "join a room first", request_id)
        return self.room, self.peer_id

    async def _publish(self, event: Any) -> None:
        await self.svc.publish("rtc.intents", event)

    async def on_join(self, m: Join) -> None:
        if self.peer_id is not None or self.joining:
            raise SignalingError(SocketError.ALREADY_JOINED, "this socket has joined already", m.request_id)
        self._require(Grant.JOIN, m.request_id)
        if self.claims.room is not None and self.claims.room != m.room:
            raise SignalingError(SocketError.FORBIDDEN, f"token is for room {self.claims.room!r}", m.request_id)
        room_type = _room_type(m)
        self.joining, self.room = True, m.room
        gateway = self.svc.settings.gateway_id
        if m.resume_peer_id is not None:
            await self._publish(
                ResumeRequested.new(
                    room_id=m.room,
                    peer_id=m.resume_peer_id,
                    session_id=self.session_id,
                    gateway_id=gateway,
                    identity=self.claims.identity,
                    correlation_id=m.request_id,
                )
            )
            return
        grants = set(self.claims.grants)
        if Grant.ADMIN in grants:
            grants |= {Grant.JOIN, Grant.PUBLISH, Grant.SUBSCRIBE}
        await self._publish(
            JoinRequested.new(
                room_id=m.room,
                peer_id=f"P{uuid.uuid4().hex[:16]}",
                identity=self.claims.identity,
                name=m.name or self.claims.name,
                session_id=self.session_id,
                gateway_id=gateway,
                grants=sorted(grants),
                room_type=room_type,
                correlation_id=m.request_id,
            )
        )

    def _media_node_room(self, request_id: str | None) -> None:
        if self.room_type == RoomType.P2P.value:
            raise SignalingError(
                SocketError.UNSUPPORTED, "p2p rooms carry media peer to peer: use p2p-offer", request_id
            )

    async def on_publish(self, m: Publish) -> None:
        room, peer = self._joined(m.request_id)
        self._media_node_room(m.request_id)
        self._require(Grant.PUBLISH, m.request_id)
        check_sdp(m.sdp, "offer", m.request_id, mids=[t.mid for t in m.tracks])
        tracks = [TrackInfo(source_id=t.source_id, kind=t.kind, layer=t.layer, mid=t.mid) for t in m.tracks]
        await self._publish(
            PublishRequested.new(room_id=room, peer_id=peer, sdp=m.sdp, tracks=tracks, correlation_id=m.request_id)
        )
        self.own_sources |= {t.source_id for t in m.tracks}

    async def on_unpublish(self, m: Unpublish) -> None:
        room, peer = self._joined(m.request_id)
        self._media_node_room(m.request_id)
        if m.source_id not in self.own_sources:
            if m.source_id in self.other_sources:
                raise SignalingError(
                    SocketError.FORBIDDEN, f"source {m.source_id} is published by another peer", m.request_id
                )
            raise SignalingError(SocketError.SOURCE_NOT_FOUND, f"you publish no source {m.source_id}", m.request_id)
        await self._publish(
            UnpublishRequested.new(room_id=room, peer_id=peer, source_id=m.source_id, correlation_id=m.request_id)
        )

    async def on_subscriber_answer(self, m: SubscriberAnswer) -> None:
        room, peer = self._joined(m.request_id)
        self._media_node_room(m.request_id)
        check_sdp(m.sdp, "answer", m.request_id)
        await self._publish(
            SubscriberAnswerSubmitted.new(room_id=room, peer_id=peer, sdp=m.sdp, correlation_id=m.request_id)
        )

    async def on_subscribe(self, m: Subscribe) -> None:
        room, peer = self._joined(m.request_id)
        self._media_node_room(m.request_id)
        self._require(Grant.SUBSCRIBE, m.request_id)
        await self._publish(
            SubscribeRequested.new(
                room_id=room, peer_id=peer, source_id=m.source_id, layer=m.layer, correlation_id=m.request_id
            )
        )

    async def on_unsubscribe(self, m: Unsubscribe) -> None:
        room, peer = self._joined(m.request_id)
        await self._publish(
            UnsubscribeRequested.new(room_id=room, peer_id=peer, source_id=m.source_id, correlation_id=m.request_id)
        )

    async def on_mute(self, m: Mute) -> None:
        room, peer = self._joined(m.request_id)
        await self._publish(
            MuteRequested.new(
                room_id=room,
                peer_id=peer,
                source_kind=SourceKind(m.source_kind),
                muted=m.type == "mute",
                correlation_id=m.request_id,
            )
        )

    async def on_ice_restart(self, m: IceRestart) -> None:
        self._joined(m.request_id)
        raise SignalingError(
            SocketError.UNSUPPORTED, "ice-restart: open a fresh connection (publish again)", m.request_id
        )

    async def on_ice_candidate(self, m: IceCandidate) -> None:
        room, peer = self._joined(m.request_id)
        if self.room_type != RoomType.P2P.value:
            raise SignalingError(SocketError.UNSUPPORTED, "ice-candidate is for p2p rooms", m.request_id)
        if m.to is None:
            raise SignalingError(SocketError.INVALID_MESSAGE, "to: the peer id to relay the candidate to", m.request_id)
        await self._publish(
            PeerSignalRequested.new(
                room_id=room,
                peer_id=peer,
                to_peer_id=m.to,
                kind="candidate",
                candidate=m.candidate,
                correlation_id=m.request_id,
            )
        )

    async def on_p2p_description(self, m: P2PDescription) -> None:
        room, peer = self._joined(m.request_id)
        if self.room_type != RoomType.P2P.value:
            raise SignalingError(SocketError.UNSUPPORTED, f"{m.type} is for p2p rooms", m.request_id)
        kind: Literal["offer", "answer"] = "offer" if m.type == "p2p-offer" else "answer"
        check_sdp(m.sdp, kind, m.request_id)
        await self._publish(
            PeerSignalRequested.new(
                room_id=room, peer_id=peer, to_peer_id=m.to, kind=kind, sdp=m.sdp, correlation_id=m.request_id
            )
        )

    async def on_call_answer(self, m: CallAnswer) -> None:
        if not is_user_id(self.claims.identity):
            raise SignalingError(SocketError.FORBIDDEN, "this identity cannot take part in calls", m.request_id)
        await self.svc.publish(
            "call.events",
            CallAnswerRequested.new(
                call_id=m.call_id,
                user_id=self.claims.identity,
                answer=m.type.removeprefix("call-"),
                gateway_id=self.svc.settings.gateway_id,
                session_id=self.session_id,
                correlation_id=m.request_id,
            ),
        )

    async def on_presence_subscribe(self, m: PresenceSubscribe) -> None:
        if self.svc.presence is None:
            raise SignalingError(SocketError.UNAVAILABLE, "presence is not available on this gateway", m.request_id)
        await subscribe_presence(self.svc, self.svc.presence, self.session_id, self.send, m.request_id)

    async def on_chat(self, m: Chat) -> None:
        room, peer = self._joined(m.request_id)
        try:
            text = chat_text(m.text)
        except InvalidChatText as exc:
            raise SignalingError(SocketError(exc.code), exc.message, m.request_id) from None
        await self._publish(
            ChatMessageRequested.new(
                room_id=room,
                peer_id=peer,
                text=text,
                gateway_id=self.svc.settings.gateway_id,
                session_id=self.session_id,
                correlation_id=m.request_id,
            )
        )

    async def on_quality_report(self, m: QualityReport) -> None:
        """The client's getStats summary: one client ``QualitySample``; no answer when accepted."""
        room, peer = self._joined(m.request_id)
        now = self.clock()
        if now - self._last_report < QUALITY_REPORT_INTERVAL_S:
            raise SignalingError(
                SocketError.RATE_LIMITED,
                f"at most one quality-report per {QUALITY_REPORT_INTERVAL_S:g} s",
                m.request_id,
            )
        self._last_report = now
        up = m.uplink
        await self.svc.publish(
            "quality.samples",
            QualitySample.new(
                room_id=room,
                peer_id=peer,
                leg="client",
                source="client",
                loss_pct=up.loss_pct,
                rtt_ms=up.rtt_ms,
                jitter_ms=up.jitter_ms,
                bitrate_kbps=up.bitrate_kbps,
                level=up.level,
                downlink=[ClientLeg(**leg.model_dump()) for leg in m.downlink],
                correlation_id=m.request_id,
            ),
        )

    async def on_station_request(self, m: Message) -> None:
        """``request-stream``, ``open-gate``, ``stations-subscribe``: api/stations.py."""
        await station_request(self.svc, self.claims, self.session_id, self.send, m)

    async def on_ping(self, m: Ping) -> None:
        await self.send(Pong(request_id=m.request_id))

    async def on_leave(self, m: Leave) -> None:
        room, peer = self._joined(m.request_id)
        await self._publish(LeaveRequested.new(room_id=room, peer_id=peer, correlation_id=m.request_id))

    async def closed(self) -> None:
        """The socket went away without `leave`: streams keep the peer for a grace period."""
        if self.peer_id is not None and self.room is not None and not self.left:
            await self._publish(ConnectionLost.new(room_id=self.room, peer_id=self.peer_id, session_id=self.session_id))


Connection.handlers = {
    Join: Connection.on_join,
    Publish: Connection.on_publish,
    SubscriberAnswer: Connection.on_subscriber_answer,
    Unpublish: Connection.on_unpublish,
    Subscribe: Connection.on_subscribe,
    Unsubscribe: Connection.on_unsubscribe,
    Mute: Connection.on_mute,
    IceRestart: Connection.on_ice_restart,
    IceCandidate: Connection.on_ice_candidate,
    Ping: Connection.on_ping,
    Leave: Connection.on_leave,
    P2PDescription: Connection.on_p2p_description,
    CallAnswer: Connection.on_call_answer,
    PresenceSubscribe: Connection.on_presence_subscribe,
    Chat: Connection.on_chat,
    QualityReport: Connection.on_quality_report,
    RequestStream: Connection.on_station_request,
    OpenGate: Connection.on_station_request,
    StationsSubscribe: Connection.on_station_request,
}


UNSUPPORTED_ROOM_TYPES = {"mcu": "mcu rooms (server-side mixing) are not supported; use sfu"}


def _room_type(m: Join) -> RoomType | None:
    """The type a join asks for if it creates the room; refused types write nothing."""
    if m.room_type is None:
        return None
    if m.room_type in UNSUPPORTED_ROOM_TYPES:
        raise SignalingError(SocketError.UNSUPPORTED_ROOM_TYPE, UNSUPPORTED_ROOM_TYPES[m.room_type], m.request_id)
    try:
        return RoomType(m.room_type)
    except ValueError:
        raise SignalingError(
            SocketError.INVALID_MESSAGE, f"room_type: one of {[t.value for t in RoomType]}", m.request_id
        ) from None


@router.websocket("/v1/rtc")
async def rtc(ws: WebSocket, token: str | None = None) -> None:
    svc: Services = ws.app.state.services
    await ws.accept()
    try:
        claims = svc.issuer.verify(token or "")
    except ApiError as exc:
        METER.error(exc.code)
        await ws.send_json(Error(code=SocketError(exc.code), message=exc.message, request_id=None).wire())
        await ws.close(CLOSE_UNAUTHORIZED, "unauthorized")
        return
    conn = Connection(ws, svc, claims)
    METER.sockets.inc()
    svc.hub.register(conn.session_id, conn.deliver)
    if svc.session_log is not None:
        svc.session_log.opened(claims.identity, conn.session_id, claims.name)
    close_code: int | None = None
    try:
        while True:
            frame = await ws.receive()
            if frame["type"] == "websocket.disconnect":
                close_code = frame.get("code")
                break
            text = frame.get("text")
            if text is None:
                await conn.error(SocketError.INVALID_MESSAGE, "frames are JSON text", None)
                continue
            await conn.receive(text)
    except WebSocketDisconnect:
        pass
    finally:
        METER.sockets.dec()
        svc.hub.unregister(conn.session_id)
        if svc.presence is not None:
            svc.presence.unwatch(conn.session_id)
        if svc.stations is not None:
            svc.stations.unwatch(conn.session_id)
        if svc.session_log is not None:
            svc.session_log.closed(conn.session_id, close_code)
        try:
            await conn.drain()
            await conn.closed()
        except Exception:  # noqa: BLE001 - the broker may be gone at shutdown
            log.exception("could not record the lost connection", extra={"session_id": conn.session_id})
