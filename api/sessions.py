"""The log side of the client sockets: the users' sessions for presence and calls.

When a socket opens the gateway writes ``SessionOpened`` (``session.events``, keyed by
the token's identity), then ``SessionPinged`` every ``session_ping_s`` while it stays
open, and ``SessionClosed`` when it closes: ``closed`` for a clean close (code 1000),
``lost`` otherwise (streams keep a lost session for the resume grace period). Streams
derive presence from these; a gateway that dies writes nothing more, and the presence
TTL takes the session away.

``SessionLog`` writes them for every socket of the gateway from one task, and a socket
never waits for them: ``opened`` and ``closed`` only queue the record, and one timer pings
every live session each ``session_ping_s``, spread over half of it in chunks (the first
ping comes at most 1.5 × ``session_ping_s`` after the open; the presence TTL is 3 ×).
Records are handed to the producer in order (``send_soon``: one record waits
for room in a full producer batch, never thousands of socket tasks each on its own ack;
see ``api/stations_heartbeats.py`` for what that cost) and acknowledged in the background.
An open or close the broker refused is queued again, up to ``retries`` times (streams
treat them idempotently by session id); a failed ping is dropped (the next sweep pings
again, well inside the presence TTL). Before this, each socket awaited its
``SessionOpened`` ack before reading its first message and kept one sleeping task that
awaited a ``SessionPinged`` ack per interval: at 10,000 sockets those acks queued behind
full batches, pongs waited seconds and a ``KafkaTimeoutError`` in ``SessionOpened``
closed the socket with 1011.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
from collections import deque
from functools import partial
from typing import Any

from aiokafka.errors import KafkaError

from observability import metrics
from producers.envelope import Event
from producers.kafka import EventProducer
from producers.sessions import SessionClosed, SessionOpened, SessionPinged

log = logging.getLogger(__name__)

#: Session pings queued per turn of the event loop (``SessionLog.ping_all``).
PING_CHUNK = 100

_ID = re.compile(r"^[A-Za-z0-9_.:-]{1,64}$")


def is_user_id(identity: str) -> bool:
    """Presence and calls key users by identity; it must be a log id (``[A-Za-z0-9_.:-]``, ≤ 64)."""
    return bool(_ID.match(identity))


class SessionLog:
    """Writes the session events of every socket on this gateway (module docs)."""

    def __init__(
        self, producer: EventProducer, topic: str, gateway_id: str, ping_s: float, *, retries: int = 3
    ) -> None:
        self.producer, self.topic, self.gateway_id, self.ping_s, self.retries = (
            producer,
            topic,
            gateway_id,
            ping_s,
            retries,
        )
        #: live session id -> user id
        self._live: dict[str, str] = {}
        #: (record, attempts so far), in the order they were queued
        self._queue: deque[tuple[Event, int]] = deque()
        self._wake = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        #: One writer hands records to the producer at a time (opens before their pings).
        self._lock = asyncio.Lock()
        self.written = 0
        self.failed = 0
        self.sweeps = 0

    def __len__(self) -> int:
        return len(self._live)

    def opened(self, user_id: str, session_id: str, name: str) -> None:
        if not is_user_id(user_id):
            return
        self._live[session_id] = user_id
        self._put(
            SessionOpened.new(user_id=user_id, session_id=session_id, gateway_id=self.gateway_id, name=name[:128])
        )

    def closed(self, session_id: str, code: int | None) -> None:
        user_id = self._live.pop(session_id, None)
        if user_id is None:
            return
        reason = "closed" if code == 1000 else "lost"
        self._put(SessionClosed.new(user_id=user_id, session_id=session_id, reason=reason))

    def _put(self, event: Event, attempts: int = 0) -> None:
        self._queue.append((event, attempts))
        self._wake.set()

    async def start(self) -> None:
        self._tasks = [
            asyncio.create_task(self._write(), name="session-log"),
            asyncio.create_task(self._ping(), name="session-pings"),
        ]

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        with contextlib.suppress(Exception):  # a last flush: the closes of the sockets just shut
            await self.flush()
            await self.producer.flush()

    async def _write(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            try:
                await self.flush()
            except KafkaError as exc:  # the accumulator stayed full: what is left waits for the next turn
                log.warning("session events waiting for the broker: %s", exc)
                await asyncio.sleep(1.0)
                self._wake.set()

    async def _ping(self) -> None:
        while True:
            await asyncio.sleep(self.ping_s)
            try:
                await self.ping_all(spread_s=self.ping_s / 2)
            except KafkaError as exc:
                log.warning("session ping sweep cut short: %s", exc)

    async def flush(self) -> int:
        """Hand every queued open/close to the producer, in order."""
        sent = 0
        async with self._lock:
            while self._queue:
                event, attempts = self._queue[0]
                future = await self.producer.send_soon(self.topic, event)  # may raise: the record stays queued
                self._queue.popleft()
                future.add_done_callback(partial(self._acked, event, attempts))
                sent += 1
        return sent

    async def ping_all(self, spread_s: float = 0.0) -> int:
        """One ``SessionPinged`` per live session (one sweep of the timer), ``PING_CHUNK``
        at a time over ``spread_s``: building and queueing a record costs ~0.1 ms of the
        event loop, so 10,000 in one go held every socket's pong for a second or more."""
        self.sweeps += 1
        sessions = list(self._live.items())
        chunks = max(1, -(-len(sessions) // PING_CHUNK))
        pause = spread_s / chunks
        for start in range(0, len(sessions), PING_CHUNK):
            if start:
                await asyncio.sleep(pause)
            await self.flush()  # the opens queued meanwhile go first
            async with self._lock:
                for session_id, user_id in sessions[start : start + PING_CHUNK]:
                    if session_id not in self._live:
                        continue  # closed meanwhile: its SessionClosed is queued
                    event = SessionPinged.new(user_id=user_id, session_id=session_id, gateway_id=self.gateway_id)
                    future = await self.producer.send_soon(self.topic, event)
                    future.add_done_callback(partial(self._acked, None, self.retries))
        if sessions:
            metrics.API_INTENTS.labels("SessionPinged").inc(len(sessions))
        return len(sessions)

    def _acked(self, event: Event | None, attempts: int, future: asyncio.Future[Any]) -> None:
        if future.cancelled() or future.exception() is None:
            self.written += 1
            if event is not None:
                metrics.API_INTENTS.labels(event.type).inc()
            return
        self.failed += 1
        if isinstance(event, SessionOpened) and event.session_id not in self._live:
            return  # closed meanwhile: its SessionClosed says enough
        if event is not None and attempts + 1 < self.retries:
            log.warning("%s not written, retrying: %s", event.type, future.exception())
            self._put(event, attempts + 1)
        elif event is not None:
            log.error("%s not written after %d attempts: %s", event.type, attempts + 1, future.exception())
        elif self.failed % 1000 == 1:  # pings: one line per thousand, the next sweep retries
            log.warning("session ping not written (%d failures so far): %s", self.failed, future.exception())
