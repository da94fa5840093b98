"""The native forwarding core against the Python reference, byte for byte.

The reference is the node's own Python path: pylibsrtp sessions with aiortc's policies,
``RtpPacket.parse``, ``media_node.forwarder`` (Encoding.push, Downstream: start, hold,
switch, rewrite, VP8 picture ids), ``OutboundLeg.prepare``'s stamping and
``aiortc_glue.serialize``, then ``Session.protect``; retransmissions are aiortc's
``wrap_rtx``. The native core gets the same SRTP packets on a real socket (an AF_UNIX
datagram socketpair: ``recvmmsg``/``sendmmsg``, no network) with the same frozen clock,
and what it sends must equal the reference's bytes exactly, and decrypt and parse.
"""

from __future__ import annotations

import select
import socket
import threading
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from unittest import mock

import pytest
from aiortc.rtcrtpparameters import RTCRtpHeaderExtensionParameters, RTCRtpParameters
from aiortc.rtcrtpreceiver import StreamStatistics
from aiortc.rtp import (
    RTCP_RTPFB_NACK,
    HeaderExtensionsMap,
    RtcpReceiverInfo,
    RtcpRrPacket,
    RtcpRtpfbPacket,
    RtpPacket,
    wrap_rtx,
)
from pylibsrtp import Policy, Session

from media_node.aiortc_glue import URI_AUDIO_LEVEL, ExtensionIds, serialize
from media_node.forwarder import Source
from native import core as native
from native.handover import downstream_state

pytestmark = pytest.mark.skipif(not native.available(), reason="native core not built: make native")

KEY_LENGTHS = {  # master key + salt, aiortc's SRTPProtectionProfile
    native.PROFILE_AES128_CM_SHA1_80: 30,
    native.PROFILE_AEAD_AES_128_GCM: 28,
    native.PROFILE_AEAD_AES_256_GCM: 44,
}
NTP = (3_970_000_000 << 32) | 0x12345678
T0 = 1000.0
SUB_IDS = ExtensionIds(mid=4, abs_send_time=3, audio_level=1)
PUB_AUDIO_LEVEL_ID = 6


def key(profile: int, seed: int) -> bytes:
    return bytes((seed * 7 + i * 13) & 0xFF for i in range(KEY_LENGTHS[profile]))


def session(profile: int, master: bytes, inbound: bool) -> Session:
    """A pylibsrtp session exactly as aiortc's RTCDtlsTransport._setup_srtp builds it."""
    policy = Policy(
        key=master,
        ssrc_type=Policy.SSRC_ANY_INBOUND if inbound else Policy.SSRC_ANY_OUTBOUND,
        srtp_profile=profile,
    )
    policy.allow_repeat_tx = True
    policy.window_size = 1024
    return Session(policy)


def vp8(keyframe: bool, start: bool, picture_id: int, width: int, size: int) -> bytes:
    if width == 15:
        descriptor = bytes((0x80 | (0x10 if start else 0), 0x80, 0x80 | (picture_id >> 8), picture_id & 0xFF))
    else:
        descriptor = bytes((0x80 | (0x10 if start else 0), 0x80, picture_id & 0x7F))
    body = bytes(((0x00 if keyframe else 0x01) if start else 0x33,)) + bytes(
        (picture_id + i) & 0xFF for i in range(size)
    )
    return descriptor + body


class FakeUpstream:
    def __init__(self, codecs: dict[int, tuple[str, int]]) -> None:
        self.codecs = codecs
        self.keyframe_requests = 0
        self.uplink_bitrate: int | None = None
        self.connection = object()

    def codec_of(self, payload_type: int) -> tuple[str, int] | None:
        return self.codecs.get(payload_type)

    async def request_keyframe(self, media_ssrc: int) -> None:
        self.keyframe_requests += 1

    async def request_retransmission(self, media_ssrc: int, seqs: list[int]) -> None:
        pass

    async def send_remb(self, bitrate: int, ssrcs: list[int]) -> None:
        pass

    def sender_report(self, ssrc: int | None) -> tuple[int, int] | None:
        return None


