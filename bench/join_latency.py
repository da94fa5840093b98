"""Join latency: from a subscriber's ``join`` to its first decoded frame, hop by hop.

``python -m bench.join_latency --json`` starts a streams worker, one media node and an
api (as real processes, on fresh prefixed topics), one low-resolution publisher, then
``--subscribers`` clients that open their sockets and then send ``join`` at the same
instant. Each subscriber is auto-subscribed to the publisher's camera; its latency is
``join`` sent → first frame decoded. stdout is one JSON object, progress goes to stderr.

Every instant is a wall-clock time of this machine (one clock for all processes):
client instants are ``time.time()`` in this process; log instants are Kafka record
timestamps (CreateTime: when the writing service handed the record to its producer,
before the broker acknowledged it); the node's "forwarding" instant is the timestamp
of its log line. The critical path of one join, and the hop each difference measures:

====================  ===============================================================
hop                   from → to
====================  ===============================================================
gateway_join          client sends ``join`` → gateway writes ``JoinRequested``
streams_join          ``JoinRequested`` → streams writes ``AddSubscription``
node_offer            ``AddSubscription`` → node writes ``SubscriberOffered``
streams_offer         ``SubscriberOffered`` → streams writes the ``subscriber-offer``
notify_offer          that ``Notification`` → the client has the offer
client_answer         client has the offer → client sent ``subscriber-answer``
gateway_answer        answer sent → gateway writes ``SubscriberAnswerSubmitted``
streams_answer        → streams writes ``ApplySubscriberAnswer``
node_connect          → the node logs "forwarding" (answer applied, ICE + DTLS done,
                      leg ready)
first_frame_wait      → first frame decoded by the client (keyframe wait after the
                      node's PLI, transit, jitter buffer, VP8 decode)
====================  ===============================================================

A hop's time includes the previous writer's producer linger and broker round trip and
the next reader's fetch. Record timestamps are whole milliseconds (a hop can read -1 ms).
All subscribers live in this one process: ``notify_offer`` and ``client_answer`` include
waits for its event loop, which ``load_generator`` reports (loop thread CPU, loop lag).
``joined`` (the reply to ``join``) is off the critical path and reported apart. The
baseline is the same first-frame latency of a direct aiortc publisher→subscriber pair on
loopback, without roomlog, measured in the same run.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import os
import shutil
import signal
import sys
import time
import uuid
from pathlib import Path
from typing import Any

from aiortc import RTCConfiguration, RTCPeerConnection

from bench.infra import REPO, Servers, raise_interrupt, say, servers
from bench.join_hops import forwarding_instants, log_instants, read_stamped, summary
from bench.join_report import PUBLISHER_CODE, TARGETS, report
from bench.load import percentile
from bench.procs import Child, CpuMeter
from client import LocalTrack, RemoteTrack, Room
from client.synthetic import PatternVideoTrack, decode_pattern
from producers.media import NodeMarkedAlive
from producers.rtc import (
    CreateRoomRequested,
    RoomCreated,
    TrackPublished,
)
from tests.harness import Infra, http_ready, media_stack, mint_token, wait_for

RUN_DIR = REPO / ".run" / "bench-join"


# --- the instrumented client -------------------------------------------------------------


class TimedRoom(Room):
    """The SDK's ``Room`` with wall-clock stamps at each client-side step; after its first
    frame it stops its receiver (packets are dropped before depacketizing and decoding)."""

    def __post_init__(self) -> None:
        super().__post_init__()
        self.stamps: dict[str, float] = {}
        self.join_request_id: str | None = None
        self.first_code: int | None = None
        self.got_frame = asyncio.Event()
        self.on(self._on_event)

    async def open(self) -> None:
        await self._signaling.open()

    async def join(self) -> None:
        self.stamps["join_sent"] = time.time()
        await self._join()

    async def _on_message(self, message: dict[str, Any]) -> None:
        self.stamps.setdefault(f"{message.get('type')}_rx", time.time())
        if message.get("type") == "joined":
            self.join_request_id = message.get("request_id")
        await super()._on_message(message)

    async def _on_subscriber_offer(self, message: dict[str, Any]) -> None:
        await super()._on_subscriber_offer(message)
        self.stamps.setdefault("answer_sent", time.time())

    async def _on_event(self, kind: str, payload: Any) -> None:
        if kind == "track" and isinstance(payload, RemoteTrack) and payload.track.kind == "video":
            asyncio.ensure_future(self._first_frame(payload))

    async def _first_frame(self, remote: RemoteTrack) -> None:
        with contextlib.suppress(Exception):
            frame = await remote.track.recv()
            self.stamps["first_frame"] = time.time()
            self.first_code = decode_pattern(frame)[0]  # type: ignore[arg-type]
            pc = self._subscriber
            for transceiver in pc.getTransceivers() if pc is not None else []:
                if transceiver.receiver.track is remote.track:
                    transceiver.receiver._enabled = False  # noqa: SLF001 - stop decoding: keep the CPU free
        self.got_frame.set()


# --- load generator health ----------------------------------------------------------------


def thread_cpu_seconds(tid: int) -> float:
    raw = Path(f"/proc/self/task/{tid}/stat").read_text()
    fields = raw[raw.rindex(")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def loop_lag(samples: list[float], interval: float = 0.01) -> None:
    """How late this process's event loop wakes up (ms): a busy loop delays every stamp."""
    while True:
        t = time.perf_counter()
        await asyncio.sleep(interval)
        samples.append(1000.0 * (time.perf_counter() - t - interval))


