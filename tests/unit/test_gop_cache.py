"""media_node/gop_cache.py: the latest GOP of a video encoding, replayed to a late subscriber."""

from __future__ import annotations

from aiortc.codecs.h264 import H264Decoder, H264Encoder, H264PayloadDescriptor
from aiortc.jitterbuffer import JitterFrame

from media_node.gop_cache import GopCache, squeezed
from media_node.keyframes import h264_keyframe_start, vp8_keyframe_start
from tests.unit.test_forwarder import Clock, FakeLeg, FakeUpstream, encode, rtp, vp8


def test_the_cache_starts_at_a_keyframe_and_restarts_at_the_next() -> None:
    gop = GopCache(vp8_keyframe_start)
    gop.add(rtp(1, 0, vp8(keyframe=False)), 0.0)
    assert len(gop) == 0  # nothing to start from
    gop.add(rtp(2, 3000, vp8(keyframe=True)), 0.1)
    gop.add(rtp(3, 6000, vp8(keyframe=False)), 0.2)
    gop.add(rtp(4, 6000, vp8(keyframe=False, start=False)), 0.2)
    assert [p.sequence_number for p in gop.packets()] == [2, 3, 4]
    gop.add(rtp(5, 9000, vp8(keyframe=True)), 0.3)
    assert [p.sequence_number for p in gop.packets()] == [5]


def test_packets_of_one_keyframe_do_not_restart_it() -> None:
    sps, idr = b"\x67\x42\xc0\x0d", b"\x65\x88\x84"
    gop = GopCache(h264_keyframe_start)
    gop.add(rtp(1, 9000, sps), 0.0)
    gop.add(rtp(2, 9000, idr), 0.0)  # SPS and IDR: both "keyframe starts", one picture
    assert [p.sequence_number for p in gop.packets()] == [1, 2]


def test_a_long_gop_is_dropped_until_the_next_keyframe() -> None:
    gop = GopCache(vp8_keyframe_start, max_packets=3, max_age_s=10)
    for seq in range(1, 5):
        gop.add(rtp(seq, seq * 3000, vp8(keyframe=seq == 1)), 0.0)
    assert len(gop) == 0
    gop.add(rtp(5, 15000, vp8(keyframe=False)), 0.0)
    assert len(gop) == 0
    aged = GopCache(vp8_keyframe_start, max_age_s=1.0)
    aged.add(rtp(1, 0, vp8(keyframe=True)), 0.0)
    aged.add(rtp(2, 3000, vp8(keyframe=False)), 1.5)
    assert len(aged) == 0


def test_squeezed_frames_are_one_tick_apart_ending_at_the_newest() -> None:
    packets = [rtp(1, 1000, b"a"), rtp(2, 1000, b"b"), rtp(3, 4000, b"c"), rtp(4, 7000, b"d")]
    out = squeezed(packets)
    assert [p.timestamp for p in out] == [6998, 6998, 6999, 7000]
    assert [p.sequence_number for p in out] == [1, 2, 3, 4] and [p.payload for p in out] == [b"a", b"b", b"c", b"d"]
    assert [p.timestamp for p in packets] == [1000, 1000, 4000, 7000]  # the cache's own are untouched
    wrapped = squeezed([rtp(1, 0, b"a"), rtp(2, 3000, b"b"), rtp(3, 1, b"c")])
    assert [p.timestamp for p in wrapped] == [0xFFFFFFFF, 0, 1]


async def test_a_late_subscriber_decodes_its_first_picture_at_once_from_the_cached_gop() -> None:
    """A publisher that never answers a PLI (a passed-through camera): the subscriber whose leg
    comes up mid-GOP gets the keyframe and the frames since, and a real decoder decodes them."""
    from media_node.forwarder import Source

    clock = Clock()
    source = Source("edge", "camera", "video", clock=clock)
    upstream = FakeUpstream("H264")
    encoding = source.add_encoding("single", upstream)
    frames = encode(H264Encoder(), 8, force_at=0)
    leg = FakeLeg(ready=False)
    await source.subscribe("viewer", leg)
    seq = 0
    for index, payloads in enumerate(frames):
        if index == 5:
            leg.ready = True  # ICE/DTLS done between two keyframes
        for n, payload in enumerate(payloads):
            seq += 1
            await encoding.push(rtp(seq, index * 3000, payload, marker=int(n == len(payloads) - 1)))
        clock.now += 1 / 30
    assert upstream.keyframe_requests == [], "the cached GOP started it: no PLI needed"
    assert h264_keyframe_start(leg.written[0].payload)
    decoder, decoded = H264Decoder(), 0
    by_ts: dict[int, list[bytes]] = {}
    for packet in leg.written:
        by_ts.setdefault(packet.timestamp, []).append(H264PayloadDescriptor.parse(packet.payload)[1])
    for ts, parts in by_ts.items():
        decoded += len(decoder.decode(JitterFrame(data=b"".join(parts), timestamp=ts)))
    assert decoded == len(frames)  # frames 0-5 replayed, 6-7 live: every one decodes
    stamps = sorted(by_ts)
    assert stamps[5] - stamps[0] == 5 and stamps[6] - stamps[5] == 3000  # squeezed, then live pace


async def test_a_recorder_gets_the_cached_gop_at_the_publishers_frame_times() -> None:
    """A recorder (subscribed ``from_start``) whose source is too old for the start buffer
    starts on the cached GOP too, but unsqueezed: it writes each frame at its own time."""
    from media_node.forwarder import START_BUFFER_PACKETS, Source

    clock = Clock()
    source = Source("edge", "camera", "video", clock=clock)
    upstream = FakeUpstream("VP8")
    encoding = source.add_encoding("single", upstream)
    seq = 0
    for index in range(START_BUFFER_PACKETS + 10):  # the start buffer no longer reaches back
        seq += 1
        await encoding.push(rtp(seq, index * 3000, vp8(keyframe=index % 100 == 0)))
        clock.now += 1 / 30
    source.from_start_for("recorder")
    leg = FakeLeg(ready=True)
    await source.subscribe("recorder", leg)
    for index in range(START_BUFFER_PACKETS + 10, START_BUFFER_PACKETS + 13):
        seq += 1
        await encoding.push(rtp(seq, index * 3000, vp8(keyframe=False)))
    stamps = sorted({p.timestamp for p in leg.written})
    assert vp8_keyframe_start(leg.written[0].payload)
    assert len(stamps) > 3, "the cached GOP was replayed"
    assert {b - a for a, b in zip(stamps, stamps[1:], strict=False)} == {3000}  # every frame at its time