@dataclass
class ReferenceLeg:
    """``OutboundLeg`` minus aiortc: prepare's stamping, serialize, pylibsrtp protect."""

    kind: str
    ssrc: int
    srtp: Session
    payload_types: dict[str, int]
    mid: str = "1"
    written: list[RtpPacket] = field(default_factory=list)
    wire: list[bytes] = field(default_factory=list)
    ready: bool = True

    def payload_type(self, codec_name: str) -> int | None:
        return self.payload_types.get(codec_name.lower())

    async def write(self, packet: RtpPacket) -> bool:
        packet.ssrc = self.ssrc
        packet.extensions.mid = self.mid
        packet.extensions.abs_send_time = (NTP >> 14) & 0x00FFFFFF
        data = serialize(packet, SUB_IDS)
        assert data is not None
        self.written.append(packet)
        self.wire.append(self.srtp.protect(data))
        return True

    def on_keyframe_request(self, callback: Callable[[], Awaitable[None]]) -> None:
        pass

    def on_remb(self, callback: Callable[[int], None]) -> None:
        pass

    def on_nack_miss(self, callback: Callable[[list[int]], Awaitable[None]]) -> None:
        pass

    def map_clock(self, ntp: int, rtp: int) -> None:
        pass


class Rig:
    """A publisher leg and a subscriber leg on the native core, and the reference beside it."""

    def __init__(self, profile: int) -> None:
        self.profile = profile
        self.core = native.Core()
        self.core.set_clock(T0, NTP)
        self.now = T0
        pub_key, node_pub_tx, sub_rx, node_sub_tx = (key(profile, s) for s in (1, 2, 3, 4))
        self.pub_node, self.pub_peer = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sub_node, self.sub_peer = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sub_peer.setblocking(False)
        self.pub_sock = self.core.add_socket(self.pub_node.fileno())
        self.sub_sock = self.core.add_socket(self.sub_node.fileno())
        self.pub_leg = self.core.add_leg(self.pub_sock, None, profile, pub_key, node_pub_tx)
        self.sub_leg = self.core.add_leg(self.sub_sock, None, profile, sub_rx, node_sub_tx)
        self.publisher = session(profile, pub_key, inbound=False)  # the publisher's tx
        self.reference_rx = session(profile, pub_key, inbound=True)  # aiortc's rx on the node
        self.reference_tx = session(profile, node_sub_tx, inbound=False)  # aiortc's tx to the subscriber
        self.subscriber_rx = session(profile, node_sub_tx, inbound=True)  # the subscriber decrypts
        self.subscriber_tx = session(profile, sub_rx, inbound=False)  # the subscriber's RTCP
        self.pub_map = HeaderExtensionsMap()
        self.pub_map.configure(
            RTCRtpParameters(
                headerExtensions=[RTCRtpHeaderExtensionParameters(uri=URI_AUDIO_LEVEL, id=PUB_AUDIO_LEVEL_ID)]
            )
        )
        self.source: Source | None = None

    def close(self) -> None:
        self.core.close()
        for s in (self.pub_node, self.pub_peer, self.sub_node, self.sub_peer):
            s.close()

    def tick(self, seconds: float) -> None:
        self.now += seconds
        self.core.set_clock(self.now, NTP)

    async def send(self, packet: RtpPacket, encoding: object) -> None:
        """The publisher sends ``packet``: into the native core (socket) and the reference."""
        raw = serialize(packet, ExtensionIds(audio_level=PUB_AUDIO_LEVEL_ID))
        assert raw is not None
        wire = self.publisher.protect(raw)
        self.pub_peer.send(wire)
        assert self.core.run_once(2000) == 1
        parsed = RtpPacket.parse(self.reference_rx.unprotect(wire), self.pub_map)
        await encoding.push(parsed)  # type: ignore[attr-defined]

    def received(self) -> list[bytes]:
        out = []
        while True:
            try:
                out.append(self.sub_peer.recv(4096))
            except BlockingIOError:
                return out