# --- the baseline -------------------------------------------------------------------------


async def direct_pair(args: argparse.Namespace) -> dict[str, float]:
    """A publisher connection straight to a subscriber connection (in-memory signaling,
    loopback media): offer created → first frame decoded."""
    config = RTCConfiguration(iceServers=[])
    pub, sub = RTCPeerConnection(config), RTCPeerConnection(config)
    first: asyncio.Future[float] = asyncio.get_running_loop().create_future()
    stamps: dict[str, float] = {}
    tasks: list[asyncio.Task[None]] = []

    async def consume(track: Any) -> None:
        frame = await track.recv()
        decode_pattern(frame)
        if not first.done():
            first.set_result(time.time())

    def connection_changed() -> None:
        if sub.connectionState == "connected":
            stamps.setdefault("connected", time.time())

    sub.on("track", lambda track: tasks.append(asyncio.ensure_future(consume(track))))
    sub.on("connectionstatechange", connection_changed)
    pub.addTransceiver(PatternVideoTrack(9, args.width, args.height, args.fps), direction="sendonly")
    try:
        t0 = time.time()
        await pub.setLocalDescription(await pub.createOffer())
        await sub.setRemoteDescription(pub.localDescription)
        await sub.setLocalDescription(await sub.createAnswer())
        await pub.setRemoteDescription(sub.localDescription)
        sdp = time.time()
        done = await asyncio.wait_for(first, args.timeout)
        return {
            "first_frame": 1000 * (done - t0),
            "sdp": 1000 * (sdp - t0),
            "connected": 1000 * (stamps.get("connected", done) - t0),
        }
    finally:
        for task in tasks:
            task.cancel()
        await pub.close()
        await sub.close()


async def baseline(args: argparse.Namespace) -> dict[str, Any]:
    runs = [await direct_pair(args) for _ in range(args.baseline_runs)]
    out = {
        f"{k}_{p}": v
        for k in ("first_frame", "sdp", "connected")
        for p, v in summary([r[k] for r in runs]).items()
        if p in ("p50_ms", "p99_ms", "max_ms")
    }
    return {**out, "runs": len(runs)}


# --- the run ------------------------------------------------------------------------------


