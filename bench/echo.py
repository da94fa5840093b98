"""The baseline worker: copy every record of one topic to another, doing nothing else.

``python -m bench.echo --bootstrap B --source S --target T --group G`` runs as its own
process, like a streams worker: it consumes ``S`` (consumer group ``G``, from the
beginning) and produces each record's key and value to ``T`` with the settings Faust
gives the streams worker's producer (acks=all, linger 2 ms). The benchmark measures
the same pipeline through it as through the worker, so the difference between the
two is what the room agent costs.
"""

from __future__ import annotations

import argparse
import asyncio
import signal

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer


async def echo(bootstrap: str, source: str, target: str, group: str) -> None:
    consumer = AIOKafkaConsumer(
        source,
        bootstrap_servers=bootstrap,
        group_id=group,
        auto_offset_reset="earliest",
        client_id="roomlog-bench-echo",
    )
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=2, client_id="roomlog-bench-echo")
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await producer.start()
    await consumer.start()
    try:
        while not stop.is_set():
            batch = await consumer.getmany(timeout_ms=200)
            for records in batch.values():
                for record in records:
                    await producer.send(target, record.value, key=record.key)
    finally:
        await consumer.stop()
        await producer.stop()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.echo", description=__doc__.splitlines()[0])
    parser.add_argument("--bootstrap", required=True)
    parser.add_argument("--source", required=True)
    parser.add_argument("--target", required=True)
    parser.add_argument("--group", required=True)
    args = parser.parse_args(argv)
    asyncio.run(echo(args.bootstrap, args.source, args.target, args.group))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
