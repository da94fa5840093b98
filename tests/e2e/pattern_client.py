"""A Python participant in its own process (as a real client would be): joins with
``client.Room``, publishes a pattern camera (and a tone), and reports on stdout, one JSON
object per line, what it decodes: ``joined``, ``peer-updated``, ``frame`` {code, counter}
(frames are scaled to the pattern's reference size first) and ``audio`` counts.

    python -m tests.e2e.pattern_client WS_URL TOKEN ROOM --name Carol --code 13
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import signal
import sys
import time
from collections import Counter
from typing import Any

from aiortc.mediastreams import MediaStreamError

from client import LocalTrack, RemoteTrack, Room
from client.synthetic import PatternVideoTrack, ToneAudioTrack, decode_pattern
from tests.e2e.y4m import HEIGHT, WIDTH


def emit(event: str, **fields: Any) -> None:
    sys.stdout.write(json.dumps({"event": event, **fields}) + "\n")
    sys.stdout.flush()


log = logging.getLogger("tests.e2e.pattern_client")


async def consume(remote: RemoteTrack, audio: Counter[str]) -> None:
    started = time.monotonic()
    first = True
    with contextlib.suppress(MediaStreamError, asyncio.CancelledError):
        while True:
            frame = await remote.track.recv()
            if first:
                first = False
                log.info(
                    "first %s frame from %s/%s %.2f s after its track",
                    remote.track.kind,
                    remote.peer_id,
                    remote.source_id,
                    time.monotonic() - started,
                )
            if remote.track.kind != "video":
                audio[remote.peer_id] += 1
                continue
            if (frame.width, frame.height) != (WIDTH, HEIGHT):  # type: ignore[attr-defined]
                frame = frame.reformat(width=WIDTH, height=HEIGHT)  # type: ignore[attr-defined]
            code, counter = decode_pattern(frame)  # type: ignore[arg-type]
            emit("frame", code=code, counter=counter, peer_id=remote.peer_id)


async def run(args: argparse.Namespace) -> None:
    room = await Room.connect(args.ws_url, args.token, args.room, name=args.name)
    audio: Counter[str] = Counter()
    tasks: list[asyncio.Task[None]] = []

    async def on_event(kind: str, payload: Any) -> None:
        if kind == "track" and isinstance(payload, RemoteTrack):
            tasks.append(asyncio.create_task(consume(payload, audio)))
        elif kind in ("peer-updated", "peer-joined"):
            emit(kind, peer=payload["peer"])

    room.on(on_event)
    await room.publish(
        [
            LocalTrack(PatternVideoTrack(args.code, WIDTH, HEIGHT), f"{args.name}-cam", "camera"),
            LocalTrack(ToneAudioTrack(), f"{args.name}-mic", "microphone"),
        ]
    )
    emit("joined", peer_id=room.peer_id)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    loop.add_reader(sys.stdin.fileno(), lambda: stop.set() if not sys.stdin.readline() else None)
    ticks = 0
    while not stop.is_set():
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), 1)
        emit("audio", counts=dict(audio))
        ticks += 1
        if ticks % 5 == 0:
            log.info("audio frames so far: %s; received %s", dict(audio), await room.receive_stats())
    for task in tasks:
        task.cancel()
    await room.leave()


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.e2e.pattern_client", description=__doc__.split("\n\n")[0])
    parser.add_argument("ws_url")
    parser.add_argument("token")
    parser.add_argument("room")
    parser.add_argument("--name", default="python")
    parser.add_argument("--code", type=int, required=True)
    logging.basicConfig(
        level=logging.WARNING, stream=sys.stderr, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    for name in ("client", "tests.e2e.pattern_client", "aioice"):  # tracks, states, recovery: the test's log
        logging.getLogger(name).setLevel(logging.INFO)
    asyncio.run(run(parser.parse_args()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
