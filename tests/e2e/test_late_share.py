"""A source whose first packet comes long after the publish was negotiated (a screen shared
20 s after joining: the browser negotiates the screen slot at join and fills it later) must
reach the other peers. The node's TrackStarted used to carry the negotiation time, streams
set the subscription's deadline from it, and the node dropped the command as expired."""

from __future__ import annotations

import asyncio
import contextlib
import time
from pathlib import Path

import av

from client import LocalTrack, Room
from client.synthetic import PatternVideoTrack
from producers.kafka import EventProducer
from producers.topics import Topics
from tests.e2e.media import Watcher, advancing
from tests.harness import Infra, Service, mint_token, start_media_stack, unique, wait_for

LATE_S = 20.0


class LateTrack(PatternVideoTrack):
    """A pattern whose first frame comes ``LATE_S`` after the connection asks for one."""

    def __init__(self, code: int) -> None:
        super().__init__(code, 320, 180)
        self.started_at: float | None = None

    async def recv(self) -> av.VideoFrame:
        if self.started_at is None:
            await asyncio.sleep(LATE_S)
            self.started_at = time.monotonic()
        return await super().recv()


async def test_a_screen_shared_20_s_after_joining_reaches_the_viewer(
    infra: Infra, topics: Topics, prefix: str, producer: EventProducer, services: list[Service], tmp_path: Path
) -> None:
    _, base = await start_media_stack(infra, topics, prefix, producer, services, tmp_path)
    room_id = unique("late-")
    ws_url = base.replace("http", "ws") + "/v1/rtc"
    viewer = await Room.connect(ws_url, await mint_token(base, "viewer", ["join", "subscribe"], room_id), room_id)
    publisher = await Room.connect(ws_url, await mint_token(base, "pub", ["join", "publish"], room_id), room_id)
    watcher = Watcher()
    watcher.attach(viewer)
    screen = LateTrack(42)
    try:
        await publisher.publish(
            [LocalTrack(PatternVideoTrack(41, 320, 180), "cam", "camera"), LocalTrack(screen, "screen", "screen")]
        )
        await wait_for(lambda: len(watcher.video[41]) > 10, 20, "the camera at the viewer")
        await wait_for(lambda: screen.started_at is not None, LATE_S + 10, "the screen starting")
        await wait_for(lambda: len(watcher.video[42]) > 10, 15, "the late screen at the viewer")
        screen_frames = list(watcher.video[42])
    finally:
        watcher.stop()
        for room in (viewer, publisher):
            with contextlib.suppress(Exception):
                await room.close()
    assert screen.started_at is not None
    assert advancing(screen_frames, 10), f"the screen's frames at the viewer: {screen_frames[:20]}"
