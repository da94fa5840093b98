"""The node's two kinds of PeerConnection, wired to the forwarder.

* :class:`PublisherSession` answers a publisher's offer; every incoming track is tapped
  (no decoding) and becomes one encoding of a :class:`~media_node.forwarder.Source`.
* :class:`SubscriberSession` is the offerer toward one subscriber: one ``sendonly``
  transceiver per subscribed source, fed by an ``OutboundLeg`` (no encoding). Adding a
  subscription later is a new offer/answer on the same PeerConnection (max-bundle, so no
  new ICE or DTLS).
"""

from __future__ import annotations

from collections.abc import Sequence

from aiortc import (
    RTCBundlePolicy,
    RTCConfiguration,
    RTCPeerConnection,
    RTCRtpCodecCapability,
    RTCRtpSender,
    RTCRtpTransceiver,
    RTCSessionDescription,
)

from media_node.aiortc_glue import InboundTap, OutboundLeg, SilentTrack, negotiated_codecs, tap_receiver
from media_node.forwarder import Downstream, Encoding, Forwarder, Source
from media_node.peers import publisher_configuration
from producers.fields import Layer, TrackInfo


def codec_capabilities(transceiver: RTCRtpTransceiver) -> list[RTCRtpCodecCapability]:
    """The codec a transceiver negotiated (and RTX), as preferences for another transceiver."""
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


class PublisherSession:
    """The node's end of one publisher's PeerConnection."""

    def __init__(self, publisher_id: str, forwarder: Forwarder, configuration: RTCConfiguration | None = None) -> None:
        self.publisher_id = publisher_id
        self.forwarder = forwarder
        self.pc = RTCPeerConnection(configuration or publisher_configuration())
        self.taps: dict[str, InboundTap] = {}
        self.encodings: dict[str, Encoding] = {}
        #: codec preferences per source id, for subscribers' transceivers
        self.codecs: dict[str, list[RTCRtpCodecCapability]] = {}

    async def answer(self, offer_sdp: str, tracks: Sequence[TrackInfo]) -> str:
        """Apply the publisher's offer, tap each described track, return the answer SDP.

        A track is matched to its :class:`TrackInfo` by mid, else by track id; tracks no
        info describes are received and dropped.
        """
        await self.pc.setRemoteDescription(RTCSessionDescription(sdp=offer_sdp, type="offer"))
        by_mid = {t.mid: t for t in tracks if t.mid}
        by_track = {t.track_id: t for t in tracks if t.track_id}
        for transceiver in self.pc.getTransceivers():
            mid = transceiver.mid
            if mid is None or mid in self.taps:
                continue
            track = transceiver.receiver.track
            info = by_mid.get(mid) or (by_track.get(track.id) if track is not None else None)
            tap = self.taps[mid] = tap_receiver(transceiver.receiver)
            if info is None:
                continue
            source = self.forwarder.source(self.publisher_id, info.source_id, transceiver.kind)
            encoding = self.encodings[mid] = source.add_encoding(info.layer, tap)
            tap.on_packet = encoding.push
            self.codecs.setdefault(info.source_id, codec_capabilities(transceiver))
        await self.pc.setLocalDescription(await self.pc.createAnswer())
        return self.pc.localDescription.sdp

    async def close(self) -> None:
        for encoding in self.encodings.values():
            self.forwarder.remove_source(self.publisher_id, encoding.source.source_id)
        await self.pc.close()


class SubscriberSession:
    """The node's end of one subscriber's PeerConnection (the node offers)."""

    def __init__(self, subscriber_id: str, configuration: RTCConfiguration | None = None) -> None:
        self.subscriber_id = subscriber_id
        self.pc = RTCPeerConnection(
            configuration or RTCConfiguration(iceServers=[], bundlePolicy=RTCBundlePolicy.MAX_BUNDLE)
        )
        self.downstreams: dict[tuple[str, str], Downstream] = {}
        self.legs: dict[tuple[str, str], OutboundLeg] = {}
        self.transceivers: dict[tuple[str, str], RTCRtpTransceiver] = {}

    async def add(
        self, source: Source, layer: Layer = "high", codecs: Sequence[RTCRtpCodecCapability] = ()
    ) -> Downstream:
        """A new sendonly transceiver forwarding ``source``; call :meth:`offer` next."""
        key = (source.publisher_id, source.source_id)
        transceiver = self.pc.addTransceiver(SilentTrack(source.kind), direction="sendonly")
        if codecs:
            transceiver.setCodecPreferences(list(codecs))
        leg = self.legs[key] = OutboundLeg(transceiver.sender)
        self.transceivers[key] = transceiver
        downstream = self.downstreams[key] = await source.subscribe(self.subscriber_id, leg, layer)
        return downstream

    def remove(self, source: Source) -> None:
        """Stop forwarding ``source``; its transceiver goes inactive at the next offer."""
        key = (source.publisher_id, source.source_id)
        source.unsubscribe(self.subscriber_id)
        self.downstreams.pop(key, None)
        self.legs.pop(key, None)
        transceiver = self.transceivers.pop(key, None)
        if transceiver is not None:
            transceiver.direction = "inactive"

    async def offer(self) -> str:
        await self.pc.setLocalDescription(await self.pc.createOffer())
        return self.pc.localDescription.sdp

    async def accept(self, answer_sdp: str) -> None:
        await self.pc.setRemoteDescription(RTCSessionDescription(sdp=answer_sdp, type="answer"))

    async def close(self) -> None:
        for downstream in self.downstreams.values():
            downstream.source.unsubscribe(self.subscriber_id)
        self.downstreams.clear()
        await self.pc.close()
