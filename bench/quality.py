"""How many samples one quality agent handles, and how fast its decisions reach the node.

``python -m bench.quality --json`` prints one JSON object on stdout (progress on stderr).
Phases, each on fresh prefixed topics, against one ``python -m streams`` worker (projection
off, so the figure is the agent's own):

1. ``baseline``: the echo baseline of ``bench.log_throughput`` (a process copying
   ``rtc.intents`` to ``rtc.facts``), draining a backlog → ``baseline_events_per_s``.
2. ``max``: rooms are laid down as facts (a publisher with three camera layers and
   subscribers, placed on a node), then a backlog of node samples; each subscriber's loss
   goes 30 % (pause), then 0 % for a minute of sample time (resumed after 10 s), and again. The
   decisions (two per subscriber-minute) are known in advance (``streams.quality_agent.replay``
   of the same samples); the phase ends when the last of them is on ``quality.facts``
   → ``samples_per_s`` (samples / seconds from the first decision to the last).
3. ``latency``: samples offered at ``--rate``/s (default 2,000) with loss steps; for every
   sample that causes a decision, the time from just before its ``send`` to the
   ``SetLayer``/``SetPaused`` it causes arriving on ``media.commands``, read as a node
   reads it → ``p50_ms``, ``p99_ms``.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import os
import shutil
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from bench import phases
from bench.infra import Servers, run_bench, say
from bench.load import Watch, latency_summary
from bench.procs import CpuMeter, machine
from producers.envelope import Event
from producers.fields import Layer, SourceKind, TrackInfo
from producers.media import QualitySample
from producers.rtc import PeerJoined, RoomCreated, RoomPlaced, SubscriptionAdded, TrackPublished
from producers.topics import Topics
from streams.quality_agent import replay

TARGETS = {"samples_per_s": 20_000, "p99_ms": 500}
LAYERS: list[Layer] = ["high", "low", "mid"]
#: one minute of a subscriber's loss (samples 2 s apart): a bad spell that pauses its video,
#: resumed 10 s later, then clean: two decisions a minute, a busy network for a quality loop
CYCLE = [30.0] + [0.0] * 29


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench.quality",
        description="Samples per second one streams quality agent handles, and sample → node command "
        "latency at a fixed rate, next to the echo baseline of bench.log_throughput measured "
        "in the same run. Uses KAFKA_BOOTSTRAP/DATABASE_URL if set, else starts its own servers.",
    )
    parser.add_argument("--json", action="store_true", help="one JSON object on stdout (default: indented)")
    parser.add_argument("--rooms", type=int, default=200, help="rooms (default 200)")
    parser.add_argument("--subscribers", type=int, default=9, help="subscribers per room (default 9)")
    parser.add_argument(
        "--cycles",
        type=int,
        default=4,
        help="minutes of samples per subscriber in the max "
        "phase (default 4: 200 rooms x 9 subscribers x 30 x 4 = 216,000 samples)",
    )
    parser.add_argument("--rate", type=float, default=2000.0, help="offered samples/s in the latency phase")
    parser.add_argument("--duration", type=float, default=20.0, help="seconds of the latency phase")
    parser.add_argument("--baseline-events", type=int, default=30000, help="backlog of the echo baseline")
    parser.add_argument("--skip", action="append", default=[], choices=["baseline", "max", "latency"])
    return parser.parse_args(argv)


def room_facts(prefix: str, rooms: int, subscribers: int) -> list[Event]:
    """The facts the room agent would have written: rooms placed, peers in, camera published."""
    out: list[Event] = []
    for r in range(rooms):
        room_id = f"{prefix}r{r}"
        out += [
            RoomCreated.new(room_id=room_id, room_type="sfu", max_participants=50, empty_timeout_s=300),
            RoomPlaced.new(room_id=room_id, node_id=f"{prefix}node"),
        ]
        for p in ["pub"] + [f"s{i}" for i in range(subscribers)]:
            out.append(
                PeerJoined.new(room_id=room_id, peer_id=p, identity=p, session_id=f"{p}-{r}", gateway_id=f"{prefix}gw")
            )
        out += [
            TrackPublished.new(
                room_id=room_id,
                peer_id="pub",
                track=TrackInfo(source_id=f"cam{r}", kind=SourceKind.CAMERA, layer=layer),
            )
            for layer in LAYERS
        ]
        out += [
            SubscriptionAdded.new(room_id=room_id, peer_id=f"s{i}", source_id=f"cam{r}") for i in range(subscribers)
        ]
    return out


def sample(room_id: str, source_id: str, peer: str, loss: float, at: datetime) -> QualitySample:
    return QualitySample.new(
        room_id=room_id,
        peer_id=peer,
        leg=f"sub/{source_id}",
        source="node",
        loss_pct=loss,
        rtt_ms=20.0,
        jitter_ms=3.0,
        bitrate_kbps=480.0,
        source_id=source_id,
        publisher_peer_id="pub",
        kind="video",
        layer="high",
        layers=LAYERS,
        packets=100,
        occurred_at=at,
    )


def samples(prefix: str, rooms: int, subscribers: int, losses: list[float], start: datetime) -> Iterator[QualitySample]:
    """Every subscriber's ``losses``, one round of all subscribers every 2 s of sample time."""
    for i, loss in enumerate(losses):
        at = start + timedelta(seconds=2 * i)
        for r in range(rooms):
            for s in range(subscribers):
                yield sample(f"{prefix}r{r}", f"cam{r}", f"s{s}", loss, at)


