"""``python -m deploy.k8s.wait_topics``: wait until every topic the platform needs exists on the
broker (the registry's, dead-letter topics and the streams' changelogs: ``deploy.k8s.topics``),
as the Strimzi topic operator creates them from ``base/kafka/topics.yaml``. The streams pods
run it as an init container, so the worker never creates a changelog itself (it would, with
replication factor 1). Exit 0 when all exist, 1 with the missing names after ``--timeout``.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import time

from aiokafka.admin import AIOKafkaAdminClient

from deploy.k8s.topics import topic_names


async def missing_topics(bootstrap: str, wanted: list[str]) -> list[str]:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, client_id="roomlog-wait-topics")
    await admin.start()
    try:
        existing = set(await admin.list_topics())
    finally:
        await admin.close()
    return [name for name in wanted if name not in existing]


async def wait(bootstrap: str, wanted: list[str], timeout_s: float, interval_s: float) -> list[str]:
    deadline = time.monotonic() + timeout_s
    missing = wanted
    while True:
        try:
            missing = await missing_topics(bootstrap, wanted)
        except Exception as exc:  # noqa: BLE001 - the broker may not be up yet: keep waiting
            print(f"wait_topics: {type(exc).__name__}: {exc}", file=sys.stderr)
        if not missing or time.monotonic() >= deadline:
            return missing
        print(f"wait_topics: waiting for {len(missing)} topics, e.g. {missing[0]}", file=sys.stderr)
        await asyncio.sleep(interval_s)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m deploy.k8s.wait_topics", description=__doc__.split("\n\n")[0])
    parser.add_argument("--bootstrap", default=os.environ.get("KAFKA_BOOTSTRAP", "127.0.0.1:19092"))
    parser.add_argument("--prefix", default=os.environ.get("ROOMLOG_TOPIC_PREFIX", ""))
    parser.add_argument("--app-id", default=os.environ.get("ROOMLOG_STREAMS_APP_ID"), help="the streams app id")
    parser.add_argument("--timeout", type=float, default=600.0, help="seconds (default 600)")
    parser.add_argument("--interval", type=float, default=3.0)
    args = parser.parse_args(argv)
    wanted = topic_names(args.prefix, args.app_id)
    missing = asyncio.run(wait(args.bootstrap, wanted, args.timeout, args.interval))
    if missing:
        print(f"wait_topics: still missing after {args.timeout:.0f} s: {', '.join(missing)}", file=sys.stderr)
        return 1
    print(f"wait_topics: all {len(wanted)} topics exist", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