@pytest.fixture(params=sorted(KEY_LENGTHS), ids=lambda p: {1: "cm_sha1_80", 7: "gcm128", 8: "gcm256"}[p])
def rig(request: pytest.FixtureRequest) -> Iterator[Rig]:
    r = Rig(request.param)
    yield r
    r.close()


def video_frames(
    ssrc: int, pt: int, seq0: int, ts0: int, pic0: int, width: int, packets: int
) -> Iterator[list[RtpPacket]]:
    """Frames of a VP8 encoding: keyframes at frames 0 and 10, ``packets`` per frame."""
    seq, pic = seq0, pic0
    for frame in range(20):
        out = []
        for i in range(packets):
            payload = vp8(frame in (0, 10), i == 0, pic, width, 60 + 17 * i)
            p = RtpPacket(
                payload_type=pt,
                marker=int(i == packets - 1),
                sequence_number=seq & 0xFFFF,
                timestamp=(ts0 + 3000 * frame) & 0xFFFFFFFF,
                ssrc=ssrc,
                payload=payload,
            )
            out.append(p)
            seq += 1
        pic = (pic + 1) & (0x7FFF if width == 15 else 0x7F)
        yield out


async def test_video_rewrite_layer_switch_and_srtp_match_the_python_reference(rig: Rig) -> None:
    upstream = FakeUpstream({96: ("VP8", 90000), 98: ("VP8", 90000)})
    source = Source("pub", "cam", "video", clock=lambda: rig.now)
    high = source.add_encoding("high", upstream)
    low = source.add_encoding("low", upstream)
    leg = ReferenceLeg("video", ssrc=0x5AB0_0001, srtp=rig.reference_tx, payload_types={"vp8": 120})
    downstream = await source.subscribe("sub", leg, "high", initial_seq=65530, initial_ts=0xFFFF_F000)

    core = rig.core
    in_high = core.add_in(rig.pub_leg, 0x1111, "VP8", 90000)
    in_low = core.add_in(rig.pub_leg, 0x2222, "VP8", 90000)
    out = core.add_out(
        rig.sub_leg,
        in_high,
        0x5AB0_0001,
        120,
        mid_id=4,
        mid="1",
        abs_send_time_id=3,
        audio_level_id=1,
        initial_seq=65530,
        initial_ts=0xFFFF_F000,
    )

    # the outgoing numbering wraps (seq and timestamp); the low layer uses 7-bit picture ids,
    # so the switch rewrites them to 7-bit values
    highs = video_frames(0x1111, 96, 65000 + 520, 1_000_000, 32700, 15, 3)
    lows = video_frames(0x2222, 98, 40000, 77_777, 120, 7, 2)
    for frame, (hp, lp) in enumerate(zip(highs, lows, strict=False)):
        if frame == 10:
            await source.set_layer("sub", "low")
            core.retarget(out, in_low)
        # interleaved: the low keyframe arrives while the high frame is still open (held)
        order = [hp[0], lp[0], hp[1], lp[1], hp[2]]
        for packet in order:
            await rig.send(packet, high if packet.ssrc == 0x1111 else low)
        rig.tick(1 / 30)

    wire = rig.received()
    assert downstream.layer == "low" and len(downstream.switches) == 2
    assert len(leg.wire) == 3 * 11 + 2 * 10  # high frames 0-10 (the last one open at the switch), low 10-19
    assert wire == leg.wire  # byte for byte, SRTP included
    # the subscriber decrypts and sees one continuous stream
    seqs = [RtpPacket.parse(rig.subscriber_rx.unprotect(w)).sequence_number for w in wire]
    assert seqs == [(65530 + i) & 0xFFFF for i in range(len(wire))]
    stats = core.out_stats(out)
    assert stats["packets"] == len(wire) and stats["switches"] == 2
    assert core.stats()["sendmmsg_calls"] >= 1 and core.stats()["srtp_errors"] == 0
    state = core.out_state(out)
    assert state["seq_offset"] == downstream._seq_offset and state["ts_offset"] == downstream._ts_offset
    assert state["pic_offset"] == downstream._pic_offset and state["last_pic"] == downstream._last_pic


