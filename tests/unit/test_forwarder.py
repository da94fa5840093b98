"""Keyframe detection and the forwarder's rewrite logic, with synthetic RTP and fakes of the
aiortc side (what ``aiortc_glue`` provides). No network, no sleeps: the clock is a variable."""

from __future__ import annotations

import fractions
from collections.abc import Awaitable, Callable

import av
import pytest
from aiortc.codecs.h264 import H264Encoder
from aiortc.codecs.vpx import Vp8Encoder
from aiortc.rtp import RtpPacket
from prometheus_client import REGISTRY

from media_node.forwarder import Forwarder, Source, send_rembs
from media_node.keyframes import (
    h264_keyframe_start,
    keyframe_detector,
    vp8_descriptor_size,
    vp8_keyframe_start,
    vp8_picture_id,
    vp8_with_picture_id,
)
from media_node.repair import LossRepair
from producers.fields import Layer

# --- synthetic payloads -------------------------------------------------------------------


def vp8(keyframe: bool, start: bool = True, picture_id: int | None = 1000, pid: int = 0) -> bytes:
    """A VP8 payload: descriptor (X, S, PID, 15-bit PictureID), then the payload header byte."""
    if picture_id is None:
        descriptor = bytes(((0x10 if start else 0) | pid,))
    else:
        descriptor = bytes((0x80 | (0x10 if start else 0) | pid, 0x80, 0x80 | (picture_id >> 8), picture_id & 0xFF))
    return descriptor + bytes((0x00 if keyframe else 0x01,)) + b"\x9d\x01\x2a" + bytes(20)


IDR, NON_IDR, SPS, PPS, SEI = b"\x65" + bytes(8), b"\x41" + bytes(8), b"\x67\x42" + bytes(6), b"\x68\xce", b"\x06\x05"


def stap_a(*nals: bytes) -> bytes:
    return b"\x18" + b"".join(len(n).to_bytes(2, "big") + n for n in nals)


def fu_a(nal_type: int, start: bool) -> bytes:
    return bytes((0x7C, (0x80 if start else 0) | nal_type)) + bytes(10)


# --- keyframes.py -------------------------------------------------------------------------


def test_vp8_keyframe_start_needs_s_bit_partition_zero_and_p_bit_clear() -> None:
    assert vp8_keyframe_start(vp8(keyframe=True))
    assert vp8_keyframe_start(vp8(keyframe=True, picture_id=None))
    assert not vp8_keyframe_start(vp8(keyframe=False))
    assert not vp8_keyframe_start(vp8(keyframe=True, start=False))
    assert not vp8_keyframe_start(vp8(keyframe=True, pid=1))
    assert not vp8_keyframe_start(b"")
    assert not vp8_keyframe_start(b"\x90\x80\x83")  # truncated long PictureID


def test_vp8_descriptor_with_every_optional_field() -> None:
    # X=1 S=1; I L T K all set; 7-bit PictureID; TL0PICIDX; TID/KEYIDX; then a keyframe header
    payload = bytes((0x90, 0xF0, 0x05, 0x07, 0x40, 0x00)) + bytes(4)
    assert vp8_descriptor_size(payload) == 5
    assert vp8_keyframe_start(payload)
    assert not vp8_keyframe_start(payload[:5] + b"\x01" + bytes(4))


def test_h264_keyframe_start_idr_sps_stap_a_fu_a() -> None:
    assert h264_keyframe_start(IDR)
    assert h264_keyframe_start(SPS)
    assert not h264_keyframe_start(NON_IDR)
    assert h264_keyframe_start(stap_a(SPS, PPS))
    assert h264_keyframe_start(stap_a(SEI, IDR))
    assert not h264_keyframe_start(stap_a(SEI, NON_IDR))
    assert not h264_keyframe_start(b"\x18\x00\x30\x67")  # STAP-A size beyond the payload
    assert h264_keyframe_start(fu_a(5, start=True))
    assert not h264_keyframe_start(fu_a(5, start=False))
    assert not h264_keyframe_start(fu_a(1, start=True))
    assert not h264_keyframe_start(b"")


