"""What the node does for a recorder: a subscription marked ``from_start`` gets the source
from its first keyframe while the node keeps the beginning, and every leg's sender reports
carry the publisher's NTP↔RTP mapping in the leg's own timestamps."""

from __future__ import annotations

from media_node.forwarder import START_BUFFER_S
from tests.unit.test_forwarder import Clock, FakeLeg, rtp, video_source, vp8


async def test_a_recorder_subscribing_late_gets_the_source_from_its_first_keyframe() -> None:
    clock = Clock()
    source, ups = video_source(clock)
    enc = source.encodings["single"]
    for i in range(10):  # 10 frames before the subscriptions exist, the first a keyframe
        await enc.push(rtp(100 + i, 3000 * i, vp8(keyframe=i == 0, picture_id=50 + i), marker=1))
        clock.now += 0.033
    viewer, recorder = FakeLeg(), FakeLeg()
    await source.subscribe("viewer", viewer, initial_seq=0, initial_ts=0)
    source.from_start_for("rec")
    down = await source.subscribe("rec", recorder, initial_seq=500, initial_ts=90_000)
    # the recorder got all ten at once, numbered on from its start; the viewer waits for a keyframe
    assert recorder.seqs == list(range(500, 510))
    assert [p.timestamp for p in recorder.written] == [90_000 + 3000 * i for i in range(10)]
    assert viewer.written == [] and ups["single"].keyframe_requests == [1111]  # the viewer's PLI only
    await enc.push(rtp(110, 30_000, vp8(keyframe=False, picture_id=60), marker=1))
    assert recorder.seqs[-1] == 510 and recorder.written[-1].timestamp == 120_000
    assert down.replay_tail is None


async def test_once_the_beginning_is_gone_a_recorder_starts_at_a_keyframe() -> None:
    clock = Clock()
    source, ups = video_source(clock)
    enc = source.encodings["single"]
    await enc.push(rtp(1, 0, vp8(keyframe=True), marker=1))
    clock.now += START_BUFFER_S + 0.1
    await enc.push(rtp(2, 3000, vp8(keyframe=False), marker=1))
    assert enc.start_buffer is None
    recorder = FakeLeg()
    source.from_start_for("rec")
    await source.subscribe("rec", recorder)
    assert recorder.written == [] and ups["single"].keyframe_requests == [1111]


async def test_sender_reports_carry_the_publishers_clock_in_the_legs_timestamps() -> None:
    clock = Clock()
    source, ups = video_source(clock)
    enc = source.encodings["single"]
    leg = FakeLeg()
    await source.subscribe("sub1", leg, initial_seq=0, initial_ts=1_000)
    await enc.push(rtp(7, 50_000, vp8(keyframe=True), marker=1))
    assert leg.clock_maps == []  # the publisher has not reported yet
    ups["single"].report = (0xE000_0000_8000_0000, 47_000)  # (NTP, RTP) of the publisher
    await enc.push(rtp(8, 53_000, vp8(keyframe=False), marker=1))
    await enc.push(rtp(9, 56_000, vp8(keyframe=False), marker=1))
    # 50_000 became 1_000 on the leg: the publisher's 47_000 is the leg's -2_000 (wrapped)
    assert leg.clock_maps == [(0xE000_0000_8000_0000, (47_000 - 49_000) & 0xFFFFFFFF)]