async def test_pause_resume_and_h264_match_the_python_reference(rig: Rig) -> None:
    """Paused: nothing is sent; resumed: the next keyframe starts again, numbering continued
    (timestamps advanced by the wall time paused). H.264 keyframes (STAP-A with an SPS, FU-A
    IDR starts) are recognised as forwarder.keyframes does."""
    upstream = FakeUpstream({102: ("H264", 90000)})
    source = Source("pub", "screen", "video", clock=lambda: rig.now)
    enc = source.add_encoding("single", upstream)
    leg = ReferenceLeg("video", ssrc=0x42, srtp=rig.reference_tx, payload_types={"h264": 125})
    await source.subscribe("sub", leg, "single", initial_seq=30000, initial_ts=77)
    core = rig.core
    in_id = core.add_in(rig.pub_leg, 0x2468, "H264", 90000)
    out = core.add_out(
        rig.sub_leg, in_id, 0x42, 125, mid_id=4, mid="2", abs_send_time_id=3, initial_seq=30000, initial_ts=77
    )
    leg.mid = "2"
    sps, idr, non_idr = b"\x67\x42" + bytes(6), b"\x65" + bytes(30), b"\x41" + bytes(30)
    seq = 500
    for frame in range(24):
        if frame == 6:
            await source.set_paused("sub", True)
            core.pause(out, True)
        if frame == 11:
            await source.set_paused("sub", False)
            core.pause(out, False)
        key = frame % 8 == 0 or frame == 13
        payloads = (
            [b"\x18" + len(sps).to_bytes(2, "big") + sps + len(idr).to_bytes(2, "big") + idr, b"\x7c\x85" + bytes(900)]
            if key
            else [b"\x7c\x81" + bytes(700), b"\x7c\x41" + bytes(300), non_idr]
        )
        for i, payload in enumerate(payloads):
            packet = RtpPacket(
                payload_type=102,
                marker=int(i == len(payloads) - 1),
                sequence_number=seq & 0xFFFF,
                timestamp=(9_000_000 + 3000 * frame) & 0xFFFFFFFF,
                ssrc=0x2468,
                payload=payload,
            )
            seq += 1
            await rig.send(packet, enc)
        rig.tick(0.037)
    wire = rig.received()
    # frames 0-5 (a keyframe of 2 packets, then 3 each); paused; from the keyframe at 13:
    # 13-23 (keyframes 13 and 16 of 2 packets)
    assert len(leg.wire) == (2 + 5 * 3) + (2 + 2 * 3 + 2 + 7 * 3) and wire == leg.wire
    parsed = [RtpPacket.parse(rig.subscriber_rx.unprotect(w)) for w in wire]
    assert [p.sequence_number for p in parsed] == list(range(30000, 30000 + len(wire)))
    assert core.out_stats(out)["switches"] == 2