def test_detector_by_codec_name() -> None:
    assert keyframe_detector("VP8") is vp8_keyframe_start
    assert keyframe_detector("H264") is h264_keyframe_start
    assert keyframe_detector("opus")(b"\x01\x02")
    assert keyframe_detector("PCMU")(b"")


def test_vp8_picture_id_rewrite_keeps_width_and_wraps() -> None:
    payload = vp8(keyframe=False, picture_id=0x7FFE)
    assert vp8_picture_id(payload) == (0x7FFE, 15)
    rewritten = vp8_with_picture_id(payload, 0x8003)
    assert vp8_picture_id(rewritten) == (3, 15)
    assert rewritten[4:] == payload[4:] and len(rewritten) == len(payload)
    short = bytes((0x90, 0x80, 0x7F)) + b"\x00"
    assert vp8_picture_id(vp8_with_picture_id(short, 130)) == (2, 7)
    assert vp8_picture_id(vp8(keyframe=True, picture_id=None)) is None


def encode(encoder: Vp8Encoder | H264Encoder, count: int, force_at: int) -> list[list[bytes]]:
    frames = []
    for i in range(count):
        frame = av.VideoFrame(width=160, height=96, format="yuv420p")
        for plane in frame.planes:
            plane.update(bytes([i * 7 % 256]) * plane.buffer_size)
        frame.pts, frame.time_base = i * 3000, fractions.Fraction(1, 90000)
        payloads, _ = encoder.encode(frame, force_keyframe=(i == force_at))
        frames.append(payloads)
    return frames


@pytest.mark.parametrize(("encoder", "detect"), [(Vp8Encoder, vp8_keyframe_start), (H264Encoder, h264_keyframe_start)])
def test_detectors_on_real_encoder_output(
    encoder: Callable[[], Vp8Encoder | H264Encoder], detect: Callable[[bytes], bool]
) -> None:
    frames = encode(encoder(), 6, force_at=4)
    starts = [[detect(p) for p in payloads] for payloads in frames]
    assert starts[0][0] and starts[4][0]
    assert not any(any(s) for s in starts[1:4]) and not any(starts[5])


# --- fakes of the aiortc side -------------------------------------------------------------


class FakeUpstream:
    def __init__(self, codec: str = "VP8", clock_rate: int = 90000) -> None:
        self.codec = (codec, clock_rate)
        self.uplink_bitrate: int | None = None
        self.keyframe_requests: list[int] = []
        self.nacks: list[tuple[int, list[int]]] = []
        self.rembs: list[tuple[int, list[int]]] = []
        self.connection: object = self
        self.report: tuple[int, int] | None = None

    def codec_of(self, payload_type: int) -> tuple[str, int] | None:
        return self.codec if payload_type in (96, 97, 111) else None

    async def request_keyframe(self, media_ssrc: int) -> None:
        self.keyframe_requests.append(media_ssrc)

    async def request_retransmission(self, media_ssrc: int, seqs: list[int]) -> None:
        self.nacks.append((media_ssrc, seqs))

    async def send_remb(self, bitrate: int, ssrcs: list[int]) -> None:
        self.rembs.append((bitrate, ssrcs))

    def sender_report(self, ssrc: int | None) -> tuple[int, int] | None:
        return self.report


