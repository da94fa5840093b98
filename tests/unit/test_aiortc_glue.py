"""``media_node.aiortc_glue``: the only module using aiortc's private names.

The connected tests use real aiortc peers over loopback, so they run inside a loopback-only
namespace (``scripts/netns.sh``; ``make test`` does that). In the raw-RTP test every
PeerConnection is tapped or writes through an ``OutboundLeg``, and aiortc's codec entry
points are replaced by functions that raise: nothing may encode, depayload or decode.
"""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from collections.abc import Awaitable, Callable, Iterator

import aiortc.codecs
import aiortc.rtcrtpreceiver
import aiortc.rtcrtpsender
import pytest
from aiortc import RTCConfiguration, RTCPeerConnection, RTCRtpSender
from aiortc.mediastreams import MediaStreamError
from aiortc.rtcrtpparameters import RTCRtpHeaderExtensionParameters, RTCRtpParameters
from aiortc.rtp import HeaderExtensionsMap, RtpPacket

from media_node.aiortc_glue import (
    URI_ABS_SEND_TIME,
    URI_AUDIO_LEVEL,
    URI_MID,
    ExtensionIds,
    InboundTap,
    OutboundLeg,
    SilentTrack,
    check_internals,
    negotiated_codecs,
    register_vp9,
    request_keyframe,
    send_remb,
    serialize,
    tap_receiver,
)

VP8_DELTA = bytes((0x90, 0x80, 0x81, 0x00, 0x01)) + bytes(40)


def loopback_only() -> bool:
    """True inside ``scripts/netns.sh``: ``lo`` is the only interface, so media stays on it."""
    return [name for _, name in socket.if_nameindex()] == ["lo"]


needs_loopback_namespace = pytest.mark.skipif(
    not loopback_only(), reason="connects real peers: run inside scripts/netns.sh (make test does)"
)