async def test_a_running_downstream_is_handed_over_mid_stream_without_a_seam(rig: Rig) -> None:
    """The Python forwarder serves frames 0-4; its rewrite state goes to the core
    (``handover.downstream_state`` → ``set_out_state``), which serves frames 5-19, including
    a layer switch at frame 10: byte for byte what Python alone would have sent."""
    upstream = FakeUpstream({96: ("VP8", 90000), 98: ("VP8", 90000)})
    source = Source("pub", "cam", "video", clock=lambda: rig.now)
    high = source.add_encoding("high", upstream)
    low = source.add_encoding("low", upstream)
    leg = ReferenceLeg("video", ssrc=0x5AB0_0001, srtp=rig.reference_tx, payload_types={"vp8": 120})
    downstream = await source.subscribe("sub", leg, "high", initial_seq=777, initial_ts=123456)
    core = rig.core
    in_high = core.add_in(rig.pub_leg, 0x1111, "VP8", 90000)
    in_low = core.add_in(rig.pub_leg, 0x2222, "VP8", 90000)
    out = core.add_out(rig.sub_leg, in_high, 0x5AB0_0001, 120, mid_id=4, mid="1", abs_send_time_id=3, audio_level_id=1)
    highs = video_frames(0x1111, 96, 100, 1_000_000, 32760, 15, 3)
    lows = video_frames(0x2222, 98, 40000, 77_777, 120, 7, 2)
    python_only = 0
    for frame, (hp, lp) in enumerate(zip(highs, lows, strict=False)):
        if frame == 5:
            python_only = len(leg.wire)
            state = downstream_state(downstream, {id(high): in_high, id(low): in_low})
            core.set_out_state(out, state)
            assert core.out_state(out) == state
        if frame == 10:
            await source.set_layer("sub", "low")
            core.retarget(out, in_low)
        for packet in [hp[0], lp[0], hp[1], lp[1], hp[2]]:
            encoding = high if packet.ssrc == 0x1111 else low
            if frame < 5:
                parsed = RtpPacket.parse(
                    rig.reference_rx.unprotect(rig.publisher.protect(serialize(packet, ExtensionIds()) or b""))
                )
                await encoding.push(parsed)
            else:
                await rig.send(packet, encoding)
        rig.tick(1 / 30)
    assert python_only == 15 and rig.received() == leg.wire[python_only:]
    assert len(downstream.switches) == 2 and core.out_stats(out)["switches"] == 1


async def test_nacks_are_answered_from_the_cache_with_rtx_and_misses_reported(rig: Rig) -> None:
    upstream = FakeUpstream({96: ("VP8", 90000)})
    source = Source("pub", "cam", "video", clock=lambda: rig.now)
    enc = source.add_encoding("single", upstream)
    leg = ReferenceLeg("video", ssrc=0x77, srtp=rig.reference_tx, payload_types={"vp8": 100})
    downstream = await source.subscribe("sub", leg, "single", initial_seq=100, initial_ts=9000)
    core = rig.core
    in_id = core.add_in(rig.pub_leg, 0x1111, "VP8", 90000, rtx_ssrc=0x1112, rtx_pt=97)
    out = core.add_out(
        rig.sub_leg,
        in_id,
        0x77,
        100,
        rtx_ssrc=0x78,
        rtx_pt=101,
        rtx_seq=500,
        mid_id=4,
        mid="1",
        abs_send_time_id=3,
        audio_level_id=1,
        initial_seq=100,
        initial_ts=9000,
    )
    frames = video_frames(0x1111, 96, 7000, 0, 5, 15, 3)
    for packets in [next(frames) for _ in range(4)]:
        for packet in packets:
            await rig.send(packet, enc)
    assert rig.received() == leg.wire and len(leg.wire) == 12

    # the subscriber loses out seqs 103 and 105, and asks for 150 (never sent)
    nack = RtcpRtpfbPacket(fmt=RTCP_RTPFB_NACK, ssrc=0xABC, media_ssrc=0x77, lost=[103, 105, 150])
    rr = RtcpRrPacket(
        ssrc=0xABC,
        reports=[
            RtcpReceiverInfo(ssrc=0x77, fraction_lost=0, packets_lost=2, highest_sequence=111, jitter=0, lsr=0, dlsr=0)
        ],
    )
    rig.sub_peer.send(rig.subscriber_tx.protect_rtcp(bytes(rr) + bytes(nack)))
    assert core.run_once(2000) == 1
    expected = []
    for rtx_seq, seq in ((500, 103), (501, 105)):
        original = next(p for p in leg.written if p.sequence_number == seq)
        rtx = wrap_rtx(original, payload_type=101, sequence_number=rtx_seq, ssrc=0x78)
        data = serialize(rtx, SUB_IDS)
        assert data is not None
        expected.append(rig.reference_tx.protect(data))
    assert rig.received() == expected
    events = core.events()
    kinds = {e.kind: e for e in events}
    assert set(kinds) == {native.EV_RTCP, native.EV_NACK_MISS}
    assert kinds[native.EV_RTCP].data == bytes(rr)  # the unhandled part, decrypted, NACK removed
    miss = kinds[native.EV_NACK_MISS]
    assert miss.id == out and miss.data == ((150 - downstream._seq_offset) & 0xFFFF).to_bytes(2, "big")
    assert core.out_stats(out)["retransmitted"] == 2 and core.out_stats(out)["nack_misses"] == 1
    # NACKed again (the subscriber re-NACKs until a packet arrives): counted once each, as
    # OutboundLeg.nacked_distinct does for the quality samples
    rig.sub_peer.send(rig.subscriber_tx.protect_rtcp(bytes(nack)))
    assert core.run_once(2000) == 1 and len(rig.received()) == 2
    assert core.out_stats(out)["nacked_distinct"] == 2 and core.out_stats(out)["nacked"] == 6

    # a retransmission from the publisher (RTX) is unwrapped, cached and forwarded as its original
    lost = RtpPacket(
        payload_type=97,
        marker=0,
        sequence_number=3,
        timestamp=12000,
        ssrc=0x1112,
        payload=(7013).to_bytes(2, "big") + vp8(False, False, 9, 15, 30),
    )
    rig.pub_peer.send(rig.publisher.protect(serialize(lost, ExtensionIds()) or b""))
    assert core.run_once(2000) == 1
    assert core.in_stats(in_id)["rtx_packets"] == 1 and len(rig.received()) == 1