class FakeLeg:
    def __init__(self, kind: str = "video", ready: bool = True) -> None:
        self.kind = kind
        self.ready = ready
        self.written: list[RtpPacket] = []
        self.keyframe_callbacks: list[Callable[[], Awaitable[None]]] = []
        self.remb_callbacks: list[Callable[[int], None]] = []
        self.nack_miss_callbacks: list[Callable[[list[int]], Awaitable[None]]] = []
        self.clock_maps: list[tuple[int, int]] = []

    def payload_type(self, codec_name: str) -> int | None:
        return {"vp8": 120, "h264": 121, "opus": 109}.get(codec_name.lower())

    async def write(self, packet: RtpPacket) -> bool:
        self.written.append(packet)
        return True

    def on_keyframe_request(self, callback: Callable[[], Awaitable[None]]) -> None:
        self.keyframe_callbacks.append(callback)

    def on_remb(self, callback: Callable[[int], None]) -> None:
        self.remb_callbacks.append(callback)

    def on_nack_miss(self, callback: Callable[[list[int]], Awaitable[None]]) -> None:
        self.nack_miss_callbacks.append(callback)

    def map_clock(self, ntp: int, rtp: int) -> None:
        self.clock_maps.append((ntp, rtp))

    @property
    def seqs(self) -> list[int]:
        return [p.sequence_number for p in self.written]


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def rtp(seq: int, ts: int, payload: bytes, ssrc: int = 1111, pt: int = 97, marker: int = 0) -> RtpPacket:
    return RtpPacket(
        payload_type=pt,
        marker=marker,
        sequence_number=seq & 0xFFFF,
        timestamp=ts & 0xFFFFFFFF,
        ssrc=ssrc,
        payload=payload,
    )


def video_source(clock: Clock, *layers: Layer) -> tuple[Source, dict[Layer, FakeUpstream]]:
    source = Source("pub1", "cam", "video", clock=clock)
    ups = {}
    for layer in layers or ("single",):
        ups[layer] = FakeUpstream()
        source.add_encoding(layer, ups[layer])
    return source, ups


# --- forwarder.py -------------------------------------------------------------------------


async def test_video_starts_at_a_keyframe_and_pli_is_throttled() -> None:
    clock = Clock()
    source, ups = video_source(clock)
    enc = source.encodings["single"]
    leg = FakeLeg()
    await source.subscribe("sub1", leg, initial_seq=500, initial_ts=9000)
    assert ups["single"].keyframe_requests == []  # no ssrc known yet: asked for on first packet
    await enc.push(rtp(10, 3000, vp8(keyframe=False)))
    assert ups["single"].keyframe_requests == [1111] and leg.written == []
    clock.now += 0.2
    await enc.push(rtp(11, 6000, vp8(keyframe=False)))
    assert len(ups["single"].keyframe_requests) == 1  # throttled: < 500 ms
    clock.now += 0.4
    await enc.push(rtp(12, 9000, vp8(keyframe=False)))
    assert len(ups["single"].keyframe_requests) == 2  # still waiting: asked again
    await enc.push(rtp(13, 12000, vp8(keyframe=True)))
    await enc.push(rtp(14, 12000, vp8(keyframe=True, start=False), marker=1))
    await enc.push(rtp(16, 15000, vp8(keyframe=False)))  # 15 lost upstream: the gap is kept
    assert leg.seqs == [500, 501, 503]
    assert [p.timestamp for p in leg.written] == [9000, 9000, 12000]
    assert [p.payload_type for p in leg.written] == [120] * 3
    assert leg.written[1].marker == 1
    await enc.push(rtp(15, 12000, vp8(keyframe=False, start=False)))  # late (upstream RTX)
    assert leg.seqs[-1] == 502
    assert len(ups["single"].keyframe_requests) == 2


async def test_sequence_and_timestamp_wrap() -> None:
    clock = Clock()
    source, _ = video_source(clock)
    enc = source.encodings["single"]
    leg = FakeLeg()
    await source.subscribe("sub1", leg, initial_seq=65534, initial_ts=0xFFFFFFFF - 1000)
    await enc.push(rtp(100, 5000, vp8(keyframe=True)))
    await enc.push(rtp(101, 5000, vp8(keyframe=False, start=False)))
    await enc.push(rtp(102, 8000, vp8(keyframe=False)))
    assert leg.seqs == [65534, 65535, 0]
    assert [p.timestamp for p in leg.written] == [0xFFFFFFFF - 1000] * 2 + [1999]


