"""Helpers for tests that carry media: consume a client's remote tracks."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import defaultdict

from aiortc.mediastreams import MediaStreamError

from client import RemoteTrack, Room
from client.synthetic import decode_pattern


class Watcher:
    """Consumes a client's remote tracks: decoded (code, counter) per video, frames per audio."""

    def __init__(self) -> None:
        self.video: dict[int, list[int]] = defaultdict(list)
        self.video_at: dict[int, list[float]] = defaultdict(list)
        self.sizes: dict[int, tuple[int, int]] = {}
        self.audio: dict[str, int] = defaultdict(int)
        self.tasks: list[asyncio.Task[None]] = []

    def attach(self, room: Room) -> None:
        async def on_event(kind: str, payload: object) -> None:
            if kind == "track" and isinstance(payload, RemoteTrack):
                self.tasks.append(asyncio.create_task(self._consume(payload)))

        room.on(on_event)

    async def _consume(self, remote: RemoteTrack) -> None:
        with contextlib.suppress(MediaStreamError, asyncio.CancelledError):
            while True:
                frame = await remote.track.recv()
                if remote.track.kind == "video":
                    code, counter = decode_pattern(frame)  # type: ignore[arg-type]
                    self.video[code].append(counter)
                    self.video_at[code].append(time.monotonic())
                    self.sizes[code] = (frame.width, frame.height)  # type: ignore[attr-defined]
                else:
                    self.audio[remote.peer_id] += 1

    def stop(self) -> None:
        for task in self.tasks:
            task.cancel()


def advancing(counters: list[int], at_least: int = 15) -> bool:
    return len(counters) >= at_least and counters[-1] > counters[0] and counters == sorted(counters)
