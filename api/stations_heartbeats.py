"""The heartbeats of the station sockets a gateway holds, written to the log by one task.

A station socket's ``heartbeat`` only notes the beat (``beat``: a dict assignment); every
``flush_s`` one task writes a ``StationHeartbeat`` per station that beat since the last
flush, each with the time of its newest beat. Without it every heartbeat message was its
own producer send from its own socket task: with thousands of stations, thousands of
coroutines waited on the same full producer batch (``MessageAccumulator.add_message`` →
``wait_drain``) and woke together on each drain, and the gateway's event loop spent most
of its time waking them (bench.stations, 5,000 stations: ~36 % of the api's samples in
``wait_drain`` and ``asyncio.wait``; ``GET /v1/stations`` timed out). One writer sends the
same records in order, at most one waiter on a full batch.

A heartbeat is idempotent in streams (``last_seen`` moves to the max), so coalescing the
beats of one station within ``flush_s`` loses nothing; ``flush_s`` (0.2 s) is far under
the heartbeat interval (2 s) and the offline rule (3 missed intervals).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from datetime import datetime
from typing import Any

from observability import metrics
from producers.envelope import utcnow
from producers.kafka import EventProducer
from producers.sessions import StationHeartbeat

log = logging.getLogger(__name__)


class HeartbeatWriter:
    def __init__(self, producer: EventProducer, topic: str, gateway_id: str, *, flush_s: float = 0.2) -> None:
        self.producer, self.topic, self.gateway_id, self.flush_s = producer, topic, gateway_id, flush_s
        #: station id -> (session id, time of its newest beat) since the last flush
        self._due: dict[str, tuple[str, datetime]] = {}
        self._task: asyncio.Task[None] | None = None
        self.written = 0

    def beat(self, station_id: str, session_id: str) -> None:
        self._due[station_id] = (session_id, utcnow())

    async def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="station-heartbeats")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        with contextlib.suppress(Exception):  # a last flush: the beats already received
            await self.flush()

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self.flush_s)
            try:
                await self.flush()
            except Exception:  # noqa: BLE001 - the next flush tries again with newer beats
                log.exception("station heartbeats not written")

    async def flush(self) -> int:
        due, self._due = self._due, {}
        for station_id, (session_id, at) in due.items():
            event = StationHeartbeat.new(
                station_id=station_id, gateway_id=self.gateway_id, session_id=session_id, occurred_at=at
            )
            future = await self.producer.send_soon(self.topic, event)
            future.add_done_callback(_report)
        if due:
            metrics.API_INTENTS.labels("StationHeartbeat").inc(len(due))
            self.written += len(due)
        return len(due)


def _report(future: asyncio.Future[Any]) -> None:
    if not future.cancelled() and future.exception() is not None:
        log.warning("station heartbeat not written: %s", future.exception())
