"""Heartbeats: the node's load, published on ``media.nodes`` every interval."""

from __future__ import annotations

import asyncio
import logging
import os
import time
from datetime import datetime

from observability import metrics
from producers.envelope import utcnow
from producers.fields import NodeLoad
from producers.kafka import EventProducer
from producers.media import NodeHeartbeat, NodeStopped

log = logging.getLogger(__name__)


class CpuMeter:
    """This process's CPU use in percent of one core since the last reading."""

    def __init__(self) -> None:
        self._last = (time.monotonic(), time.process_time())

    def read(self) -> float:
        now = (time.monotonic(), time.process_time())
        wall, cpu = now[0] - self._last[0], now[1] - self._last[1]
        self._last = now
        return 100.0 * cpu / wall if wall > 0 else 0.0


class Heartbeat:
    def __init__(self, producer: EventProducer, topic: str, node_id: str, address: str, interval_s: float) -> None:
        self._producer = producer
        self._topic = topic
        self._node_id = node_id
        self._address = address
        self._interval = interval_s
        self._started_at: datetime = utcnow()
        self._cpu = CpuMeter()
        self.peers = 0
        self.legs = 0
        self.packets_per_s = 0.0

    def load(self) -> NodeLoad:
        return NodeLoad(
            peers=self.peers, legs=self.legs, packets_per_s=self.packets_per_s, cpu_pct=round(self._cpu.read(), 2)
        )

    async def beat(self) -> None:
        event = NodeHeartbeat.new(
            node_id=self._node_id, address=self._address, started_at=self._started_at, load=self.load()
        )
        await self._producer.send(self._topic, event)
        metrics.MEDIA_HEARTBEATS.inc()

    async def run(self) -> None:
        log.info("heartbeating", extra={"node_id": self._node_id, "pid": os.getpid()})
        while True:
            try:
                await self.beat()
            except Exception:  # noqa: BLE001 - keep beating through broker hiccups
                log.exception("heartbeat failed", extra={"node_id": self._node_id})
            await asyncio.sleep(self._interval)

    async def stopped(self) -> None:
        await self._producer.send(self._topic, NodeStopped.new(node_id=self._node_id))