async def test_layer_switch_waits_for_target_keyframe_and_continues_numbering() -> None:
    clock = Clock()
    source, ups = video_source(clock, "high", "low")
    high, low = source.encodings["high"], source.encodings["low"]
    leg = FakeLeg()
    down = await source.subscribe("sub1", leg, layer="high", initial_seq=1000, initial_ts=50_000)
    await low.push(rtp(700, 1_000_000, vp8(keyframe=True, picture_id=20), ssrc=2222))
    assert leg.written == []  # a subscriber of high ignores low
    await high.push(rtp(40, 7000, vp8(keyframe=True, picture_id=300), marker=1))
    await high.push(rtp(41, 10000, vp8(keyframe=False, picture_id=301), marker=1))
    assert down.layer == "high" and leg.seqs == [1000, 1001]

    clock.now += 1.0  # so the high encoding may be asked again
    await source.set_layer("sub1", "low")
    assert ups["low"].keyframe_requests == [2222]
    clock.now += 0.1
    await low.push(rtp(701, 1_003_000, vp8(keyframe=False, picture_id=21), ssrc=2222))
    await high.push(rtp(42, 13000, vp8(keyframe=False, picture_id=302), marker=1))
    assert down.layer == "high" and leg.seqs == [1000, 1001, 1002]  # still high until a low keyframe

    clock.now += 0.1
    await low.push(rtp(705, 1_009_000, vp8(keyframe=True, picture_id=25), ssrc=2222))
    assert down.switches[-1][0] == "low"
    assert leg.seqs[-1] == 1003  # +1 from the last sent
    assert leg.written[-1].timestamp == 56_000 + 9000  # last ts + 100 ms at 90 kHz
    assert vp8_picture_id(leg.written[-1].payload) == (303, 15)
    await high.push(rtp(43, 16000, vp8(keyframe=False, picture_id=303)))  # old layer: dropped
    await low.push(rtp(704, 1_006_000, vp8(keyframe=False, picture_id=24), ssrc=2222))  # before switch
    await low.push(rtp(706, 1_012_000, vp8(keyframe=False, picture_id=26), ssrc=2222))
    assert leg.seqs == [1000, 1001, 1002, 1003, 1004]
    assert vp8_picture_id(leg.written[-1].payload) == (304, 15)
    assert down.switches == [("high", 40, 1000), ("low", 705, 1003)]
    assert high.readers == [] and low.readers == [down]


async def test_switch_waits_for_the_current_frame_to_end() -> None:
    clock = Clock()
    source, _ = video_source(clock, "high", "low")
    high, low = source.encodings["high"], source.encodings["low"]
    leg = FakeLeg()
    down = await source.subscribe("sub1", leg, layer="high", initial_seq=10, initial_ts=0)
    await high.push(rtp(1, 3000, vp8(keyframe=True), marker=1))
    await source.set_layer("sub1", "low")
    await high.push(rtp(2, 6000, vp8(keyframe=False)))  # a two-packet frame begins
    await low.push(rtp(500, 90, vp8(keyframe=True), ssrc=2222))
    await low.push(rtp(501, 90, vp8(keyframe=True, start=False), ssrc=2222, marker=1))
    assert down.layer == "high" and down.holding and leg.seqs == [10, 11]
    await high.push(rtp(3, 6000, vp8(keyframe=False, start=False), marker=1))  # ... and ends
    assert down.layer == "low" and not down.holding
    assert leg.seqs == [10, 11, 12, 13, 14]
    assert [p.timestamp for p in leg.written][3:] == [3001, 3001]  # same frame, after the last
    await high.push(rtp(4, 9000, vp8(keyframe=False), marker=1))
    assert len(leg.written) == 5


async def test_a_stalled_frame_does_not_hold_the_switch_forever() -> None:
    clock = Clock()
    source, _ = video_source(clock, "high", "low")
    high, low = source.encodings["high"], source.encodings["low"]
    leg = FakeLeg()
    down = await source.subscribe("sub1", leg, layer="high")
    await high.push(rtp(1, 3000, vp8(keyframe=True)))  # its last packet never comes
    await source.set_layer("sub1", "low")
    await low.push(rtp(500, 90, vp8(keyframe=True), ssrc=2222))
    clock.now += 0.2
    await low.push(rtp(501, 3090, vp8(keyframe=False), ssrc=2222))
    assert down.layer == "low" and len(leg.written) == 3


