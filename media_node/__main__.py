"""``python -m media_node``: run one media node process."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import signal
import sys

from prometheus_client import start_http_server

from media_node.heartbeat import Heartbeat
from media_node.settings import NodeSettings
from observability import logs
from producers.kafka import EventProducer
from producers.topics import Topics

log = logging.getLogger("media_node")


async def run(settings: NodeSettings) -> None:
    topics = Topics(settings.topic_prefix)
    async with EventProducer(settings.kafka_bootstrap, client_id=settings.node_id) as producer:
        heartbeat = Heartbeat(producer, topics.name("media.nodes"), settings.node_id,
                              settings.announced_address, settings.heartbeat_interval_s)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        task = asyncio.create_task(heartbeat.run())
        print(f"media node {settings.node_id} heartbeating to {topics.name('media.nodes')}",
              file=sys.stderr, flush=True)
        await stop.wait()
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        await heartbeat.stopped()
        log.info("stopped", extra={"node_id": settings.node_id})


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m media_node",
        description="Run a roomlog media node. Configured by ROOMLOG_NODE_* env vars and "
        "KAFKA_BOOTSTRAP.")
    parser.add_argument("--node-id", help="override ROOMLOG_NODE_NODE_ID")
    args = parser.parse_args(argv)
    settings = NodeSettings()
    if args.node_id:
        settings.node_id = args.node_id
    logs.setup("media_node", settings.log_level)
    if settings.metrics_port:
        start_http_server(settings.metrics_port, addr="127.0.0.1")
    asyncio.run(run(settings))
    return 0


if __name__ == "__main__":
    sys.exit(main())
