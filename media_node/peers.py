"""A media node's peers: per client a publisher and a subscriber connection.

The publisher connection (the client offers) feeds ``Source`` encodings through
receiver taps; the subscriber connection (the node offers) carries one sendonly
transceiver per subscribed source, each an ``OutboundLeg``. New subscriptions add
transceivers and renegotiate the same connection — no new ICE/DTLS handshake.
Nothing here decodes or encodes media.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from aiortc import (
    RTCBundlePolicy,
    RTCConfiguration,
    RTCPeerConnection,
    RTCRtpCodecCapability,
    RTCRtpSender,
    RTCRtpTransceiver,
    RTCSessionDescription,
)
from aiortc.rtp import RtpPacket

from media_node.aiortc_glue import InboundTap, OutboundLeg, negotiated_codecs, tap_receiver
from media_node.announce import announce
from media_node.errors import NoOfferPending, NotSubscribed, SourceNotOnNode
from media_node.forwarder import Encoding, Source, tick_sources
from producers.fields import TrackInfo
from producers.media import OfferedSource

log = logging.getLogger(__name__)

#: How long new subscriptions are collected before one renegotiation.
RENEGOTIATE_AFTER_S = 0.02
#: After ``RemoveSource``, packets still draining from the publisher's pacer are dropped;
#: the first packet after this much silence announces the source again (sharing again).
REANNOUNCE_QUIET_S = 0.5


def publisher_configuration() -> RTCConfiguration:
    """The node's end of a publisher connection: every m-line on one transport.

    aiortc's default (``balanced``) puts a new m-line on the transport of the first m-line of
    its kind; with an offer like microphone, camera high, camera low, the low layer shares the
    high layer's provisional transport, is taken as bundled, and is left on that transport
    when aiortc closes it (aiortc issue #1414): the layer never arrives. aiortc answers
    with a BUNDLE group of every m-line whatever the policy, so nothing else changes.
    """
    return RTCConfiguration(iceServers=[], bundlePolicy=RTCBundlePolicy.MAX_BUNDLE)


@dataclass
class Subscription:
    source: Source
    transceiver: RTCRtpTransceiver
    leg: OutboundLeg
    layer: str
    offered: bool = False
    active: bool = False
    paused: bool = False


@dataclass
class PeerSession:
    room_id: str
    peer_id: str
    publisher: RTCPeerConnection | None = None
    subscriber: RTCPeerConnection | None = None
    sources: dict[str, Source] = field(default_factory=dict)
    #: Published encodings: "source/layer" -> (track info, receiver tap, encoding).
    inbound: dict[str, tuple[TrackInfo, InboundTap, Encoding]] = field(default_factory=dict)
    subscriptions: dict[str, Subscription] = field(default_factory=dict)
    #: Subscriptions waiting for the next offer: the connection is changed only between
    #: negotiations, never while an offer is out.
    pending: dict[str, tuple[Source, str]] = field(default_factory=dict)
    negotiating: bool = False
    renegotiation: asyncio.Task[None] | None = None
    #: Transceivers of unpublished sources, set inactive at the next offer.
    retired: list[RTCRtpTransceiver] = field(default_factory=list)


def codec_capabilities(transceiver: RTCRtpTransceiver) -> list[RTCRtpCodecCapability]:
    """The codec a publisher's transceiver negotiated (and its RTX), as preferences for the
    subscribers' transceivers of that source: offering a subscriber only the codec it will
    receive keeps aiortc from labelling retransmissions with the first codec's RTX payload
    type (a re-sent H.264 packet arrived as VP8 when VP8 came first in the offer)."""
    negotiated = negotiated_codecs(transceiver)
    primary = next((c for c in negotiated if c.name.lower() != "rtx"), None)
    if primary is None:
        return []
    chosen: list[RTCRtpCodecCapability] = []
    for capability in RTCRtpSender.getCapabilities(transceiver.kind).codecs:
        name = capability.mimeType.lower()
        if (name == primary.mimeType.lower() and capability.parameters == primary.parameters) or (
            name.endswith("/rtx") and any(c.name.lower() == "rtx" for c in negotiated)
        ):
            chosen.append(capability)
    return chosen if any(not c.mimeType.lower().endswith("/rtx") for c in chosen) else []


OnTrackStarted = Callable[[PeerSession, TrackInfo], Awaitable[None]]
OnOffer = Callable[[PeerSession, str, list[OfferedSource]], Awaitable[None]]


class Peers:
    """Every peer session on this node, and the sources they publish."""

    def __init__(self, on_track_started: OnTrackStarted, on_offer: OnOffer, announced_address: str = "") -> None:
        self.announced_address = announced_address
        self.sessions: dict[str, PeerSession] = {}
        self.sources: dict[tuple[str, str], Source] = {}
        #: codec preferences per source, for the subscribers' transceivers (``codec_capabilities``)
        self.codecs: dict[tuple[str, str], list[RTCRtpCodecCapability]] = {}
        self._on_track_started = on_track_started
        self._on_offer = on_offer

    def session(self, room_id: str, peer_id: str) -> PeerSession:
        session = self.sessions.get(peer_id)
        if session is None:
            session = self.sessions[peer_id] = PeerSession(room_id, peer_id)
        return session

    # --- publishing -------------------------------------------------------------------

    async def open_publisher(self, room_id: str, peer_id: str, sdp: str, tracks: list[TrackInfo]) -> str:
        """Answer a publish offer; the offer's tracks become sources on this node."""
        session = self.session(room_id, peer_id)
        await self._close_publisher(session)
        pc = RTCPeerConnection(publisher_configuration())
        session.publisher = pc
        await pc.setRemoteDescription(RTCSessionDescription(sdp=sdp, type="offer"))
        by_mid = {t.mid: t for t in tracks}
        for transceiver in pc.getTransceivers():
            info = by_mid.get(transceiver.mid)
            if info is None:
                transceiver.direction = "inactive"
                continue
            transceiver.direction = "recvonly"
            source = session.sources.get(info.source_id)
            if source is None:
                source = session.sources[info.source_id] = Source(peer_id, info.source_id, transceiver.kind)
                self.sources[(peer_id, info.source_id)] = source
            tap = tap_receiver(transceiver.receiver)
            encoding = source.add_encoding(info.layer, tap)
            tap.on_packet = self._first_packet(session, info, encoding.push, tap)
            session.inbound[f"{info.source_id}/{info.layer}"] = (info, tap, encoding)
        await pc.setLocalDescription(await pc.createAnswer())
        for transceiver in pc.getTransceivers():
            info = by_mid.get(transceiver.mid)
            if info is not None:
                self.codecs.setdefault((peer_id, info.source_id), codec_capabilities(transceiver))
        return announce(str(pc.localDescription.sdp), self.announced_address)

    def _first_packet(
        self, session: PeerSession, info: TrackInfo, push: Callable[[RtpPacket, int], Awaitable[None]], tap: InboundTap
    ) -> Callable[[RtpPacket, int], Awaitable[None]]:
        async def first(packet: RtpPacket, arrival_ms: int) -> None:
            tap.on_packet = push  # every later packet goes straight to the encoding
            await push(packet, arrival_ms)
            await self._on_track_started(session, info)

        return first

    async def _close_publisher(self, session: PeerSession) -> None:
        for source_id, source in list(session.sources.items()):
            for subscriber_id in list(source.downstreams):
                source.unsubscribe(subscriber_id)
                other = self.sessions.get(subscriber_id)
                if other is not None:
                    other.subscriptions.pop(source_id, None)
            self.sources.pop((session.peer_id, source_id), None)
            self.codecs.pop((session.peer_id, source_id), None)
        session.sources.clear()
        session.inbound.clear()
        if session.publisher is not None:
            await session.publisher.close()
            session.publisher = None

    # --- subscribing ------------------------------------------------------------------

    async def add_subscription(self, room_id: str, peer_id: str, publisher_id: str, source_id: str, layer: str) -> None:
        source = self.sources.get((publisher_id, source_id))
        if source is None:
            raise SourceNotOnNode(f"source {publisher_id}/{source_id} is not on this node")
        session = self.session(room_id, peer_id)
        if source_id in session.subscriptions or source_id in session.pending:
            return
        if session.subscriber is None:
            pc = session.subscriber = RTCPeerConnection(
                RTCConfiguration(iceServers=[], bundlePolicy=RTCBundlePolicy.MAX_BUNDLE)
            )
            pc.on("connectionstatechange", lambda: self._connection_changed(session))
        session.pending[source_id] = (source, layer)
        self._renegotiate_soon(session)

    def _renegotiate_soon(self, session: PeerSession) -> None:
        if session.renegotiation is None or session.renegotiation.done():
            session.renegotiation = asyncio.ensure_future(self._renegotiate(session))

    async def _renegotiate(self, session: PeerSession) -> None:
        await asyncio.sleep(RENEGOTIATE_AFTER_S)
        if session.negotiating or not (session.pending or session.retired) or session.subscriber is None:
            return
        session.negotiating = True
        pc = session.subscriber
        for transceiver in session.retired:
            transceiver.direction = "inactive"
        session.retired.clear()
        for source_id, (source, layer) in session.pending.items():
            transceiver = pc.addTransceiver(source.kind, direction="sendonly")
            codecs = self.codecs.get((source.publisher_id, source_id))
            if codecs:
                transceiver.setCodecPreferences(codecs)
            session.subscriptions[source_id] = Subscription(
                source, transceiver, OutboundLeg(transceiver.sender), layer, offered=True
            )
        session.pending.clear()
        await pc.setLocalDescription(await pc.createOffer())
        offered = [
            OfferedSource(
                source_id=source_id,
                peer_id=sub.source.publisher_id,
                kind=sub.source.kind,
                layer=sub.layer,
                mid=sub.transceiver.mid,
            )
            for source_id, sub in session.subscriptions.items()
        ]
        await self._on_offer(session, announce(str(pc.localDescription.sdp), self.announced_address), offered)

    async def apply_answer(self, room_id: str, peer_id: str, sdp: str) -> None:
        session = self.session(room_id, peer_id)
        if session.subscriber is None or not session.negotiating:
            raise NoOfferPending("no subscriber offer is waiting for an answer")
        await session.subscriber.setRemoteDescription(RTCSessionDescription(sdp=sdp, type="answer"))
        session.negotiating = False
        asyncio.ensure_future(self._activate(session))
        if session.pending or session.retired:
            self._renegotiate_soon(session)

    def _connection_changed(self, session: PeerSession) -> None:
        if session.subscriber is not None and session.subscriber.connectionState == "connected":
            asyncio.ensure_future(self._activate(session))

    async def _activate(self, session: PeerSession, timeout_s: float = 10.0) -> None:
        """Start forwarding on legs once negotiated and connected. aiortc starts senders in
        a task after the description is applied, so legs become ready a moment later."""
        deadline = asyncio.get_running_loop().time() + timeout_s
        while session.subscriber is not None and asyncio.get_running_loop().time() < deadline:
            waiting = False
            for sub in list(session.subscriptions.values()):
                if sub.active or not sub.offered:
                    continue
                if sub.leg.ready:
                    sub.active = True
                    log.info(
                        "forwarding %s/%s to %s on mid %s ssrc %s",
                        sub.source.publisher_id,
                        sub.source.source_id,
                        session.peer_id,
                        sub.leg.mid,
                        sub.leg.ssrc,
                        extra={"peer_id": session.peer_id, "room_id": session.room_id},
                    )
                    await sub.source.subscribe(session.peer_id, sub.leg, sub.layer)  # type: ignore[arg-type]
                    if sub.paused:
                        await sub.source.set_paused(session.peer_id, True)
                else:
                    waiting = True
            if not waiting:
                return
            await asyncio.sleep(0.05)
        waiting_legs = [
            f"{sid} (mid {sub.leg.mid}, transport {sub.leg.sender.transport.state})"
            for sid, sub in session.subscriptions.items()
            if sub.offered and not sub.active
        ]
        if waiting_legs and session.subscriber is not None:
            log.warning(
                "legs not ready after %.0f s (connection %s): %s",
                timeout_s,
                session.subscriber.connectionState,
                ", ".join(waiting_legs),
                extra={"peer_id": session.peer_id, "room_id": session.room_id},
            )

    async def remove_subscription(self, peer_id: str, source_id: str) -> None:
        session = self.sessions.get(peer_id)
        if session is None:
            return
        session.pending.pop(source_id, None)
        sub = session.subscriptions.pop(source_id, None)
        if sub is not None:
            sub.source.unsubscribe(peer_id)
            session.retired.append(sub.transceiver)  # inactive at the next offer, made now
            self._renegotiate_soon(session)

    async def remove_source(self, peer_id: str, source_id: str) -> None:
        """The publisher unpublished ``source_id``: stop forwarding it and retire every
        subscriber's transceiver for it (inactive at that subscriber's next offer, which is
        made now). The publisher's transceiver stays; if it carries media again after a
        quiet spell, the source is announced anew (``TrackStarted``) as a fresh Source."""
        session = self.sessions.get(peer_id)
        source = session.sources.pop(source_id, None) if session is not None else None
        if session is None or source is None:
            return
        self.sources.pop((peer_id, source_id), None)
        for subscriber_id in list(source.downstreams):
            source.unsubscribe(subscriber_id)
        for other in self.sessions.values():
            if other.pending.get(source_id, (None,))[0] is source:
                del other.pending[source_id]
            sub = other.subscriptions.get(source_id)
            if sub is not None and sub.source is source:
                del other.subscriptions[source_id]
                other.retired.append(sub.transceiver)
                self._renegotiate_soon(other)
        fresh = session.sources[source_id] = Source(peer_id, source_id, source.kind)
        self.sources[(peer_id, source_id)] = fresh
        for key, (info, tap, _) in list(session.inbound.items()):
            if info.source_id == source_id:
                encoding = fresh.add_encoding(info.layer, tap)
                session.inbound[key] = (info, tap, encoding)
                tap.on_packet = self._after_quiet(tap, self._first_packet(session, info, encoding.push, tap))
        log.info("unpublished %s/%s", peer_id, source_id, extra={"peer_id": peer_id, "room_id": session.room_id})

    @staticmethod
    def _after_quiet(
        tap: InboundTap, then: Callable[[RtpPacket, int], Awaitable[None]], quiet_s: float = REANNOUNCE_QUIET_S
    ) -> Callable[[RtpPacket, int], Awaitable[None]]:
        """Drop packets until none came for ``quiet_s``; from then on hand them to ``then``."""
        loop = asyncio.get_running_loop()
        last = loop.time()

        async def wait(packet: RtpPacket, arrival_ms: int) -> None:
            nonlocal last
            now = loop.time()
            quiet, last = now - last >= quiet_s, now
            if quiet:
                tap.on_packet = then
                await then(packet, arrival_ms)

        return wait

    async def set_layer(self, peer_id: str, source_id: str, layer: str) -> None:
        session = self.sessions.get(peer_id)
        sub = session.subscriptions.get(source_id) if session else None
        if sub is None:
            raise NotSubscribed(f"{peer_id} does not subscribe to {source_id}")
        sub.layer = layer
        if sub.active:
            await sub.source.set_layer(peer_id, layer)  # type: ignore[arg-type]

    async def set_paused(self, peer_id: str, source_id: str, paused: bool) -> None:
        session = self.sessions.get(peer_id)
        sub = session.subscriptions.get(source_id) if session else None
        if sub is None:
            raise NotSubscribed(f"{peer_id} does not subscribe to {source_id}")
        sub.paused = paused
        if sub.active:
            await sub.source.set_paused(peer_id, paused)

    # --- teardown ----------------------------------------------------------------------

    async def close_peer(self, peer_id: str) -> None:
        session = self.sessions.pop(peer_id, None)
        if session is None:
            return
        await self._close_publisher(session)
        for sub in session.subscriptions.values():
            sub.source.unsubscribe(peer_id)
        session.subscriptions.clear()
        if session.renegotiation is not None:
            session.renegotiation.cancel()
        if session.subscriber is not None:
            with contextlib.suppress(Exception):
                await session.subscriber.close()

    async def close_room(self, room_id: str) -> None:
        for peer_id in [p for p, s in self.sessions.items() if s.room_id == room_id]:
            await self.close_peer(peer_id)

    async def close(self) -> None:
        for peer_id in list(self.sessions):
            await self.close_peer(peer_id)

    def load(self) -> dict[str, Any]:
        legs = sum(len(s.subscriptions) for s in self.sessions.values())
        legs += sum(len(s.inbound) for s in self.sessions.values())
        return {"peers": len(self.sessions), "legs": legs}

    def forwarded(self) -> tuple[int, int]:
        packets = sum(s.packets_forwarded for s in self.sources.values())
        octets = sum(s.bytes_forwarded for s in self.sources.values())
        return packets, octets

    async def tick(self) -> None:
        await tick_sources(self.sources.values())