async def test_switch_back_before_the_keyframe_cancels_it() -> None:
    clock = Clock()
    source, _ = video_source(clock, "high", "low")
    high, low = source.encodings["high"], source.encodings["low"]
    leg = FakeLeg()
    down = await source.subscribe("sub1", leg, layer="high")
    await high.push(rtp(1, 0, vp8(keyframe=True)))
    await source.set_layer("sub1", "low")
    await source.set_layer("sub1", "high")
    await low.push(rtp(9, 0, vp8(keyframe=True), ssrc=2222))
    assert down.layer == "high" and low.readers == [] and len(leg.written) == 1


async def test_no_start_while_the_leg_is_not_connected() -> None:
    clock = Clock()
    source, ups = video_source(clock)
    enc = source.encodings["single"]
    leg = FakeLeg(ready=False)
    await source.subscribe("sub1", leg)
    await enc.push(rtp(1, 0, vp8(keyframe=True)))
    assert leg.written == [] and ups["single"].keyframe_requests == []
    leg.ready = True
    await enc.push(rtp(2, 3000, vp8(keyframe=False)))
    # the leg is up: it starts on the cached GOP (media_node/gop_cache.py), keyframe first, no PLI
    assert ups["single"].keyframe_requests == [] and [p.sequence_number for p in leg.written] != []
    assert len(leg.written) == 2
    await enc.push(rtp(3, 6000, vp8(keyframe=True)))
    assert len(leg.written) == 3


async def test_a_late_leg_without_a_cached_gop_asks_for_a_keyframe() -> None:
    clock = Clock()
    source, ups = video_source(clock)
    enc = source.encodings["single"]
    leg = FakeLeg(ready=False)
    await source.subscribe("sub1", leg)
    await enc.push(rtp(1, 0, vp8(keyframe=False)))  # joined mid-GOP: nothing cached yet
    leg.ready = True
    await enc.push(rtp(2, 3000, vp8(keyframe=False)))
    assert ups["single"].keyframe_requests == [1111] and leg.written == []
    await enc.push(rtp(3, 6000, vp8(keyframe=True)))
    assert len(leg.written) == 1


async def test_two_subscribers_have_their_own_numbering_and_share_the_payload() -> None:
    clock = Clock()
    source, _ = video_source(clock)
    enc = source.encodings["single"]
    a, b = FakeLeg(), FakeLeg()
    await source.subscribe("a", a, initial_seq=10, initial_ts=0)
    await source.subscribe("b", b, initial_seq=30000, initial_ts=777)
    packet = rtp(5, 100, vp8(keyframe=True))
    await enc.push(packet)
    assert (a.seqs, b.seqs) == ([10], [30000])
    assert (a.written[0].timestamp, b.written[0].timestamp) == (0, 777)
    assert a.written[0].payload is packet.payload is b.written[0].payload
    assert (packet.sequence_number, packet.timestamp, packet.ssrc) == (5, 100, 1111)
    source.unsubscribe("a")
    await enc.push(rtp(6, 3100, vp8(keyframe=False)))
    assert (len(a.written), len(b.written)) == (1, 2)
    assert source.packets_forwarded == 3


async def test_subscriber_pli_is_relayed_upstream_throttled() -> None:
    clock = Clock()
    source, ups = video_source(clock)
    enc = source.encodings["single"]
    leg = FakeLeg()
    down = await source.subscribe("sub1", leg)
    await enc.push(rtp(1, 0, vp8(keyframe=True)))
    clock.now += 1
    await leg.keyframe_callbacks[0]()
    await leg.keyframe_callbacks[0]()
    clock.now += 0.6
    await leg.keyframe_callbacks[0]()
    assert len(ups["single"].keyframe_requests) == 3  # 1 at start + 2 relayed
    assert down.keyframe_requests_relayed == 2