async def test_audio_level_is_carried_and_non_media_goes_back_to_python(rig: Rig) -> None:
    upstream = FakeUpstream({111: ("opus", 48000)})
    source = Source("pub", "mic", "audio", clock=lambda: rig.now)
    enc = source.add_encoding("single", upstream)
    leg = ReferenceLeg("audio", ssrc=0x99, srtp=rig.reference_tx, payload_types={"opus": 109}, mid="0")
    await source.subscribe("sub", leg, "single", initial_seq=4000, initial_ts=123)
    core = rig.core
    in_id = core.add_in(rig.pub_leg, 0x3333, "opus", 48000, audio_level_id=PUB_AUDIO_LEVEL_ID)
    core.add_out(
        rig.sub_leg,
        in_id,
        0x99,
        109,
        mid_id=4,
        mid="0",
        abs_send_time_id=3,
        audio_level_id=1,
        initial_seq=4000,
        initial_ts=123,
    )
    sent: list[RtpPacket] = []
    arrivals: list[float] = []
    for i in range(10):
        rig.tick(0.02 + 0.004 * (i % 3))  # uneven arrival: jitter
        if i == 6:
            continue  # lost on the way: a gap the core reports
        p = RtpPacket(
            payload_type=111,
            marker=int(i == 0),
            sequence_number=65533 + i & 0xFFFF,
            timestamp=960 * i,
            ssrc=0x3333,
            payload=bytes([i]) * (40 + i),
        )
        p.extensions.audio_level = (i % 2 == 0, 30 + i)
        await rig.send(p, enc)
        sent.append(p)
        arrivals.append(rig.now)
    assert rig.received() == leg.wire and len(leg.wire) == 9
    gap = [e for e in core.events() if e.kind == native.EV_GAP]
    assert len(gap) == 1 and gap[0].data == ((65533 + 6) & 0xFFFF).to_bytes(2, "big")
    # the receiver statistics aiortc would have kept (quality samples read these), same arrival times
    reference = StreamStatistics(48000)
    with mock.patch("aiortc.rtcrtpreceiver.time.time", side_effect=arrivals):
        for p in sent:
            reference.add(p)
    stats = core.in_stats(in_id)
    assert stats["packets"] == reference.packets_received == 9
    assert stats["lost"] == reference.packets_lost == 1 and stats["jitter"] == reference.jitter > 0

    # STUN and DTLS go back to Python as received; so does RTP of an SSRC the core does not know
    stun = b"\x00\x01\x00\x00\x21\x12\xa4\x42" + bytes(12)
    dtls = b"\x16\xfe\xfd" + bytes(20)
    unknown = RtpPacket(payload_type=111, sequence_number=1, timestamp=1, ssrc=0x4444, payload=b"x" * 20)
    for data in (stun, dtls, rig.publisher.protect(unknown.serialize())):
        rig.pub_peer.send(data)
    assert core.run_once(2000) == 3
    events = core.events()
    assert [(e.kind, e.leg) for e in events] == [(native.EV_RAW, rig.pub_leg)] * 2 + [(native.EV_RTP, rig.pub_leg)]
    assert events[0].data == stun and events[1].data == dtls and events[2].data == unknown.serialize()

    # a packet under the wrong key is dropped and counted; nothing is sent
    wrong = session(rig.profile, key(rig.profile, 9), inbound=False).protect(unknown.serialize())
    rig.pub_peer.send(wrong)
    assert core.run_once(2000) == 1
    assert core.leg_stats(rig.pub_leg)["srtp_errors"] == 1 and rig.received() == [] and core.events() == []


