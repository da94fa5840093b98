"""``Room``: join a roomlog room, publish tracks, receive the others' tracks.

Two peer connections with the room's media node, as in the protocol: a publisher
connection (we offer) and a subscriber connection (the node offers; every new
subscription renegotiates it). On ``reconnect`` (the room moved to another node) the
SDK rejoins and republishes by itself; when the socket drops it resumes the peer, or
joins again when the server no longer has it. Received video recovers from a packet nobody
could retransmit within a fraction of a second (``client.aiortc_glue``). ``send_chat`` posts
to the room's chat; every peer gets each message as a ``("chat", ChatMessage)`` event.

Quality (docs/web.md, "Network-quality level"): every ``REPORT_INTERVAL_S`` the SDK reads
its connections' stats, sends a ``quality-report`` and updates ``room.quality`` (uplink and
per remote participant levels 1-6 with loss/RTT/bitrate); a change of any level emits
``("quality", RoomQuality)``; streams' own ``quality`` message comes as
``("quality-decision", dict)``. Dynacast: an ``encodings`` message stops the encodings of a
source it does not list and starts the listed ones again, each with a keyframe.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from aiortc import (
    MediaStreamTrack,
    RTCBundlePolicy,
    RTCConfiguration,
    RTCIceServer,
    RTCIceTransportPolicy,
    RTCPeerConnection,
    RTCRtpCodecCapability,
    RTCRtpSender,
    RTCRtpTransceiver,
    RTCSessionDescription,
)
from websockets.exceptions import ConnectionClosed

from client.aiortc_glue import is_sending, recover_losses, set_sending
from client.quality import RoomQuality
from client.quality_tracker import QualityTracker
from client.signaling import RoomError, Signaling

log = logging.getLogger(__name__)

__all__ = ["ChatMessage", "LocalTrack", "RemoteTrack", "Room", "RoomError", "rtc_configuration"]


@dataclass
class LocalTrack:
    """A track to publish: one encoding of a source (``layer`` high/mid/low, or single)."""

    track: MediaStreamTrack
    source_id: str
    kind: str  # camera | microphone | screen
    layer: str = "single"
    #: Send in this codec (``H264``, ``VP8``, ``opus``...) when the node accepts it; None:
    #: aiortc's preference order (VP8 first).
    codec: str | None = None
    #: Called with the track's transceiver right after it is added, before the offer (codec
    #: preferences, a passthrough sender: ``client.passthrough``).
    prepare: Callable[[RTCRtpTransceiver], None] | None = None


@dataclass
class RemoteTrack:
    peer_id: str
    source_id: str
    kind: str
    track: MediaStreamTrack


@dataclass(frozen=True)
class ChatMessage:
    """A message of the room's chat (the ``chat`` server message). ``id`` is the id of
    its ``ChatMessagePosted`` fact; ``at`` when the gateway received it."""

    id: str
    peer_id: str
    identity: str
    name: str
    text: str
    at: datetime

    @classmethod
    def from_message(cls, m: dict[str, Any]) -> ChatMessage:
        return cls(
            id=m["id"],
            peer_id=m["peer_id"],
            identity=m.get("identity", ""),
            name=m.get("name", ""),
            text=m["text"],
            at=datetime.fromisoformat(m["at"]),
        )


#: How many chat message ids a room remembers to drop a re-delivered message.
CHAT_SEEN = 512
#: Seconds between two ``quality-report``s: the gateway takes at most one per 2 s, and this
#: margin keeps network jitter from bringing two closer than that.
REPORT_INTERVAL_S = 2.2
#: ``request_id`` prefix of quality reports: their refusals are not room errors.
REPORT_ID = "quality-"

Listener = Callable[[str, Any], Awaitable[None] | None]


def rtc_configuration(ice_servers: list[dict[str, Any]], policy: str = "all") -> RTCConfiguration:
    """``RTCConfiguration`` from the protocol's ``ice_servers`` (``{urls, username?, credential?}``).

    aiortc uses the first STUN and the first TURN URL it supports (``turn:`` over UDP or
    TCP, ``turns:`` over TCP); the rest are ignored.

    Every m-line rides one transport (``max-bundle``), as the media node's offers have it.
    With aiortc's default (``balanced``), an offer that adds two m-lines of one kind at once
    (a subscriber joining a room with two microphones in it) leaves the second on a
    transport aiortc closes while bundling: that track never receives a packet, and its
    packets are routed by payload type into the other track's receiver (aiortc issue #1414).
    """
    servers = [
        RTCIceServer(urls=s["urls"], username=s.get("username"), credential=s.get("credential")) for s in ice_servers
    ]
    return RTCConfiguration(
        iceServers=servers, iceTransportPolicy=RTCIceTransportPolicy(policy), bundlePolicy=RTCBundlePolicy.MAX_BUNDLE
    )


def codec_preferences(kind: str, codec: str) -> list[RTCRtpCodecCapability]:
    """``codec`` (and RTX) out of aiortc's capabilities for ``kind``, as preferences."""
    wanted = f"{kind}/{codec}".lower()
    chosen = [c for c in RTCRtpSender.getCapabilities(kind).codecs if c.mimeType.lower() in (wanted, f"{kind}/rtx")]
    if not any(c.mimeType.lower() == wanted for c in chosen):
        raise ValueError(f"aiortc cannot send {codec!r} {kind}")
    return sorted(chosen, key=lambda c: c.mimeType.lower().endswith("/rtx"))  # the codec first


