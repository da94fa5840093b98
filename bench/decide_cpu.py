"""``python -m bench.decide_cpu``: the room agent's CPU ceiling without Kafka.

Runs the rooms agent's batch handler (``streams.app.Worker.agent``: decode, decide,
encode and hand outputs to a producer, stage and serialize state) over the benchmark's
room mix, in this process, with a producer stub that only counts. No broker, no
network: the figure is what one core can decide per second, the upper bound for one
worker whatever the consumer and producer cost. ``--profile`` prints the top functions
by own time (cProfile; about 3x slower). Prints one JSON object.
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
from typing import Any

from aiokafka.structs import ConsumerRecord

from bench.load import RoomMix
from producers.catalog import encode
from producers.topics import Topics
from streams import registry as registry_decision
from streams import rooms as room_decision
from streams.app import Worker
from streams.decision import RoomConfig
from streams.driver import Table
from streams.keyed import KeyedAgent
from streams.room_state import RoomState


class CountingProducer:
    """Stands in for ``AIOKafkaProducer.send``: counts, resolves at once."""

    def __init__(self) -> None:
        self.sent = 0

    async def send(
        self,
        topic: str,
        value: bytes | None,
        key: bytes | None = None,
        partition: int | None = None,
        headers: Any = None,
    ) -> asyncio.Future[None]:
        self.sent += 1
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        future.set_result(None)
        return future


class _Driver:
    def __init__(self, producer: CountingProducer) -> None:
        self.producer = producer


async def run(events: int, rooms: int, batch: int) -> dict[str, Any]:
    mix = RoomMix("cpu", rooms)
    intents = mix.prime() + [mix.next() for _ in range(events)]
    records = [
        ConsumerRecord("rtc.intents", 0, i, 0, 0, b"k", encode(e), None, 1, 0, []) for i, e in enumerate(intents)
    ]
    producer = CountingProducer()
    tables = [Table(name, f"{name}-changelog", 4) for name in ("rooms",)]
    for table in tables:
        table.bind(producer)
    worker = Worker(
        app=None,  # type: ignore[arg-type]
        driver=_Driver(producer),  # type: ignore[arg-type]
        settings=None,  # type: ignore[arg-type]
        topics=Topics("cpu"),
        room_config=RoomConfig(disconnect_grace_s=30, command_ttl_s=10),
        registry_config=registry_decision.RegistryConfig(node_timeout_s=5),
    )
    room_agent = KeyedAgent(
        RoomState,
        tables[0],
        key_of=lambda e: str(getattr(e, "room_id", "")) or None,
        decide=lambda state, event, key: room_decision.handle(state, event, worker.room_config, room_id=key),
        deadline=lambda state: room_decision.next_deadline(state, worker.room_config),
    )
    agent = worker.agent("rooms", ["rtc.intents"], tables, room_agent.on_input)
    started = time.perf_counter()
    for i in range(0, len(records), batch):
        handled = await agent.handle(records[i : i + batch])
        await handled.acknowledged()
        await handled.persist()
    seconds = time.perf_counter() - started
    return {
        "intents": len(records),
        "seconds": round(seconds, 3),
        "intents_per_s": round(len(records) / seconds, 1),
        "records_sent": producer.sent,
        "records_per_intent": round(producer.sent / len(records), 2),
        "batch": batch,
        "rooms": rooms,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.decide_cpu", description=__doc__.split("\n\n")[1])
    parser.add_argument("--events", type=int, default=30000, help="intents after priming (default 30000)")
    parser.add_argument("--rooms", type=int, default=200, help="rooms in the mix (default 200)")
    parser.add_argument("--batch", type=int, default=500, help="records per batch (default 500)")
    parser.add_argument("--profile", action="store_true", help="run under cProfile, top functions to stderr")
    args = parser.parse_args(argv)
    if args.profile:
        profiler = cProfile.Profile()
        result = profiler.runcall(asyncio.run, run(args.events, args.rooms, args.batch))
        out = io.StringIO()
        pstats.Stats(profiler, stream=out).sort_stats("tottime").print_stats(30)
        print(out.getvalue(), file=sys.stderr)
        result["profiled"] = True
    else:
        result = asyncio.run(run(args.events, args.rooms, args.batch))
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