async def test_remb_upstream_is_the_smallest_fresh_estimate_summed_per_connection() -> None:
    clock = Clock()
    source, ups = video_source(clock, "high", "low")
    high, low = source.encodings["high"], source.encodings["low"]
    ups["low"].connection = ups["high"].connection  # both layers on one publisher connection
    legs = [FakeLeg(), FakeLeg(), FakeLeg()]
    for i, leg in enumerate(legs):
        await source.subscribe(f"s{i}", leg, layer="low" if i == 2 else "high")
    await high.push(rtp(1, 0, vp8(keyframe=True)))
    await low.push(rtp(1, 0, vp8(keyframe=True), ssrc=2222))
    ups["high"].uplink_bitrate = 2_000_000
    legs[0].remb_callbacks[0](900_000)
    legs[1].remb_callbacks[0](400_000)
    legs[2].remb_callbacks[0](100_000)  # on low: does not limit high
    await source.tick()
    assert source.remb_limits() == [(ups["high"], 1111, 400_000), (ups["low"], 2222, 100_000)]
    await send_rembs(source.remb_limits())
    # one REMB for the connection: a browser caps its whole send rate by it
    assert ups["high"].rembs == [(500_000, [1111, 2222])] and ups["low"].rembs == []
    clock.now += 6  # subscriber estimates are stale; the uplink estimate remains
    await send_rembs(source.remb_limits())
    assert ups["high"].rembs[-1] == (2_000_000, [1111])


async def test_rembs_of_two_connections_stay_apart() -> None:
    clock = Clock()
    camera, cam_ups = video_source(clock, "single")
    screen, screen_ups = video_source(clock, "single")
    await camera.encodings["single"].push(rtp(1, 0, vp8(keyframe=True)))
    await screen.encodings["single"].push(rtp(1, 0, vp8(keyframe=True)))
    cam_ups["single"].uplink_bitrate = 300_000
    screen_ups["single"].uplink_bitrate = 700_000
    await send_rembs(camera.remb_limits() + screen.remb_limits())
    assert cam_ups["single"].rembs == [(300_000, [1111])]
    assert screen_ups["single"].rembs == [(700_000, [1111])]


async def test_audio_starts_at_once_without_pli_and_keeps_audio_level() -> None:
    clock = Clock()
    source = Source("pub1", "mic", "audio", clock=clock)
    up = FakeUpstream("opus", 48000)
    enc = source.add_encoding("single", up)
    leg = FakeLeg("audio")
    await source.subscribe("sub1", leg, initial_seq=1, initial_ts=2)
    packet = rtp(77, 960, b"\xfc\xff\xfe", pt=111)
    packet.extensions.audio_level = (True, 30)
    await enc.push(packet)
    assert leg.seqs == [1] and leg.written[0].payload_type == 109
    assert leg.written[0].extensions.audio_level == (True, 30)
    assert up.keyframe_requests == []


async def test_unknown_codec_at_the_subscriber_is_not_forwarded() -> None:
    clock = Clock()
    source = Source("pub1", "mic", "audio", clock=clock)
    enc = source.add_encoding("single", FakeUpstream("G722", 8000))
    leg = FakeLeg("audio")
    await source.subscribe("sub1", leg)
    await enc.push(rtp(1, 0, b"\x00", pt=96))
    assert leg.written == []


def test_resolve_falls_back_to_the_nearest_layer() -> None:
    clock = Clock()
    source, _ = video_source(clock, "high", "low")
    assert source.resolve("mid").layer == "low"
    assert source.resolve("single").layer == "high"
    only_low, _ = video_source(clock, "low")
    assert only_low.resolve("high").layer == "low"
    single, _ = video_source(clock)
    assert single.resolve("low").layer == "single"


async def test_forwarder_flushes_forwarded_counters_to_metrics() -> None:
    def sample() -> float:
        return REGISTRY.get_sample_value("roomlog_media_node_forwarded_packets_total", {"kind": "video"}) or 0.0

    clock = Clock()
    forwarder = Forwarder(clock=clock)
    source = forwarder.source("pub1", "cam", "video")
    assert forwarder.source("pub1", "cam", "video") is source
    enc = source.add_encoding("single", FakeUpstream())
    await source.subscribe("sub1", FakeLeg())
    await enc.push(rtp(1, 0, vp8(keyframe=True)))
    await enc.push(rtp(2, 0, vp8(keyframe=False, start=False)))
    before = sample()
    await forwarder.tick()
    assert sample() - before == 2
    forwarder.remove_source("pub1", "cam")
    assert forwarder.sources == {} and source.downstreams == {}