class Run:
    def __init__(self, args: argparse.Namespace, srv: Servers, run_id: str) -> None:
        self.args, self.srv, self.run_id = args, srv, run_id
        self.prefix, self.room_id = f"{run_id}-", f"{run_id}-room"
        self.workdir = srv.run_dir / "work" / run_id
        infra = Infra(srv.kafka, srv.database_url, os.environ.get("MINIO_ENDPOINT", ""), "", "")
        self.stack = [
            Child(s.name if s.module != "media_node" else "media_node", s.module, s.env, self.workdir)
            for s in media_stack(infra, self.prefix, self.workdir)
        ]
        self.base = f"http://127.0.0.1:{self.stack[-1].env['ROOMLOG_API_PORT']}"
        self.rooms: list[TimedRoom] = []

    async def start(self) -> None:
        from producers.admin import create_topics
        from producers.kafka import EventProducer

        await create_topics(self.srv.kafka, self.prefix, quiet=True)
        for child in self.stack:
            child.start()
        say(f"started {', '.join(c.name for c in self.stack)} (logs in {self.workdir})")
        async with EventProducer(self.srv.kafka, client_id=f"{self.run_id}-probe") as producer:
            probe = CreateRoomRequested.new(room_id=f"{self.run_id}-probe")
            await producer.send(self.prefix + "rtc.intents", probe)
            await self.wait_event(
                "rtc.facts",
                lambda e: isinstance(e, RoomCreated) and e.causation_id == probe.event_id,
                "streams worker ready",
            )
        node_id = self.stack[1].env["ROOMLOG_NODE_NODE_ID"]
        await self.wait_event(
            "node.facts", lambda e: isinstance(e, NodeMarkedAlive) and e.node_id == node_id, "media node alive"
        )
        await http_ready(f"{self.base}/healthz", self.stack[-1])  # type: ignore[arg-type]

    async def wait_event(self, logical: str, match: Any, what: str, timeout: float = 120.0) -> None:
        async def seen() -> bool:
            for child in self.stack:
                if not child.alive():
                    raise RuntimeError(f"{child.name} exited:\n{child.tail()}")
            return any(match(e) for _, e in await read_stamped(self.srv.kafka, self.prefix + logical))

        await wait_for(seen, timeout, what, interval=0.3)

    async def client(self, identity: str, grants: list[str]) -> TimedRoom:
        token = await mint_token(self.base, identity, grants, self.room_id)
        room = TimedRoom(url=self.base.replace("http", "ws") + "/v1/rtc", token=token, room=self.room_id, name=identity)
        self.rooms.append(room)
        await room.open()
        return room

    async def publisher(self) -> None:
        room = await self.client("publisher", ["join", "publish"])
        await room.join()
        track = PatternVideoTrack(PUBLISHER_CODE, self.args.width, self.args.height, self.args.fps)
        await room.publish([LocalTrack(track, "cam-1", "camera")])
        await self.wait_event(
            "rtc.facts",
            lambda e: isinstance(e, TrackPublished) and e.room_id == self.room_id,
            "the publisher's track on the node",
            timeout=30,
        )

    async def warmup(self) -> None:
        for i in range(self.args.warmup):
            room = await self.client(f"warmup{i}", ["join", "subscribe"])
            await room.join()
            await asyncio.wait_for(room.got_frame.wait(), self.args.timeout)

    async def measure(self) -> tuple[list[TimedRoom], dict[str, Any]]:
        subs = [await self.client(f"sub{i}", ["join", "subscribe"]) for i in range(self.args.subscribers)]
        lags: list[float] = []
        lag_task = asyncio.create_task(loop_lag(lags))
        await asyncio.sleep(0.5)  # let the sockets settle
        meter = CpuMeter(
            {
                "streams": self.stack[0].pid,
                "media_node": self.stack[1].pid,
                "api": self.stack[2].pid,
                "bench": os.getpid(),
            }
        )
        cpu0, t0 = thread_cpu_seconds(os.getpid()), time.perf_counter()
        meter.start()
        lags.clear()  # loop lag of the measured window only
        say(f"{len(subs)} subscribers send join")
        joins = await asyncio.gather(*(r.join() for r in subs), return_exceptions=True)
        failed = [j for j in joins if isinstance(j, BaseException)]
        pending = [asyncio.ensure_future(r.got_frame.wait()) for r in subs]
        _, late = await asyncio.wait(pending, timeout=self.args.timeout)
        for task in late:
            task.cancel()
        cpu = meter.stop()
        loop_cpu = 100.0 * (thread_cpu_seconds(os.getpid()) - cpu0) / (time.perf_counter() - t0)
        lag_task.cancel()
        lags.sort()
        gen: dict[str, Any] = {
            "loop_thread_cpu_pct": round(loop_cpu, 1),
            "process_cpu_pct": cpu.pop("bench_cpu_pct"),
            "loop_lag_p50_ms": round(percentile(lags, 50), 1),
            "loop_lag_p99_ms": round(percentile(lags, 99), 1),
            "loop_lag_max_ms": round(lags[-1], 1) if lags else None,
            "join_errors": [str(e) for e in failed],
        }
        gen["saturated"] = loop_cpu >= 90.0
        gen["loop_stalled"] = (gen["loop_lag_max_ms"] or 0.0) >= 50.0
        # CpuMeter's `other` counts a process born during the window with its whole life; the
        # machine total minus everything named is the steadier figure for interference
        named = sum(v for k, v in cpu.items() if k != "other_cpu_pct" and k != "machine_cpu_pct")
        unnamed = cpu.get("machine_cpu_pct", 0.0) * (os.cpu_count() or 1) - named - gen["process_cpu_pct"]
        cpu["unnamed_cpu_pct"] = round(max(unnamed, 0.0), 1)
        cpu["noisy_neighbours"] = unnamed >= 25.0
        return subs, {"load_generator": gen, "cpu": cpu}

    async def cleanup(self, keep: bool) -> None:
        import sqlalchemy as sa
        from aiokafka.admin import AIOKafkaAdminClient

        from db.engine import make_engine

        for room in self.rooms:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(room.close(), 5)
        for child in self.stack:
            await asyncio.to_thread(child.stop)
        admin = AIOKafkaAdminClient(bootstrap_servers=self.srv.kafka, client_id=f"{self.run_id}-admin")
        await admin.start()
        try:
            mine = [t for t in await admin.list_topics() if t.startswith(self.prefix)]
            if mine:
                await admin.delete_topics(mine)
        finally:
            await admin.close()
        engine = make_engine(self.srv.database_url)
        try:
            async with engine.begin() as conn:
                await conn.execute(sa.text("delete from rooms where room_id like :p"), {"p": f"{self.prefix}%"})
        finally:
            await engine.dispose()
        if keep:
            say(f"children's logs kept in {self.workdir}")
        else:
            shutil.rmtree(self.workdir, ignore_errors=True)


