"""Create the registry's topics: ``python -m producers.admin create-topics``."""

from __future__ import annotations

import argparse
import asyncio
import os
import sys

from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import TopicAlreadyExistsError

from producers.topics import Topics, all_specs


async def create_topics(bootstrap: str, prefix: str = "", *, quiet: bool = False) -> list[str]:
    """Create every registry topic (and dead-letter topic) that is missing. Idempotent."""
    topics = Topics(prefix)
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, client_id="roomlog-admin")
    await admin.start()
    try:
        existing = set(await admin.list_topics())
        wanted = [
            NewTopic(topics.name(s.name), s.partitions, 1, topic_configs=s.config())
            for s in all_specs()
            if topics.name(s.name) not in existing
        ]
        if wanted:
            try:
                await admin.create_topics(wanted)
            except TopicAlreadyExistsError:
                pass
        created = [t.name for t in wanted]
    finally:
        await admin.close()
    if not quiet:
        for name in created:
            print(f"created {name}", file=sys.stderr)
        print(f"{len(created)} topics created, {len(all_specs()) - len(created)} already present", file=sys.stderr)
    return created


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m producers.admin", description="Manage roomlog's Kafka topics.")
    sub = parser.add_subparsers(dest="cmd", required=True)
    create = sub.add_parser("create-topics", help="create every registry topic that is missing")
    create.add_argument("--bootstrap", default=os.environ.get("KAFKA_BOOTSTRAP", "127.0.0.1:19092"))
    create.add_argument("--prefix", default=os.environ.get("ROOMLOG_TOPIC_PREFIX", ""))
    sub.add_parser("list", help="print the registry")
    args = parser.parse_args(argv)
    if args.cmd == "list":
        for s in all_specs():
            print(f"{s.name:28} key={s.key:11} partitions={s.partitions} {s.config()}")
        return 0
    asyncio.run(create_topics(args.bootstrap, args.prefix))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