# --- loss repair (repair.py and the forwarder's use of it) --------------------------------


def test_loss_repair_tracks_holes_retries_and_gives_up() -> None:
    repair = LossRepair(retry_s=0.05, give_up_s=0.2)
    assert not repair.received(65534, 0.0)
    assert not repair.received(1, 0.0)  # 65535 and 0 missing, across the wrap
    assert sorted(repair.missing) == [0, 65535] and repair.pending(0) and not repair.pending(1)
    assert repair.due(0.04) == ([], [])
    assert repair.due(0.05) == ([65535, 0], [])  # the receiver's NACK was the first try
    assert repair.received(0, 0.07) and not repair.pending(0)
    assert not repair.received(0, 0.08)  # a duplicate is not a repair
    assert repair.due(0.2) == ([], [65535])
    assert (repair.detected, repair.repaired, repair.given_up, repair.retries) == (2, 1, 1, 2)
    assert not repair.received(5000, 0.3) and repair.missing == {}  # a jump is a new stream


async def lossy_start(clock: Clock) -> tuple[Source, FakeUpstream, FakeLeg]:
    """A subscriber receiving seqs 10.. (out 500..); packet 12 is lost on the way to the node."""
    source, ups = video_source(clock)
    leg = FakeLeg()
    await source.subscribe("sub1", leg, initial_seq=500, initial_ts=0)
    enc = source.encodings["single"]
    await enc.push(rtp(10, 0, vp8(keyframe=True), marker=1))
    await enc.push(rtp(11, 3000, vp8(keyframe=False), marker=1))
    clock.now += 1  # the start's keyframe request is no longer throttling
    await enc.push(rtp(13, 9000, vp8(keyframe=False), marker=1))
    return source, ups["single"], leg


def loss_requests() -> float:
    return REGISTRY.get_sample_value("roomlog_media_node_keyframe_requests_total", {"reason": "loss"}) or 0.0


async def test_a_packet_lost_upstream_is_nacked_again_then_a_keyframe_is_asked_for() -> None:
    clock = Clock()
    source, up, leg = await lossy_start(clock)
    enc = source.encodings["single"]
    before = loss_requests()
    assert len(up.keyframe_requests) == 1 and up.nacks == []  # the start; aiortc NACKed once
    clock.now += 0.06
    await enc.push(rtp(14, 12000, vp8(keyframe=False), marker=1))
    assert up.nacks == [(1111, [12])]
    clock.now += 0.15
    await enc.push(rtp(15, 15000, vp8(keyframe=False), marker=1))
    assert up.keyframe_requests == [1111, 1111] and enc.keyframe_requests_by_reason == {"start": 1, "loss": 1}
    assert loss_requests() - before == 1 and not enc.repair.missing  # type: ignore[union-attr]
    assert leg.seqs == [500, 501, 503, 504, 505]  # forwarding never waited for the hole


async def test_a_retransmission_in_time_needs_no_keyframe() -> None:
    clock = Clock()
    source, up, leg = await lossy_start(clock)
    clock.now += 0.1
    await source.encodings["single"].push(rtp(12, 6000, vp8(keyframe=False), marker=1))
    clock.now += 1
    await source.tick()
    assert len(up.keyframe_requests) == 1 and leg.seqs == [500, 501, 503, 502]


async def test_the_tick_gives_up_when_no_packet_follows_the_hole() -> None:
    clock = Clock()
    source, up, _ = await lossy_start(clock)
    clock.now += 0.3
    await source.tick()
    assert source.encodings["single"].keyframe_requests_by_reason.get("loss") == 1


