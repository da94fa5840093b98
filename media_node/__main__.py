"""``python -m media_node``: run one media node process."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import signal
import sys
import time

import uvloop

from media_node.aiortc_glue import register_vp9
from media_node.commands import CommandRunner
from media_node.guard import forbid_codecs
from media_node.heartbeat import Heartbeat
from media_node.peers import Peers
from media_node.quality import QualitySampler
from media_node.settings import NodeSettings
from observability import logs, metrics, tracing
from producers.kafka import EventConsumer, EventProducer
from producers.topics import Topics

log = logging.getLogger("media_node")


async def run(settings: NodeSettings) -> None:
    topics = Topics(settings.topic_prefix)
    async with EventProducer(settings.kafka_bootstrap, client_id=settings.node_id) as producer:
        runner = CommandRunner(settings.node_id, producer, topics, settings.announced_address)
        consumer = EventConsumer(
            settings.kafka_bootstrap,
            [topics.name("media.commands")],
            group_id=f"roomlog-media-node-{settings.node_id}",
            address=settings.node_id,
            client_id=settings.node_id,
        )
        await consumer.start()  # listen before announcing ourselves: no command is missed
        heartbeat = Heartbeat(
            producer,
            topics.name("media.nodes"),
            settings.node_id,
            settings.announced_address,
            settings.heartbeat_interval_s,
            settings.idle_heartbeat_interval_s,
        )
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        sampler = QualitySampler(runner.peers, producer, topics.name("quality.samples"))
        tasks = [
            asyncio.create_task(heartbeat.run()),
            asyncio.create_task(runner.run(consumer)),
            asyncio.create_task(maintain(runner, heartbeat)),
            asyncio.create_task(sampler.run(settings.stats_interval_s)),
        ]
        print(
            f"media node {settings.node_id} heartbeating to {topics.name('media.nodes')}", file=sys.stderr, flush=True
        )
        await stop.wait()
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await runner.peers.close()
        await consumer.stop()
        await heartbeat.stopped()
        log.info("stopped", extra={"node_id": settings.node_id})


#: the legs gauge's children, looked up once
PUBLISH_LEGS = metrics.MEDIA_LEGS.labels("publish")
SUBSCRIBE_LEGS = metrics.MEDIA_LEGS.labels("subscribe")


def export_load(peers: Peers) -> None:
    """The node's rooms, peers, tracks and active legs, as Prometheus gauges."""
    sessions = list(peers.sessions.values())
    metrics.MEDIA_PEERS.set(len(sessions))
    metrics.MEDIA_ROOMS.set(len({s.room_id for s in sessions}))
    metrics.MEDIA_TRACKS.set(len(peers.sources))
    PUBLISH_LEGS.set(sum(len(s.inbound) for s in sessions))
    SUBSCRIBE_LEGS.set(sum(1 for s in sessions for sub in s.subscriptions.values() if sub.active))


async def maintain(runner: CommandRunner, heartbeat: Heartbeat, interval_s: float = 1.0) -> None:
    """Once a second: REMB upstream, forwarded-packet metrics, load for the heartbeat."""
    last_packets, last_at = 0, time.monotonic()
    last_cpu = time.process_time()
    while True:
        await asyncio.sleep(interval_s)
        try:
            await runner.peers.tick()
        except Exception:  # noqa: BLE001 - one bad source must not stop the loop
            log.exception("tick failed")
        packets, _ = runner.peers.forwarded()
        now = time.monotonic()
        load = runner.peers.load()
        heartbeat.peers, heartbeat.legs = load["peers"], load["legs"]
        heartbeat.packets_per_s = max(0.0, (packets - last_packets) / (now - last_at))
        cpu = time.process_time()
        metrics.MEDIA_CPU.set(max(0.0, (cpu - last_cpu) / (now - last_at)))
        export_load(runner.peers)
        last_packets, last_at, last_cpu = packets, now, cpu


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m media_node",
        description="Run a roomlog media node. Configured by ROOMLOG_NODE_* env vars and KAFKA_BOOTSTRAP.",
    )
    parser.add_argument("--node-id", help="override ROOMLOG_NODE_NODE_ID")
    args = parser.parse_args(argv)
    settings = NodeSettings()
    if args.node_id:
        settings.node_id = args.node_id
    logs.setup("media_node", settings.log_level)
    tracing.setup("media-node", settings, instance=settings.node_id)
    if settings.forbid_codecs:
        forbid_codecs()
    register_vp9()  # forwarded/recorded as is: aiortc negotiates it, never codes it
    metrics.serve(settings.metrics_port, settings.metrics_host)
    uvloop.run(run(settings))  # the forwarding path is loop-bound: uvloop cuts its overhead
    return 0


if __name__ == "__main__":
    sys.exit(main())