async def lay_rooms(bench: phases.Bench, topics: Topics, args: argparse.Namespace) -> None:
    assert bench.bulk is not None
    for fact in room_facts(topics.prefix, args.rooms, args.subscribers):
        await bench.bulk.send_soon(topics.name("rtc.facts"), fact)
    await bench.bulk.flush()


async def max_phase(bench: phases.Bench, args: argparse.Namespace) -> dict[str, Any]:
    assert bench.bulk is not None
    topics = await bench.topics("qmax")
    await lay_rooms(bench, topics, args)
    backlog = list(samples(topics.prefix, args.rooms, args.subscribers, CYCLE * args.cycles, datetime.now(UTC)))
    expected = [str(f.event_id) for f in replay(backlog)]
    t0 = time.perf_counter()
    for s in backlog:
        await bench.bulk.send_soon(topics.name("quality.samples"), s)
    await bench.bulk.flush()
    say(
        f"qmax: {len(backlog)} samples written ({len(backlog) / (time.perf_counter() - t0):.0f}/s); "
        f"{len(expected)} decisions expected"
    )
    watch = await Watch(bench.servers.kafka, topics.name("quality.facts"), "event_id").start()
    child = bench.worker("qmax", topics, projection=False)
    try:
        check = phases.alive_check(child)
        while watch.first_at is None:
            check()
            await asyncio.sleep(0.01)
        meter = CpuMeter({"worker": child.pid, "bench": os.getpid()})
        meter.start()
        complete = await watch.wait_all(expected, 600.0, check, idle=30.0)
        cpu = meter.stop()
        seen = [watch.seen[i] for i in expected if i in watch.seen]
        elapsed = max(max(seen) - watch.first_at, 1e-9) if seen else None
        rate = round(len(backlog) / elapsed, 1) if elapsed and complete else None
        say(f"qmax: {len(seen)}/{len(expected)} decisions; {rate} samples/s (worker cpu {cpu.get('worker_cpu_pct')}%)")
        return {
            "samples": len(backlog),
            "decisions_expected": len(expected),
            "decisions_seen": len(seen),
            "complete": complete,
            "seconds": round(elapsed, 3) if elapsed else None,
            "samples_per_s": rate,
            **cpu,
        }
    finally:
        await watch.stop()
        await bench.stop_child(child)