async def measure(args: argparse.Namespace, srv: Servers, run_id: str) -> dict[str, Any]:
    run = Run(args, srv, run_id)
    failed = True
    try:
        await run.start()
        say(f"baseline: {args.baseline_runs} direct aiortc pairs")
        base = await baseline(args)
        say(f"publisher {args.width}x{args.height}@{args.fps}; {args.warmup} warm-up subscriber(s)")
        await run.publisher()
        await run.warmup()
        subs, health = await run.measure()
        for room in run.rooms:  # close before reading the log; the log keeps every instant
            with contextlib.suppress(Exception):
                await asyncio.wait_for(room.close(), 5)
        log = await log_instants(srv.kafka, run.prefix, run.room_id)
        forwarding = forwarding_instants(run.stack[1].log_path)
        result = report(args, subs, log, forwarding, base, health, srv, run_id)
        failed = False
        return result
    finally:
        await run.cleanup(keep=failed or args.keep_logs)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench.join_latency",
        description="Subscribers join a room with one publisher at the same instant; prints join -> "
        "first decoded frame (p50/p99), the per-hop breakdown through the log and a direct "
        "aiortc pair baseline. Uses KAFKA_BOOTSTRAP/DATABASE_URL if set, else starts (and "
        "stops) its own servers with scripts/infra.sh in .run/bench-join. Run it in a "
        "loopback-only namespace: scripts/netns.sh bash -c '.venv/bin/python -m bench.join_latency'.",
    )
    parser.add_argument("--json", action="store_true", help="one JSON object on stdout (default: indented)")
    parser.add_argument("--subscribers", type=int, default=20, help="subscribers joining at once (default 20)")
    parser.add_argument("--width", type=int, default=160, help="publisher width (default 160)")
    parser.add_argument("--height", type=int, default=90, help="publisher height (default 90)")
    parser.add_argument("--fps", type=int, default=15, help="publisher frame rate (default 15)")
    parser.add_argument("--warmup", type=int, default=1, help="subscribers joined one by one before, not counted")
    parser.add_argument("--baseline-runs", type=int, default=5, help="direct aiortc pairs, one after another")
    parser.add_argument("--timeout", type=float, default=30.0, help="seconds a subscriber may wait for a frame")
    parser.add_argument("--per-subscriber", action="store_true", help="add every subscriber's hops to the JSON")
    parser.add_argument("--keep-logs", action="store_true", help="keep the children's logs")
    args = parser.parse_args(argv)
    if args.width // 10 * 3 < 32:
        parser.error("--width must be at least 110 (the frame pattern needs the room)")
    args.loadavg = " ".join(Path("/proc/loadavg").read_text().split(" ")[:3])
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.getLogger("aiokafka").setLevel(logging.ERROR)  # a retry while fresh topics elect leaders is no news
    signal.signal(signal.SIGTERM, raise_interrupt)  # unwind: children, topics and servers are cleaned up
    run_id = f"bjoin-{uuid.uuid4().hex[:8]}"
    say(f"run {run_id}")
    with servers(RUN_DIR) as srv:
        result = asyncio.run(measure(args, srv, run_id))
    say(
        f"join -> first frame p50 {result['p50_ms']} ms, p99 {result['p99_ms']} ms (target p99 < "
        f"{TARGETS['first_frame_p99_ms']}); direct pair p50 {result['baseline'].get('first_frame_p50_ms')} ms; "
        f"largest hop {result['dominant_hop']}; unnamed processes {result['cpu'].get('unnamed_cpu_pct')} % of a core"
    )
    print(json.dumps(result) if args.json else json.dumps(result, indent=2), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