async def test_rtcp_from_python_is_protected_with_the_legs_srtcp_session(rig: Rig) -> None:
    pli = RtcpRtpfbPacket(fmt=RTCP_RTPFB_NACK, ssrc=0x1, media_ssrc=0x1111, lost=[5])
    rig.core.send_rtcp(rig.pub_leg, bytes(pli))
    peer_rx = session(rig.profile, key(rig.profile, 2), inbound=True)  # the publisher's view of node_pub_tx
    assert peer_rx.unprotect_rtcp(rig.pub_peer.recv(4096)) == bytes(pli)


def test_bad_arguments_are_refused_with_a_code() -> None:
    core = native.Core()
    try:
        a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
        sock = core.add_socket(a.fileno())
        with pytest.raises(native.NativeError) as bad_key:
            core.add_leg(sock, None, native.PROFILE_AEAD_AES_256_GCM, b"short", b"short")
        assert bad_key.value.code == -1
        leg = core.add_leg(sock, ("127.0.0.2", 5000), native.PROFILE_AES128_CM_SHA1_80, bytes(30), bytes(30))
        in_id = core.add_in(leg, 1, "VP8", 90000)
        with pytest.raises(native.NativeError):
            core.add_in(leg, 1, "VP8", 90000)  # same SSRC twice
        with pytest.raises(native.NativeError):
            core.add_out(leg, in_id, 5, 96, mid_id=15, mid="0")  # two-byte header ids: not supported
        with pytest.raises(native.NativeError):
            core.add_out(leg, in_id + 1, 5, 96)  # no such in stream
        a.close()
        b.close()
    finally:
        core.close()


@pytest.mark.parametrize("profile", sorted(KEY_LENGTHS))
def test_a_leg_handed_over_after_a_sequence_wrap_takes_the_rollover_counter(profile: int) -> None:
    """A stream that wrapped before the hand-over: without its ROC, SRTP fails both ways."""
    core = native.Core()
    a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
    try:
        sock = core.add_socket(a.fileno())
        pub_key, node_tx = key(profile, 1), key(profile, 2)
        publisher, reference_tx = session(profile, pub_key, inbound=False), session(profile, node_tx, inbound=False)
        packets = [
            RtpPacket(
                payload_type=96, sequence_number=seq, timestamp=seq * 10, ssrc=0x1234, payload=bytes([seq & 0xFF]) * 50
            )
            for seq in (65534, 65535, 0, 1)
        ]
        wire = [publisher.protect(p.serialize()) for p in packets]  # the last two under ROC 1
        reference = [reference_tx.protect(p.serialize()) for p in packets]

        fresh = core.add_leg(sock, None, profile, pub_key, node_tx)
        with pytest.raises(native.NativeError):
            core.unprotect(fresh, wire[2])  # ROC 0 assumed: authentication fails
        core.remove_leg(fresh)

        leg = core.add_leg(sock, None, profile, pub_key, node_tx)
        core.set_roc(leg, False, 0x1234, 1)
        core.set_roc(leg, True, 0x1234, 1)
        assert core.unprotect(leg, wire[2]) == packets[2].serialize()
        assert core.unprotect(leg, wire[3]) == packets[3].serialize()
        assert core.protect(leg, packets[2].serialize()) == reference[2]
        assert core.protect(leg, packets[3].serialize()) == reference[3]
    finally:
        core.close()
        a.close()
        b.close()