async def eventually(condition: Callable[[], bool | Awaitable[bool]], timeout: float = 10.0) -> None:
    """Wait until ``condition()`` holds (polled every 10 ms), failing after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        result = condition()
        if result if isinstance(result, bool) else await result:
            return
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.01)


async def negotiate(
    offerer: RTCPeerConnection, answerer: RTCPeerConnection, before_answer: Callable[[], None] = lambda: None
) -> None:
    await offerer.setLocalDescription(await offerer.createOffer())
    await answerer.setRemoteDescription(offerer.localDescription)
    before_answer()
    await answerer.setLocalDescription(await answerer.createAnswer())
    await offerer.setRemoteDescription(answerer.localDescription)


async def has(items: Awaitable[list[object]]) -> bool:
    return bool(await items)


def pc() -> RTCPeerConnection:
    return RTCPeerConnection(RTCConfiguration(iceServers=[]))


@pytest.fixture
def no_codecs(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[str]]:
    """Make every aiortc codec entry point raise; yield the names that were called."""
    called: list[str] = []

    def forbidden(name: str) -> Callable[..., object]:
        def call(*args: object, **kwargs: object) -> object:
            called.append(name)
            raise AssertionError(f"{name} called")

        return call

    for module, name in [
        (aiortc.codecs, "get_decoder"),
        (aiortc.codecs, "get_encoder"),
        (aiortc.codecs, "depayload"),
        (aiortc.rtcrtpreceiver, "get_decoder"),
        (aiortc.rtcrtpreceiver, "depayload"),
        (aiortc.rtcrtpreceiver, "decoder_worker"),
        (aiortc.rtcrtpsender, "get_encoder"),
    ]:
        monkeypatch.setattr(module, name, forbidden(f"{module.__name__}.{name}"))
    yield called


def test_the_private_names_the_glue_uses_exist() -> None:
    transceiver = RTCPeerConnection().addTransceiver("video")
    check_internals(receiver=transceiver.receiver, sender=transceiver.sender)


@pytest.mark.parametrize("uris", [(URI_MID, URI_ABS_SEND_TIME), (URI_MID, URI_AUDIO_LEVEL), ()])
@pytest.mark.parametrize(
    ("mid", "audio_level", "padding"),
    [("0", None, 0), ("12", (True, 33), 0), ("0", (False, 127), 0), ("x" * 17, None, 0), ("1", None, 4)],
)
def test_fast_serialize_matches_aiortc(
    uris: tuple[str, ...], mid: str, audio_level: tuple[bool, int] | None, padding: int
) -> None:
    extensions = [RTCRtpHeaderExtensionParameters(id=i + 1, uri=uri) for i, uri in enumerate(uris)]
    extensions_map = HeaderExtensionsMap()
    extensions_map.configure(RTCRtpParameters(headerExtensions=extensions))
    packet = RtpPacket(
        payload_type=111, marker=1, sequence_number=65535, timestamp=0xFFFFFFFF, ssrc=0x12345678, payload=VP8_DELTA
    )
    packet.extensions.mid, packet.extensions.abs_send_time = mid, 0xABCDEF
    packet.extensions.audio_level, packet.padding_size = audio_level, padding
    fast = serialize(packet, ExtensionIds.of(extensions))
    if len(mid) > 16 and URI_MID in uris or padding:
        assert fast is None  # aiortc's serializer handles these
    else:
        assert fast == packet.serialize(extensions_map)


async def test_silent_track_never_yields_until_stopped() -> None:
    track = SilentTrack("audio")
    pending = asyncio.ensure_future(track.recv())
    await asyncio.sleep(0)
    assert not pending.done() and track.kind == "audio"
    track.stop()
    with pytest.raises(MediaStreamError):
        await pending


async def test_leg_drops_writes_until_negotiated() -> None:
    connection = pc()
    transceiver = connection.addTransceiver("video", direction="sendonly")
    leg = OutboundLeg(transceiver.sender)
    assert isinstance(transceiver.sender.track, SilentTrack)
    assert not leg.ready and leg.payload_type("VP8") is None
    assert await leg.write(RtpPacket(payload_type=97, payload=VP8_DELTA)) is False
    await connection.close()


class Pair:
    """A raw-RTP publisher (leg ``a``) and a tapped receiver (``tap``), connected."""

    def __init__(self) -> None:
        self.publisher, self.node = pc(), pc()
        self.received: list[RtpPacket] = []
        self.a: OutboundLeg
        self.tap: InboundTap

    async def on_packet(self, packet: RtpPacket, arrival_ms: int) -> None:
        self.received.append(packet)

    async def connect(self) -> None:
        self.a = OutboundLeg(self.publisher.addTransceiver("video", direction="sendonly").sender)

        def tap() -> None:
            self.tap = tap_receiver(self.node.getTransceivers()[0].receiver, self.on_packet)

        await negotiate(self.publisher, self.node, tap)
        await eventually(lambda: self.a.ready)

    async def send(self, seqs: range, ts_step: int = 3000) -> None:
        pt = self.a.payload_type("vp8")
        assert pt is not None
        for seq in seqs:
            await self.a.write(
                RtpPacket(payload_type=pt, sequence_number=seq, timestamp=seq * ts_step, marker=1, payload=VP8_DELTA)
            )

    async def close(self) -> None:
        await self.publisher.close()
        await self.node.close()


@needs_loopback_namespace
async def test_raw_rtp_both_ways_with_nack_pli_remb_and_no_codec(no_codecs: list[str]) -> None:
    pair = Pair()
    await pair.connect()
    pair.a.drop = lambda p: p.sequence_number == 105  # lost on the wire; aiortc's RTX path skips the hook
    await pair.send(range(100, 120))
    await eventually(lambda: len(pair.received) == 20)

    seqs = [p.sequence_number for p in pair.received]
    assert sorted(seqs) == list(range(100, 120)) and seqs.index(105) > seqs.index(106)  # retransmitted
    assert pair.tap.nacks_sent == 1 and pair.a.nacked == 1 and pair.a.retransmittable == 1
    first = pair.received[0]
    assert (first.ssrc, first.payload_type, first.timestamp, first.payload) == (
        pair.a.ssrc,
        pair.a.payload_type("VP8"),
        300_000,
        VP8_DELTA,
    )
    assert first.extensions.mid == pair.a.mid and first.extensions.abs_send_time is not None
    assert pair.tap.media_ssrc == pair.a.ssrc and pair.tap.codec_of(first.payload_type) == ("VP8", 90000)
    assert not pair.tap.decoding

    requests: list[str] = []

    async def on_pli() -> None:
        requests.append("pli")

    pair.a.on_keyframe_request(on_pli)
    rembs: list[int] = []
    pair.a.on_remb(rembs.append)
    await request_keyframe(pair.node.getReceivers()[0], pair.a.ssrc)
    await send_remb(pair.node.getReceivers()[0], 345_678, [pair.a.ssrc])
    await eventually(lambda: bool(requests) and bool(rembs))
    assert requests == ["pli"] and pair.a.keyframe_requests == 1
    assert abs(rembs[0] - 345_678) < 345_678 / 1000 and pair.a.remb == rembs[0]  # REMB mantissa

    # receiver reports still flow from the tapped receiver; sender reports count the writes
    sender_stats = await pair.publisher.getSenders()[0].getStats()
    outbound = [s for s in sender_stats.values() if s.type == "outbound-rtp"]
    assert outbound[0].packetsSent == 20 and outbound[0].bytesSent == 20 * len(VP8_DELTA)

    async def receiver_report() -> list[object]:
        stats = await pair.publisher.getSenders()[0].getStats()
        return [s for s in stats.values() if s.type == "remote-inbound-rtp"]

    await eventually(lambda: has(receiver_report()))
    (report,) = await receiver_report()
    # aiortc counts the RTX copy of 105 under the RTX SSRC, so the report may show it lost
    assert report.packetsReceived + report.packetsLost == 20 and report.packetsLost <= 1  # type: ignore[attr-defined]
    assert no_codecs == []
    await pair.close()


def decoder_threads() -> int:
    return sum(1 for t in threading.enumerate() if t.name.endswith("-decoder"))


@needs_loopback_namespace
async def test_tapping_a_started_receiver_stops_its_decoder() -> None:
    publisher, node = pc(), pc()
    leg = OutboundLeg(publisher.addTransceiver("video", direction="sendonly").sender)
    before = decoder_threads()
    await negotiate(publisher, node)
    await eventually(lambda: leg.ready and decoder_threads() == before + 1)  # aiortc's receive() ran
    received: list[RtpPacket] = []

    async def on_packet(packet: RtpPacket, arrival_ms: int) -> None:
        received.append(packet)

    tap = tap_receiver(node.getReceivers()[0], on_packet)
    assert not tap.decoding and decoder_threads() == before
    pt = leg.payload_type("vp8")
    assert pt is not None
    for seq in range(3):
        await leg.write(RtpPacket(payload_type=pt, sequence_number=seq, payload=VP8_DELTA))
    await eventually(lambda: len(received) == 3)
    await publisher.close()
    await node.close()


@needs_loopback_namespace
async def test_nack_again_from_the_tap_and_misses_reported_by_the_leg(no_codecs: list[str]) -> None:
    pair = Pair()
    await pair.connect()
    misses: list[list[int]] = []

    async def on_miss(seqs: list[int]) -> None:
        misses.append(seqs)

    pair.a.on_nack_miss(on_miss)
    pair.tap.drop = lambda p: p.sequence_number == 105  # lost on the way in, retransmission too
    await pair.send(range(100, 110))
    await eventually(lambda: len(pair.received) == 9 and pair.a.retransmittable == 1)
    assert 105 not in [p.sequence_number for p in pair.received] and pair.tap.nacks_sent == 1

    pair.tap.drop = None
    await pair.tap.request_retransmission(pair.a.ssrc, [105, 60])  # 60 was never sent
    await eventually(lambda: len(pair.received) == 10 and bool(misses))
    assert pair.received[-1].sequence_number == 105 and pair.tap.nacks_sent == 2
    assert misses == [[60]] and pair.a.nacked == 3 and pair.a.nack_misses == 1 and pair.a.retransmittable == 2
    # the quality sample's loss: 105 was NACKed twice (one packet lost), 60 was never sent (not a loss)
    assert pair.a.nacked_distinct == 1
    assert no_codecs == []
    await pair.close()


@pytest.fixture
def vp9() -> Iterator[None]:
    """aiortc negotiates VP9 in this process (``register_vp9``), until the test ends."""
    video = aiortc.codecs.CODECS["video"]
    before = list(video)
    register_vp9()
    register_vp9()  # idempotent
    yield
    video[:] = before


async def test_registered_vp9_is_negotiated_with_its_rtx_and_no_codec(vp9: None, no_codecs: list[str]) -> None:
    names = [c.mimeType for c in aiortc.codecs.CODECS["video"]]
    assert names.count("video/VP9") == 1 and names[-2:] == ["video/VP9", "video/rtx"], names
    publisher, node = pc(), pc()
    transceiver = publisher.addTransceiver("video", direction="sendonly")
    transceiver.setCodecPreferences(
        [c for c in RTCRtpSender.getCapabilities("video").codecs if c.mimeType in ("video/VP9", "video/rtx")]
    )
    OutboundLeg(transceiver.sender)
    await negotiate(publisher, node, lambda: tap_receiver(node.getTransceivers()[0].receiver))
    answered = negotiated_codecs(node.getTransceivers()[0])
    assert [c.mimeType for c in answered] == ["video/VP9", "video/rtx"]
    assert answered[1].parameters["apt"] == answered[0].payloadType
    assert [(c.mimeType, c.payloadType) for c in negotiated_codecs(transceiver)] == [
        (c.mimeType, c.payloadType) for c in answered
    ]
    assert "VP9" in str(node.localDescription.sdp) and not no_codecs
    await publisher.close()
    await node.close()