def apply_encodings(senders: list[tuple[LocalTrack, RTCRtpTransceiver]], message: dict[str, Any]) -> list[str] | None:
    """Dynacast (an ``encodings`` message): each video encoding of the source sends RTP only if
    its layer is listed in ``active`` (``single`` for a one-encoding source); one started again
    begins with a keyframe. Microphones are never stopped. Returns the active list (None if the
    message is malformed)."""
    source_id, active = message.get("source_id"), message.get("active")
    if not isinstance(source_id, str) or not isinstance(active, list):
        return None
    layers = [str(a) for a in active]
    for local, transceiver in senders:
        if local.source_id == source_id and local.kind != "microphone":
            set_sending(transceiver.sender, local.layer in layers)
    return layers


@dataclass
class Room:
    url: str
    token: str
    room: str
    name: str = ""
    #: Overrides the ICE servers the gateway sends in ``joined``/``resumed`` when not None.
    ice_servers: list[dict[str, Any]] | None = None
    #: ``"all"`` or ``"relay"`` (only TURN relayed candidates: aiortc's iceTransportPolicy).
    ice_transport_policy: str = "all"
    #: What the gateway sent last (STUN/TURN with fresh ephemeral credentials).
    server_ice_servers: list[dict[str, Any]] = field(default_factory=list)
    #: Received video asks for a keyframe (and skips to it) when a lost packet is not
    #: retransmitted, instead of aiortc's wait for 512 packets (``client.aiortc_glue``).
    recover_video: bool = True
    #: Called with each subscriber-side transceiver and the source offered on it, before media
    #: arrives, instead of ``recover_video`` (the recorder taps encoded packets: ``client.recording``).
    receiver_hook: Callable[[RTCRtpTransceiver, dict[str, Any]], None] | None = None
    #: Rewrites the publisher offer's SDP before it is sent (``client.passthrough.offer_with_profile``).
    offer_rewrite: Callable[[str], str] | None = None
    peer_id: str | None = None
    peers: dict[str, dict[str, Any]] = field(default_factory=dict)
    remote: dict[tuple[str, str], RemoteTrack] = field(default_factory=dict)
    events: asyncio.Queue[tuple[str, Any]] = field(default_factory=asyncio.Queue)
    reconnects: int = 0

    def __post_init__(self) -> None:
        if self.ice_transport_policy not in ("all", "relay"):
            raise ValueError(f"ice_transport_policy is 'all' or 'relay', not {self.ice_transport_policy!r}")
        self._signaling = Signaling(self.url, self.token, self._on_message, self._on_socket_lost)
        self._published: list[LocalTrack] = []
        self._publisher: RTCPeerConnection | None = None
        #: The publisher connection's transceivers, one per published LocalTrack.
        self._senders: list[tuple[LocalTrack, RTCRtpTransceiver]] = []
        self._subscriber: RTCPeerConnection | None = None
        self._offered: dict[str, dict[str, Any]] = {}
        self._listeners: list[Listener] = []
        self._chat_seen: deque[str] = deque(maxlen=CHAT_SEEN)
        self._closed = False
        self._lock = asyncio.Lock()
        self._tracker = QualityTracker()
        self._quality_task: asyncio.Task[None] | None = None
        #: ``quality-report``s sent (their request ids are ``quality-1``, ``quality-2``, ...).
        self.reports_sent = 0
        #: Refusals of our quality reports by code (``rate_limited`` should stay rare).
        self.report_errors: dict[str, int] = {}
        #: Dynacast: the encodings streams last asked us to send, per source.
        self.encodings: dict[str, list[str]] = {}

    # --- lifecycle -------------------------------------------------------------------

    @classmethod
    async def connect(
        cls,
        url: str,
        token: str,
        room: str,
        *,
        name: str = "",
        ice_servers: list[dict[str, Any]] | None = None,
        ice_transport_policy: str = "all",
        receiver_hook: Callable[[RTCRtpTransceiver, dict[str, Any]], None] | None = None,
    ) -> Room:
        """Open the socket and join ``room``. ``ice_servers`` overrides what the server sends;
        ``ice_transport_policy="relay"`` uses TURN relayed candidates only."""
        self = cls(
            url=url,
            token=token,
            room=room,
            name=name,
            ice_servers=ice_servers,
            ice_transport_policy=ice_transport_policy,
            receiver_hook=receiver_hook,
        )
        await self.open()
        return self

    async def open(self) -> None:
        """Open the socket, join and start the quality reports (``connect`` does this; a room
        built by hand can add listeners first, to miss no event)."""
        await self._signaling.open()
        await self._join()
        if self._quality_task is None:
            self._quality_task = asyncio.create_task(self._quality_loop(), name="roomlog-quality")

    async def _join(self, resume: bool = False) -> None:
        message: dict[str, Any] = {"type": "join", "room": self.room, "name": self.name}
        if resume and self.peer_id:
            message["resume_peer_id"] = self.peer_id
        joined = await self._signaling.request(message, {"joined", "resumed"})
        self.peer_id = joined["peer_id"]
        self.server_ice_servers = list(joined.get("ice_servers") or [])
        self.peers = {p["peer_id"]: p for p in joined.get("peers", [])}
        await self._emit(joined["type"], joined)

    async def leave(self) -> None:
        with contextlib.suppress(RoomError, asyncio.TimeoutError):
            await self._signaling.request({"type": "leave"}, {"left"}, timeout=5)
        await self.close()

    async def close(self) -> None:
        self._closed = True
        if self._quality_task is not None:
            self._quality_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._quality_task
        await self._signaling.close()
        for pc in (self._publisher, self._subscriber):
            if pc is not None:
                await pc.close()

    def on(self, listener: Listener) -> None:
        """Call ``listener(event_type, payload)`` for every room event."""
        self._listeners.append(listener)

    async def _emit(self, kind: str, payload: Any) -> None:
        await self.events.put((kind, payload))
        for listener in self._listeners:
            result = listener(kind, payload)
            if asyncio.iscoroutine(result):
                await result

    def _config(self) -> RTCConfiguration:
        """aiortc configuration for a new connection: the override, else what the gateway sent."""
        return rtc_configuration(
            self.server_ice_servers if self.ice_servers is None else self.ice_servers, self.ice_transport_policy
        )

    # --- publishing ------------------------------------------------------------------

    async def publish(self, tracks: list[LocalTrack]) -> None:
        """Publish tracks on a (new) publisher connection."""
        self._published = list(tracks)
        await self._open_publisher()

    async def _open_publisher(self) -> None:
        if self._publisher is not None:
            await self._publisher.close()
        pc = RTCPeerConnection(self._config())
        self._publisher = pc
        self._log_states(pc, "publisher")
        transceivers = [pc.addTransceiver(t.track, direction="sendonly") for t in self._published]
        for local, transceiver in zip(self._published, transceivers, strict=True):
            if local.codec:
                transceiver.setCodecPreferences(codec_preferences(transceiver.kind, local.codec))
            if local.prepare is not None:
                local.prepare(transceiver)
        self._senders = list(zip(self._published, transceivers, strict=True))
        self.encodings.clear()  # a fresh connection sends every encoding until streams say otherwise
        await pc.setLocalDescription(await pc.createOffer())
        specs = [
            {"source_id": t.source_id, "kind": t.kind, "layer": t.layer, "mid": tr.mid}
            for t, tr in zip(self._published, transceivers, strict=True)
        ]
        offer = pc.localDescription.sdp
        if self.offer_rewrite is not None:
            offer = self.offer_rewrite(offer)
        answer = await self._signaling.request({"type": "publish", "sdp": offer, "tracks": specs}, {"publisher-answer"})
        await pc.setRemoteDescription(RTCSessionDescription(sdp=answer["sdp"], type="answer"))

    async def unpublish(self, source_id: str, timeout: float = 15.0) -> dict[str, Any]:
        """Stop sending ``source_id`` and unpublish it: the others get ``track-unpublished``.

        Returns the server's ``unpublished`` answer; raises :class:`RoomError` with
        ``source_not_found``, ``forbidden`` (another peer's source) or ``not_joined``. The
        source is no longer republished by :meth:`restart_ice` or a move to another node.
        """
        for local, transceiver in self._senders:
            if local.source_id == source_id:
                transceiver.sender.replaceTrack(None)
        answer = await self._signaling.request(
            {"type": "unpublish", "source_id": source_id}, {"unpublished"}, timeout=timeout
        )
        self._published = [t for t in self._published if t.source_id != source_id]
        return answer

    async def restart_ice(self) -> None:
        """ICE restart, protocol v1 style: a fresh publisher connection and a new publish."""
        if self._published:
            await self._open_publisher()

    # --- subscribing -----------------------------------------------------------------

    async def subscribe(self, source_id: str, layer: str = "high") -> None:
        await self._signaling.send({"type": "subscribe", "source_id": source_id, "layer": layer})

    async def unsubscribe(self, source_id: str) -> None:
        await self._signaling.send({"type": "unsubscribe", "source_id": source_id})

    async def _on_subscriber_offer(self, message: dict[str, Any]) -> None:
        async with self._lock:
            if self._subscriber is None:
                pc = RTCPeerConnection(self._config())
                self._subscriber = pc
                pc.on("track", lambda track: asyncio.ensure_future(self._on_track(pc, track)))
                self._log_states(pc, "subscriber")
            for source in message.get("sources", []):
                if source.get("mid") is not None:
                    self._offered[source["mid"]] = source
            log.info(
                "subscriber offer: %s",
                ", ".join(
                    f"mid {s.get('mid')} {s.get('kind')} {s.get('peer_id')}/{s.get('source_id')}"
                    for s in message.get("sources", [])
                ),
                extra={"peer_id": self.peer_id, "room_id": self.room},
            )
            pc = self._subscriber
            await pc.setRemoteDescription(RTCSessionDescription(sdp=message["sdp"], type="offer"))
            if self.receiver_hook is not None:
                for transceiver in pc.getTransceivers():
                    self.receiver_hook(transceiver, self._offered.get(transceiver.mid or "", {}))
            elif self.recover_video:
                for transceiver in pc.getTransceivers():
                    recover_losses(transceiver.receiver)
            await pc.setLocalDescription(await pc.createAnswer())
            await self._signaling.send({"type": "subscriber-answer", "sdp": pc.localDescription.sdp})

    async def _on_track(self, pc: RTCPeerConnection, track: MediaStreamTrack) -> None:
        mid = next((t.mid for t in pc.getTransceivers() if t.receiver.track is track), None)
        source = self._offered.get(mid or "", {})
        remote = RemoteTrack(
            peer_id=source.get("peer_id", ""),
            source_id=source.get("source_id", ""),
            kind=source.get("kind", track.kind),
            track=track,
        )
        self.remote[(remote.peer_id, remote.source_id)] = remote
        log.info(
            "track %s on mid %s from %s/%s",
            track.kind,
            mid,
            remote.peer_id,
            remote.source_id,
            extra={"peer_id": self.peer_id, "room_id": self.room},
        )
        await self._emit("track", remote)

    def _log_states(self, pc: RTCPeerConnection, role: str) -> None:
        """ICE and connection state changes of ``pc``, at INFO (diagnosing media that never arrives)."""
        extra = {"peer_id": self.peer_id, "room_id": self.room}
        pc.on("iceconnectionstatechange", lambda: log.info("%s ICE %s", role, pc.iceConnectionState, extra=extra))
        pc.on("connectionstatechange", lambda: log.info("%s connection %s", role, pc.connectionState, extra=extra))

    async def receive_stats(self) -> dict[str, dict[str, int]]:
        """Per received track (``peer/source``): packets received and lost, and how many RTP
        streams (SSRCs) arrived on its receiver (one, unless packets were misrouted)."""
        out: dict[str, dict[str, int]] = {}
        pc = self._subscriber
        if pc is None:
            return out
        for transceiver in pc.getTransceivers():
            source = self._offered.get(transceiver.mid or "", {})
            totals = {"received": 0, "lost": 0, "streams": 0}
            for stat in (await transceiver.receiver.getStats()).values():
                if getattr(stat, "type", None) == "inbound-rtp":
                    totals["received"] += stat.packetsReceived
                    totals["lost"] += stat.packetsLost
                    totals["streams"] += 1
            out[f"{source.get('peer_id')}/{source.get('source_id')}"] = totals
        return out

    # --- control ---------------------------------------------------------------------

    async def mute(self, source_kind: str) -> None:
        await self._signaling.send({"type": "mute", "source_kind": source_kind})

    async def unmute(self, source_kind: str) -> None:
        await self._signaling.send({"type": "unmute", "source_kind": source_kind})

    async def ping(self) -> None:
        await self._signaling.request({"type": "ping"}, {"pong"})

    # --- chat ------------------------------------------------------------------------

    async def send_chat(self, text: str, timeout: float = 15.0) -> ChatMessage:
        """Post ``text`` to the room's chat; returns the message as everyone receives it
        (text stripped). Raises ``RoomError`` ``chat_empty``, ``chat_too_long`` or
        ``not_joined``; every peer, this one included, gets it as a ``("chat",
        ChatMessage)`` event."""
        posted = await self._signaling.request({"type": "chat", "text": text}, {"chat"}, timeout=timeout)
        return ChatMessage.from_message(posted)

    # --- quality and dynacast --------------------------------------------------------

    @property
    def quality(self) -> RoomQuality:
        """The uplink and each remote participant's level, loss, RTT and bitrate."""
        return self._tracker.quality

    async def _quality_loop(self) -> None:
        loop = asyncio.get_running_loop()
        while not self._closed:
            await asyncio.sleep(REPORT_INTERVAL_S)
            try:
                before = self.quality.levels()
                report = await self._tracker.sample(
                    [t.sender for _, t in self._senders], self._subscriber, self._offered, self.peers, loop.time()
                )
                if self.peer_id is not None and self._signaling.connected:
                    self.reports_sent += 1
                    await self._signaling.send({**report, "request_id": f"{REPORT_ID}{self.reports_sent}"})
                if self.quality.levels() != before:
                    await self._emit("quality", self.quality)
            except ConnectionClosed:  # the socket went away between the check and the send
                log.debug("quality report not sent: socket closed", extra={"peer_id": self.peer_id})
            except Exception:  # noqa: BLE001 - one bad sample must not end the loop
                log.exception("quality sample failed", extra={"peer_id": self.peer_id, "room_id": self.room})

    async def _on_quality(self, message: dict[str, Any]) -> None:
        before = self.quality.levels()
        self._tracker.on_decision(message, self.peers)
        if self.quality.levels() != before:
            await self._emit("quality", self.quality)

    def _on_encodings(self, message: dict[str, Any]) -> None:
        active = apply_encodings(self._senders, message)
        if active is not None:
            self.encodings[message["source_id"]] = active

    def sending(self, source_id: str) -> dict[str, bool]:
        """Per layer of ``source_id``: whether its sender sends RTP (dynacast)."""
        return {local.layer: is_sending(t.sender) for local, t in self._senders if local.source_id == source_id}

    # --- server messages -------------------------------------------------------------

    async def _on_message(self, message: dict[str, Any]) -> None:
        kind = message.get("type", "")
        if kind == "error" and str(message.get("request_id") or "").startswith(REPORT_ID):
            code = str(message.get("code"))
            self.report_errors[code] = self.report_errors.get(code, 0) + 1
            log.debug("quality report refused: %s %s", code, message.get("message"))
            return
        if kind == "quality":  # streams' decision: ("quality-decision", message), then maybe ("quality", ...)
            await self._emit("quality-decision", message)
            await self._on_quality(message)
            return
        if kind == "encodings":
            self._on_encodings(message)
        if kind == "subscriber-offer":
            await self._on_subscriber_offer(message)
        elif kind == "peer-joined" or kind == "peer-updated":
            self.peers[message["peer"]["peer_id"]] = message["peer"]
        elif kind == "peer-left":
            self.peers.pop(message["peer_id"], None)
            self._tracker.forget(message["peer_id"])
        elif kind == "track-unpublished":
            self.remote.pop((message["peer_id"], message["source_id"]), None)
            self._tracker.forget(message["peer_id"], message["source_id"])
        elif kind == "reconnect":
            asyncio.ensure_future(self._move_to_new_node())
        elif kind == "chat":
            if message["id"] in self._chat_seen:
                return  # delivered again (the log is at-least-once)
            self._chat_seen.append(message["id"])
            await self._emit(kind, ChatMessage.from_message(message))
            return
        await self._emit(kind, message)

    async def _move_to_new_node(self) -> None:
        """The room moved to another media node: fresh connections, publish again."""
        self.reconnects += 1
        if self._subscriber is not None:
            await self._subscriber.close()
            self._subscriber = None
            self._offered.clear()
        if self._published:
            await self._open_publisher()
        await self._emit("reconnected", {"peer_id": self.peer_id})

    async def _on_socket_lost(self) -> None:
        """Reopen the socket with backoff; resume the peer, or join again and republish."""
        delay = 0.5
        while not self._closed:
            try:
                await self._signaling.open()
                try:
                    await self._join(resume=True)
                except RoomError as exc:
                    if exc.code != "peer_not_found":
                        raise
                    self.peer_id = None
                    await self._join()
                    await self._move_to_new_node()
                return
            except (TimeoutError, OSError, RoomError) as exc:
                log.warning("reconnect failed (%s); retrying in %.1fs", exc, delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 10.0)