async def test_no_keyframe_request_when_one_already_started_after_the_hole() -> None:
    clock = Clock()
    source, up, _ = await lossy_start(clock)
    enc = source.encodings["single"]
    await enc.push(rtp(14, 12000, vp8(keyframe=True), marker=1))  # the publisher's own keyframe
    clock.now += 0.3
    await enc.push(rtp(15, 15000, vp8(keyframe=False), marker=1))
    assert len(up.keyframe_requests) == 1 and enc.repair is not None and enc.repair.given_up == 1
    await enc.push(rtp(17, 21000, vp8(keyframe=False), marker=1))  # a later hole: that keyframe is old
    clock.now += 0.3
    await enc.push(rtp(18, 24000, vp8(keyframe=False), marker=1))
    assert len(up.keyframe_requests) == 2 and enc.keyframe_requests_by_reason["loss"] == 1


async def test_a_subscriber_nack_the_node_cannot_answer() -> None:
    clock = Clock()
    source, up, leg = await lossy_start(clock)
    enc = source.encodings["single"]
    miss = leg.nack_miss_callbacks[0]
    clock.now += 1
    await miss([502])  # = incoming 12, still being repaired: wait for the retransmission
    assert len(up.keyframe_requests) == 1
    await miss([501])  # = incoming 11, which the leg's history no longer has: nothing will come
    assert len(up.keyframe_requests) == 2 and enc.keyframe_requests_by_reason["nack_miss"] == 1
    await miss([501])
    assert len(up.keyframe_requests) == 2  # throttled like relayed PLIs until a keyframe comes
    await enc.push(rtp(14, 12000, vp8(keyframe=True), marker=1))
    clock.now += 1
    await miss([501])  # older than the keyframe the subscriber got since: it does not matter
    assert len(up.keyframe_requests) == 2 and leg.seqs[-1] == 504
    await miss([504])  # the keyframe itself (the leg's history lost it): that one does
    assert len(up.keyframe_requests) == 3 and enc.keyframe_requests_by_reason["nack_miss"] == 2


async def test_audio_losses_are_not_tracked() -> None:
    source = Source("pub1", "mic", "audio", clock=Clock())
    enc = source.add_encoding("single", FakeUpstream("opus", 48000))
    await source.subscribe("sub1", FakeLeg("audio"))
    await enc.push(rtp(1, 0, b"\xfc", pt=111))
    await enc.push(rtp(5, 960, b"\xfc", pt=111))
    assert enc.repair is None


async def test_pause_forwards_nothing_and_resume_starts_at_a_keyframe_with_continuous_numbering() -> None:
    clock = Clock()
    source, ups = video_source(clock, "high", "low")
    high = source.encodings["high"]
    leg = FakeLeg()
    down = await source.subscribe("sub1", leg, layer="high", initial_seq=100, initial_ts=0)
    await high.push(rtp(1, 3000, vp8(keyframe=True, picture_id=10), marker=1))
    await high.push(rtp(2, 6000, vp8(keyframe=False, picture_id=11), marker=1))
    assert leg.seqs == [100, 101]
    await source.set_paused("sub1", True)
    await high.push(rtp(3, 9000, vp8(keyframe=False, picture_id=12), marker=1))
    await high.push(rtp(4, 12000, vp8(keyframe=True, picture_id=13), marker=1))
    assert leg.seqs == [100, 101] and down.paused  # nothing while paused, not even a keyframe
    clock.now += 1.0
    await source.set_paused("sub1", False)
    assert ups["high"].keyframe_requests, "resuming asks the publisher for a keyframe"
    await high.push(rtp(5, 15000, vp8(keyframe=False, picture_id=14), marker=1))
    assert leg.seqs == [100, 101]  # a delta frame cannot start the picture again
    await high.push(rtp(6, 18000, vp8(keyframe=True, picture_id=15), marker=1))
    await high.push(rtp(7, 21000, vp8(keyframe=False, picture_id=16), marker=1))
    assert leg.seqs == [100, 101, 102, 103]
    assert vp8_picture_id(leg.written[2].payload) == (12, 15)  # picture ids continue too
    assert down.layer == "high"
