"""``python -m bench.quality_cpu``: the quality agent's CPU ceiling without Kafka.

Runs the quality agent's batch handler (parse, decide, outputs handed to a producer stub,
state staged and serialized to its changelog) over ``bench.quality``'s rooms and samples,
in this process. No broker: the figure is what one core can handle per second, the upper
bound of one agent. ``--profile`` prints the top functions by own time (cProfile).
Prints one JSON object.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import io
import json
import pstats
import sys
import time
from datetime import UTC, datetime
from typing import Any

from aiokafka.structs import ConsumerRecord

from bench.decide_cpu import CountingProducer, _Driver
from bench.quality import CYCLE, room_facts, samples
from producers.catalog import encode
from producers.topics import Topics
from streams import registry as registry_decision
from streams.app import Worker
from streams.decision import RoomConfig
from streams.driver import Table
from streams.quality import QualityConfig
from streams.quality_agent import QualityAgent, replay


async def run(rooms: int, subscribers: int, cycles: int, batch: int) -> dict[str, Any]:
    topics = Topics("cpu-")
    facts = room_facts("cpu-", rooms, subscribers)
    offered = list(samples("cpu-", rooms, subscribers, CYCLE * cycles, datetime.now(UTC)))
    records = [
        ConsumerRecord(topics.name("rtc.facts"), 0, i, 0, 0, b"k", encode(e), None, 1, 0, [])
        for i, e in enumerate(facts)
    ]
    records += [
        ConsumerRecord(topics.name("quality.samples"), 0, i, 0, 0, b"k", encode(e), None, 1, 0, [])
        for i, e in enumerate(offered)
    ]
    producer = CountingProducer()
    tables = [Table(name, f"{name}-changelog", 4) for name in ("quality", "quality-rooms")]
    for table in tables:
        table.bind(producer)
    worker = Worker(
        app=None,  # type: ignore[arg-type]
        driver=_Driver(producer),  # type: ignore[arg-type]
        settings=None,  # type: ignore[arg-type]
        topics=topics,
        room_config=RoomConfig(),
        registry_config=registry_decision.RegistryConfig(),
    )
    agent = QualityAgent(
        tables[0], tables[1], QualityConfig(), 10.0, topics.name("quality.samples"), topics.name("rtc.facts")
    ).driven(worker)
    started = time.perf_counter()
    for i in range(0, len(records), batch):
        handled = await agent.handle(records[i : i + batch])
        await handled.acknowledged()
        await handled.persist()
    seconds = time.perf_counter() - started
    return {
        "samples": len(offered),
        "facts": len(facts),
        "decisions": len(replay(offered)),
        "seconds": round(seconds, 3),
        "samples_per_s": round(len(records) / seconds, 1),
        "records_sent": producer.sent,
        "batch": batch,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.quality_cpu", description=__doc__.split("\n\n")[1])
    parser.add_argument("--rooms", type=int, default=200)
    parser.add_argument("--subscribers", type=int, default=9)
    parser.add_argument("--cycles", type=int, default=1, help="minutes of samples per subscriber (bench.quality's)")
    parser.add_argument("--batch", type=int, default=500, help="records per batch (the driver's batch_max)")
    parser.add_argument("--profile", action="store_true", help="print the top 25 functions by own time")
    args = parser.parse_args(argv)
    if args.profile:
        profiler = cProfile.Profile()
        profiler.enable()
    result = asyncio.run(run(args.rooms, args.subscribers, args.cycles, args.batch))
    if args.profile:
        profiler.disable()
        out = io.StringIO()
        pstats.Stats(profiler, stream=out).sort_stats("tottime").print_stats(25)
        print(out.getvalue(), file=sys.stderr)
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