def test_the_core_runs_on_its_own_thread_while_python_changes_its_streams() -> None:
    """``run_once`` on a thread (GIL released) while the control calls add, retarget and remove
    out streams: every datagram sent arrives and decrypts; events wake ``event_fd``. The
    subscriber side is UDP on 127.0.0.1 (an AF_UNIX socketpair holds only a few datagrams)."""
    profile = native.PROFILE_AEAD_AES_128_GCM
    rig = Rig(profile)
    core = rig.core
    core.set_clock(-1, 0)  # real clocks
    node, viewer = socket.socket(socket.AF_INET, socket.SOCK_DGRAM), socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    node.bind(("127.0.0.1", 0))
    viewer.bind(("127.0.0.1", 0))
    viewer.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8 << 20)
    viewer.setblocking(False)
    leg = core.add_leg(core.add_socket(node.fileno()), viewer.getsockname(), profile, key(profile, 3), key(profile, 4))
    in_a = core.add_in(rig.pub_leg, 0xA, "opus", 48000)
    in_b = core.add_in(rig.pub_leg, 0xB, "opus", 48000)
    stop = threading.Event()

    def loop() -> None:
        while not stop.is_set():
            core.run_once(20)

    def drain() -> list[bytes]:
        out = []
        while True:
            try:
                out.append(viewer.recv(4096))
            except BlockingIOError:
                return out

    thread = threading.Thread(target=loop)
    thread.start()
    received: list[bytes] = []
    outs: dict[int, int] = {}
    ssrcs: list[int] = []
    try:
        for i in range(600):
            slot = i % 12  # a new out stream in a slot gets a new SSRC, as a new subscription does
            if slot in outs and i % 5 == 0:
                core.remove_out(outs.pop(slot))
            elif slot not in outs:
                ssrcs.append(0x1000 + len(ssrcs))
                outs[slot] = core.add_out(leg, in_a if i % 2 else in_b, ssrcs[-1], 111, initial_seq=i)
            elif i % 7 == 0:
                core.retarget(outs[slot], in_b if i % 2 else in_a)
            for in_ssrc in (0xA, 0xB):
                p = RtpPacket(payload_type=111, sequence_number=i, timestamp=960 * i, ssrc=in_ssrc, payload=b"o" * 60)
                rig.pub_peer.send(rig.publisher.protect(p.serialize()))
            received += drain()
        rig.pub_peer.send(b"\x00\x01\x00\x00\x21\x12\xa4\x42" + bytes(12))  # a STUN request: an event
        ready, _, _ = select.select([core.event_fd], [], [], 5)
        assert ready == [core.event_fd]
        assert [e.kind for e in core.events()] == [native.EV_RAW]
        assert select.select([core.event_fd], [], [], 0)[0] == []  # drained: no longer readable
    finally:
        stop.set()
        thread.join()
    time.sleep(0.2)
    received += drain()
    stats = core.stats()
    assert stats["rtp_in"] == 1200 and stats["srtp_errors"] == 0 and stats["send_errors"] == 0
    assert stats["forwarded"] > 1000 and len(received) == stats["sent"] == stats["forwarded"]
    subscriber_rx = session(profile, key(profile, 4), inbound=True)
    for data in received:
        assert RtpPacket.parse(subscriber_rx.unprotect(data)).ssrc in ssrcs
    rig.close()
    node.close()
    viewer.close()
