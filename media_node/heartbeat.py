"""Heartbeats: the node's load, published on ``media.nodes``.

Every ``interval_s`` while the node carries peers or legs; every ``idle_interval_s`` while it
carries none, so an idle platform writes few records (docs/events.md, "Ticks"). Each
heartbeat says when the next one comes (``interval_s``), and the registry allows two of
those before it marks the node dead. A node that gets its first peer beats again within
``interval_s``."""

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
    def __init__(
        self,
        producer: EventProducer,
        topic: str,
        node_id: str,
        address: str,
        interval_s: float,
        idle_interval_s: float | None = None,
    ) -> None:
        self._producer = producer
        self._topic = topic
        self._node_id = node_id
        self._address = address
        self._interval = interval_s
        self._idle_interval = max(interval_s, idle_interval_s or interval_s)
        self._started_at: datetime = utcnow()
        self._cpu = CpuMeter()
        self.peers = 0
        self.legs = 0
        self.packets_per_s = 0.0

    def load(self) -> NodeLoad:
        return NodeLoad(
            peers=self.peers, legs=self.legs, packets_per_s=self.packets_per_s, cpu_pct=round(self._cpu.read(), 2)
        )

    @property
    def idle(self) -> bool:
        return self.peers == 0 and self.legs == 0

    def next_interval(self) -> float:
        return self._idle_interval if self.idle else self._interval

    async def beat(self) -> None:
        event = NodeHeartbeat.new(
            node_id=self._node_id,
            address=self._address,
            started_at=self._started_at,
            load=self.load(),
            interval_s=self.next_interval(),
        )
        await self._producer.send(self._topic, event)
        metrics.MEDIA_HEARTBEATS.inc()

    async def run(self) -> None:
        """Beat, then wait the promised interval; wake early (checked every ``interval_s``)
        when the node stops being idle."""
        log.info("heartbeating", extra={"node_id": self._node_id, "pid": os.getpid()})
        while True:
            try:
                await self.beat()
            except Exception:  # noqa: BLE001 - keep beating through broker hiccups
                log.exception("heartbeat failed", extra={"node_id": self._node_id})
            waited, promised = 0.0, self.next_interval()
            while waited < promised - 1e-6:
                step = min(self._interval, promised - waited)
                await asyncio.sleep(step)
                waited += step
                if not self.idle:
                    break

    async def stopped(self) -> None:
        await self._producer.send(self._topic, NodeStopped.new(node_id=self._node_id))