async def latency_phase(bench: phases.Bench, args: argparse.Namespace) -> dict[str, Any]:
    assert bench.producer is not None
    topics = await bench.topics("qlat")
    await lay_rooms(bench, topics, args)
    commands = await Watch(bench.servers.kafka, topics.name("media.commands"), "causation_id").start()
    child = bench.worker("qlat", topics, projection=False)
    try:
        await asyncio.sleep(8)  # the worker joins its groups and restores (empty) tables
        windows = [
            (f"{topics.prefix}r{r}", f"cam{r}", f"s{s}") for r in range(args.rooms) for s in range(args.subscribers)
        ]
        # each window's loss runs through CYCLE from its own offset, so decisions are spread out
        losses = {w: itertools.cycle(CYCLE[i % len(CYCLE) :] + CYCLE[: i % len(CYCLE)]) for i, w in enumerate(windows)}
        order = itertools.cycle(windows)
        sent: dict[str, float] = {}
        offered: list[QualitySample] = []
        total = int(args.rate * args.duration)
        start = time.perf_counter()
        for i in range(total):
            await asyncio.sleep(max(0.0, start + i / args.rate - time.perf_counter()))
            window = next(order)
            s = sample(*window, next(losses[window]), datetime.now(UTC))
            sent[str(s.event_id)] = time.perf_counter()
            offered.append(s)
            await bench.producer.send_soon(topics.name("quality.samples"), s)
        achieved = total / (time.perf_counter() - start)
        causes = {str(f.causation_id) for f in replay(offered)}
        measured = {k: v for k, v in sent.items() if k in causes}
        await commands.wait_all(measured, 60.0, phases.alive_check(child))
        result = {
            **latency_summary(measured, commands.seen),
            "offered_rate_per_s": round(achieved, 1),
            "decisions": len(measured),
        }
        say(
            f"qlat: {len(measured)} decisions at {achieved:.0f} samples/s: p50 {result['p50_ms']} ms, "
            f"p99 {result['p99_ms']} ms"
        )
        return result
    finally:
        await commands.stop()
        await bench.stop_child(child)


async def measure(args: argparse.Namespace, srv: Servers, run_id: str) -> dict[str, Any]:
    bench = phases.Bench(
        servers=srv,
        run_id=run_id,
        workdir=srv.run_dir / "work" / run_id,
        rate=1000.0,
        duration=1.0,
        warmup=0.0,
        rooms=200,
        max_peers=10,
        max_events=args.baseline_events,
        media_nodes=0,
    )
    d: dict[str, Any] = {}
    await bench.start()
    try:
        if "baseline" not in args.skip:
            d["baseline"] = await phases.max_rate(bench, "qbase", baseline=True)
        if "max" not in args.skip:
            d["max"] = await max_phase(bench, args)
        if "latency" not in args.skip:
            d["latency"] = await latency_phase(bench, args)
    finally:
        await bench.cleanup()
        shutil.rmtree(bench.workdir, ignore_errors=True)
    top, lat = d.get("max", {}), d.get("latency", {})
    loadavg = " ".join(Path("/proc/loadavg").read_text().split()[:3])  # noqa: ASYNC240 - procfs
    return {
        "samples_per_s": top.get("samples_per_s"),
        "p50_ms": lat.get("p50_ms"),
        "p99_ms": lat.get("p99_ms"),
        "baseline_events_per_s": d.get("baseline", {}).get("events_per_s"),
        "offered_rate_per_s": lat.get("offered_rate_per_s"),
        "worker_cpu_pct": top.get("worker_cpu_pct"),
        "targets": TARGETS,
        "meets_targets": {
            "samples_per_s": None
            if top.get("samples_per_s") is None
            else top["samples_per_s"] >= TARGETS["samples_per_s"],
            "p99_ms": None if lat.get("p99_ms") is None else lat["p99_ms"] < TARGETS["p99_ms"],
        },
        "machine": {**machine(), "loadavg_at_end": loadavg},
        "config": {k: v for k, v in vars(args).items() if k != "json"},
        "run_id": run_id,
        "phases": d,
    }


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    return run_bench(lambda srv, run_id: measure(args, srv, run_id), as_json=args.json)


if __name__ == "__main__":
    sys.exit(main())
