"""RTSP camera → first frame decoded at an SFU subscriber, without transcoding.

``python -m bench.rtsp_ingest --json`` starts a streams worker, one media node and an api (real
processes, fresh prefixed topics), GStreamer's RTSP test camera (``tests/rtsp_server.py``), and
then ``--tries`` times: a subscriber joins a fresh room, ``CameraStream.start()`` opens the RTSP
session and publishes the camera into that room, and the subscriber decodes its first frame.
Each try measures ``CameraStream`` created → first frame decoded (RTSP connect, first keyframe,
join, publish, ICE/DTLS, forwarding, the subscriber's keyframe wait and decode); the stream is
stopped before the next try. The baseline, measured in the same run, is the same camera opened
directly with PyAV and decoded in this process (RTSP connect → first decoded frame, no SFU).

The camera sends a keyframe every second, which bounds the first frame from below after the
publish. stdout: one JSON object (``rtsp_to_frame_p50_ms``, ``rtsp_to_frame_p99_ms``, ...).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import sys
import time
from typing import Any

import av

from bench.infra import Servers, run_bench, say
from bench.procs import Child, machine
from client import Room
from client.synthetic import decode_pattern
from edge.rtsp import RTSP_OPTIONS, CameraStream
from tests.harness import Infra, http_ready, media_stack, mint_token
from tests.rtsp_server import RtspCamera


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(p / 100 * (len(ordered) - 1))))
    return round(ordered[index], 1)


def summary(name: str, values: list[float]) -> dict[str, Any]:
    if not values:
        return {f"{name}_p50_ms": None, f"{name}_p99_ms": None}
    return {
        f"{name}_p50_ms": percentile(values, 50),
        f"{name}_p99_ms": percentile(values, 99),
        f"{name}_max_ms": round(max(values), 1),
    }


def direct_first_frame(url: str) -> float:
    """ms from ``av.open`` of the RTSP URL to the first frame decoded in this process."""
    start = time.perf_counter()
    container = av.open(url, options=RTSP_OPTIONS, timeout=(5, 5))
    try:
        for packet in container.demux(container.streams.video[0]):
            for _frame in packet.decode():
                return (time.perf_counter() - start) * 1000
    finally:
        container.close()
    raise RuntimeError("the camera sent no frame")


async def one_try(base: str, camera: RtspCamera, room_id: str, timeout: float) -> tuple[float, float]:
    """(ms to ``start()`` returning, ms to the subscriber's first decoded frame)."""
    ws = base.replace("http", "ws") + "/v1/rtc"
    viewer = await Room.connect(ws, await mint_token(base, "viewer", ["join", "subscribe"], room_id), room_id)
    first = asyncio.get_running_loop().create_future()

    async def on_event(kind: str, payload: Any) -> None:
        if kind == "track":

            async def consume() -> None:
                while not first.done():
                    frame = await payload.track.recv()
                    if decode_pattern(frame)[0] == 1 and not first.done():
                        first.set_result(time.perf_counter())

            asyncio.ensure_future(consume())

    viewer.on(on_event)
    token = await mint_token(base, "edge", ["join", "publish"], room_id)
    stream = CameraStream(camera.url(), base, token, room_id, "cam-1")
    try:
        start = time.perf_counter()
        await stream.start()
        started = time.perf_counter()
        at = await asyncio.wait_for(first, timeout)
        return (started - start) * 1000, (at - start) * 1000
    finally:
        await stream.stop()
        with contextlib.suppress(Exception):
            await viewer.close()


async def measure(args: argparse.Namespace, srv: Servers, run_id: str) -> dict[str, Any]:
    from producers.admin import create_topics

    prefix = f"{run_id}-"
    workdir = srv.run_dir / "work" / run_id
    infra = Infra(srv.kafka, srv.database_url, os.environ.get("MINIO_ENDPOINT", ""), "", "")
    stack = [Child(s.name, s.module, s.env, workdir) for s in media_stack(infra, prefix, workdir)]
    base = f"http://127.0.0.1:{stack[-1].env['ROOMLOG_API_PORT']}"
    camera = RtspCamera(host="127.0.0.1")
    await create_topics(srv.kafka, prefix, quiet=True)
    try:
        for child in stack:
            child.start()
        camera.start()
        await http_ready(f"{base}/healthz", stack[-1], timeout=180)  # type: ignore[arg-type]
        say("baseline: PyAV opens the camera and decodes in this process")
        direct = [direct_first_frame(camera.url()) for _ in range(args.tries)]
        say(f"warm-up, then {args.tries} tries (streams and the node settle on the first)")
        with contextlib.suppress(Exception):
            await one_try(base, camera, f"{run_id}-warmup", 120)
        starts, frames, failures = [], [], 0
        for i in range(args.tries):
            try:
                started, frame = await one_try(base, camera, f"{run_id}-r{i}", args.timeout)
            except (TimeoutError, Exception) as exc:  # noqa: BLE001 - a failed try is counted, not fatal
                failures += 1
                say(f"try {i} failed: {exc!r}")
                continue
            starts.append(started)
            frames.append(frame)
            say(f"try {i}: start() {started:.0f} ms, first frame {frame:.0f} ms")
        return {
            **summary("rtsp_to_frame", frames),
            **summary("start_returned", starts),
            "tries": args.tries,
            "failures": failures,
            "baseline": summary("direct_decode", direct),
            "camera": "GStreamer RTSP server, 320x180 H.264 constrained baseline, 15 fps, keyframe every 1 s",
            "machine": machine(),
        }
    finally:
        camera.stop()
        for child in reversed(stack):
            child.stop()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tries", type=int, default=20)
    parser.add_argument("--timeout", type=float, default=15.0, help="seconds per try")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    return run_bench(lambda srv, run_id: measure(args, srv, run_id), as_json=args.json)


if __name__ == "__main__":
    sys.exit(main())
