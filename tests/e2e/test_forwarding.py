"""What the media node forwards is what the publisher sent: encoded frames hash equal
end to end (the node's codec factories raise), and a late joiner gets a picture within
a second because the node relays its keyframe request to the publisher."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import time
from pathlib import Path
from typing import Any

from aiortc import RTCPeerConnection
from aiortc.codecs.vpx import vp8_depayload

from client import LocalTrack, RemoteTrack, Room
from client.synthetic import PatternVideoTrack
from producers.kafka import EventProducer
from producers.topics import Topics
from tests.e2e.media import Watcher
from tests.harness import Infra, Service, http_ready, media_stack, mint_token, streams_ready, unique, wait_for


def capture_sent_frames(pc: RTCPeerConnection, hashes: list[str]) -> None:
    """Record the hash of every encoded video frame the publisher's sender produces."""
    sender = next(s for s in pc.getSenders() if s.track is not None and s.track.kind == "video")
    original = sender._next_encoded_frame  # test instrumentation of aiortc internals

    async def recorded(codec: Any) -> Any:
        frame = await original(codec)
        if frame is not None:
            data = b"".join(vp8_depayload(p) for p in frame.payloads)
            hashes.append(hashlib.sha256(data).hexdigest())
        return frame

    sender._next_encoded_frame = recorded  # type: ignore[method-assign]


def capture_received_frames(room: Room, hashes: list[str]) -> None:
    """Record the hash of every encoded frame handed to the subscriber's decoder."""

    def on_event(kind: str, payload: object) -> None:
        if kind != "track" or not isinstance(payload, RemoteTrack) or payload.track.kind != "video":
            return
        pc = room._subscriber
        assert pc is not None
        receiver = next(t.receiver for t in pc.getTransceivers() if t.receiver.track is payload.track)
        queue = receiver._RTCRtpReceiver__decoder_queue  # type: ignore[attr-defined]
        put = queue.put

        def recorded(item: Any, *args: Any, **kwargs: Any) -> None:
            if item is not None:
                hashes.append(hashlib.sha256(item[1].data).hexdigest())
            put(item, *args, **kwargs)

        queue.put = recorded

    room.on(on_event)


def count_keyframe_requests(pc: RTCPeerConnection, counter: list[float]) -> None:
    sender = next(s for s in pc.getSenders() if s.track is not None and s.track.kind == "video")
    original = sender._send_keyframe

    def recorded() -> None:
        counter.append(time.monotonic())
        original()

    sender._send_keyframe = recorded  # type: ignore[method-assign]


async def start(
    infra: Infra, topics: Topics, prefix: str, producer: EventProducer, services: list[Service], tmp_path: Path
) -> str:
    stack = media_stack(infra, prefix, tmp_path, forbid_codecs="true")
    for service in stack:
        services.append(service.start())
    base = f"http://127.0.0.1:{stack[-1].env['ROOMLOG_API_PORT']}"
    await streams_ready(producer, infra, topics, stack[0])
    await http_ready(f"{base}/healthz", stack[-1])
    return base


async def test_encoded_frames_arrive_byte_identical(
    infra: Infra, topics: Topics, prefix: str, producer: EventProducer, services: list[Service], tmp_path: Path
) -> None:
    base = await start(infra, topics, prefix, producer, services, tmp_path)
    room_id = unique("hash-")
    ws_url = base.replace("http", "ws") + "/v1/rtc"
    sent: list[str] = []
    received: list[str] = []
    publisher = await Room.connect(ws_url, await mint_token(base, "pub", ["join", "publish"], room_id), room_id)
    viewer = Room(url=ws_url, token=await mint_token(base, "viewer", ["join", "subscribe"], room_id), room=room_id)
    try:
        await publisher.publish([LocalTrack(PatternVideoTrack(5), "cam", "camera")])
        assert publisher._publisher is not None
        capture_sent_frames(publisher._publisher, sent)
        capture_received_frames(viewer, received)
        watcher = Watcher()
        watcher.attach(viewer)
        await viewer._signaling.open()
        await viewer._join()
        await wait_for(lambda: len(received) >= 60, 30, "60 frames at the subscriber")
        watcher.stop()
    finally:
        for room in (viewer, publisher):
            with contextlib.suppress(Exception):
                await room.close()
    positions = [sent.index(h) if h in sent else -1 for h in received]
    assert -1 not in positions, f"{positions.count(-1)} of {len(received)} received frames were never sent"
    assert positions == sorted(positions) and len(set(positions)) == len(positions)
    assert watcher.video.get(5), "the frames also decoded to the publisher's pattern"


async def test_late_joiner_gets_a_picture_within_a_second(
    infra: Infra, topics: Topics, prefix: str, producer: EventProducer, services: list[Service], tmp_path: Path
) -> None:
    base = await start(infra, topics, prefix, producer, services, tmp_path)
    room_id = unique("kf-")
    ws_url = base.replace("http", "ws") + "/v1/rtc"
    keyframe_requests: list[float] = []
    publisher = await Room.connect(ws_url, await mint_token(base, "pub", ["join", "publish"], room_id), room_id)
    viewer = Room(url=ws_url, token=await mint_token(base, "late", ["join", "subscribe"], room_id), room=room_id)
    try:
        await publisher.publish([LocalTrack(PatternVideoTrack(6), "cam", "camera")])
        assert publisher._publisher is not None
        count_keyframe_requests(publisher._publisher, keyframe_requests)
        # the publisher's keyframe interval is 3000 frames (aiortc's VP8 gop): after its first
        # keyframe, only a relayed request makes another one
        await asyncio.sleep(4)
        assert keyframe_requests == []
        offered_at: list[float] = []
        first_frame: list[float] = []

        def on_event(kind: str, payload: object) -> None:
            if kind == "subscriber-offer" and not offered_at:
                offered_at.append(time.monotonic())

        viewer.on(on_event)
        watcher = Watcher()
        watcher.attach(viewer)
        await viewer._signaling.open()
        await viewer._join()
        await wait_for(lambda: watcher.video_at.get(6), 10, "the first decoded frame")
        first_frame.append(watcher.video_at[6][0])
        watcher.stop()
    finally:
        for room in (viewer, publisher):
            with contextlib.suppress(Exception):
                await room.close()
    waited = first_frame[0] - offered_at[0]
    print(f"late joiner: first picture {waited * 1000:.0f} ms after the subscriber offer")
    assert waited < 1.0
    assert keyframe_requests, "the publisher received the relayed keyframe request (PLI)"
    assert keyframe_requests[0] <= first_frame[0]
