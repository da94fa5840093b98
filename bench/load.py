"""Load for the room agent: a join/leave mix over many rooms, a paced producer loop,
a backlog writer, and a watcher that notes when each intent's first fact is visible.

Every intent of the mix makes the room agent emit at least one ``rtc.facts`` record
(a join of a new peer → ``PeerJoined``, plus ``RoomCreated`` for a new room; a leave of
a peer that is in the room → ``PeerLeft``), so every intent has a measurable latency.
"""

from __future__ import annotations

import asyncio
import json
import random
import time
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition

from producers.envelope import Event
from producers.fields import Grant
from producers.kafka import EventProducer
from producers.rtc import JoinRequested, LeaveRequested

GRANTS = [Grant.JOIN, Grant.PUBLISH, Grant.SUBSCRIBE]


@dataclass
class RoomMix:
    """Joins and leaves over ``rooms`` rooms of at most ``max_peers`` peers each.

    A room with peers gets a leave or a join with equal odds (a full room: a leave,
    an empty one: a join), so rooms hold about ``max_peers / 2`` peers on average.
    Peer ids are never reused; every intent has a fresh ``event_id``.
    """

    tag: str
    rooms: int
    max_peers: int = 10
    seed: int = 1
    joins: int = 0
    leaves: int = 0
    _rng: random.Random = field(init=False)
    _members: list[list[str]] = field(init=False)
    _next_peer: int = 0

    def __post_init__(self) -> None:
        self._rng = random.Random(self.seed)
        self._members = [[] for _ in range(self.rooms)]

    def room_id(self, index: int) -> str:
        return f"{self.tag}-room{index:05d}"

    def next(self) -> Event:
        index = self._rng.randrange(self.rooms)
        members = self._members[index]
        if members and (len(members) >= self.max_peers or self._rng.random() < 0.5):
            peer_id = members.pop(self._rng.randrange(len(members)))
            self.leaves += 1
            return LeaveRequested.new(room_id=self.room_id(index), peer_id=peer_id)
        return self.join(index)

    def join(self, index: int) -> Event:
        """A new peer joins room ``index``."""
        peer_id = f"peer{self._next_peer}"
        self._next_peer += 1
        self._members[index].append(peer_id)
        self.joins += 1
        return JoinRequested.new(
            room_id=self.room_id(index),
            peer_id=peer_id,
            identity=peer_id,
            name=f"Bench {peer_id}",
            session_id=f"s-{peer_id}",
            gateway_id=f"gw-bench-{index % 4}",
            grants=GRANTS,
        )

    def prime(self) -> list[Event]:
        """One join per room: opens every room (and gets it placed on a node)."""
        return [self.join(index) for index in range(self.rooms)]

    def counts(self) -> dict[str, int]:
        return {
            "joins": self.joins,
            "leaves": self.leaves,
            "rooms": self.rooms,
            "peers_in_rooms": sum(len(m) for m in self._members),
        }


def type_of(value: bytes) -> str:
    """The ``type`` of a roomlog JSON payload (written as ``"type":"<name>"``)."""
    at = value.find(b'"type":"')
    if at < 0:
        return "?"
    start = at + 8
    return value[start : value.find(b'"', start)].decode()


def id_field(name: str) -> Callable[[bytes], str | None]:
    """A fast reader of one top-level uuid field of a roomlog JSON payload.

    ``encode`` writes compact JSON (``"causation_id":"<uuid>"``); anything else falls
    back to ``json.loads``.
    """
    marker = f'"{name}":"'.encode()
    raw_name = name.encode()

    def read(value: bytes) -> str | None:
        at = value.find(marker)
        if at >= 0:
            start = at + len(marker)
            return value[start : start + 36].decode()
        if raw_name not in value:
            return None
        found = json.loads(value).get(name)
        return str(found) if found else None

    return read


class Watch:
    """Reads a topic (no consumer group; from the beginning, or from its current end) and
    keeps, for every id found in ``id_name``, the time its first record was handed to
    this consumer, and a count of records by ``type``."""

    def __init__(self, bootstrap: str, topic: str, id_name: str = "causation_id", *, from_end: bool = False) -> None:
        self.topic = topic
        self._from_end = from_end
        self.types: Counter[str] = Counter()
        self._read_id = id_field(id_name)
        self._consumer = AIOKafkaConsumer(
            bootstrap_servers=bootstrap,
            group_id=None,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            client_id="roomlog-bench-watch",
        )
        self.seen: dict[str, float] = {}
        self.records = 0
        self.first_at: float | None = None
        self.last_at: float | None = None
        self._waiting: set[str] = set()
        self._done = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> Watch:
        await self._consumer.start()
        parts = self._consumer.partitions_for_topic(self.topic)
        if not parts:
            await self._consumer._client.force_metadata_update()  # noqa: SLF001
            parts = self._consumer.partitions_for_topic(self.topic)
        if not parts:
            raise RuntimeError(f"topic {self.topic} does not exist")
        self._consumer.assign([TopicPartition(self.topic, p) for p in sorted(parts)])
        if self._from_end:
            await self._consumer.seek_to_end()
            for tp in self._consumer.assignment():  # resolve the end offsets now
                await self._consumer.position(tp)
        else:
            await self._consumer.seek_to_beginning()
        self._task = asyncio.create_task(self._run())
        return self

    async def _run(self) -> None:
        read_id, seen, waiting, types = self._read_id, self.seen, self._waiting, self.types
        while True:
            batch = await self._consumer.getmany(timeout_ms=200)
            now = time.perf_counter()
            for records in batch.values():
                if self.first_at is None:
                    self.first_at = now
                self.last_at = now
                self.records += len(records)
                for record in records:
                    value = record.value or b""
                    types[type_of(value)] += 1
                    id_ = read_id(value)
                    if id_ is None or id_ in seen:
                        continue
                    seen[id_] = now
                    if id_ in waiting:
                        waiting.discard(id_)
                        if not waiting:
                            self._done.set()

    async def wait_all(
        self, ids: Iterable[str], timeout: float, check: Callable[[], None] | None = None, idle: float = 15.0
    ) -> bool:
        """Wait until every id has been seen; False after ``timeout``, or after ``idle``
        seconds without a new record once records flow. ``check`` runs every 0.5 s."""
        self._waiting.update(i for i in ids if i not in self.seen)
        if not self._waiting:
            return True
        self._done.clear()
        deadline = time.perf_counter() + timeout
        while not self._done.is_set():
            if self._task is not None and self._task.done():
                self._task.result()
            if check is not None:
                check()
            now = time.perf_counter()
            left = deadline - now
            if left <= 0 or (self.last_at is not None and now - self.last_at > idle):
                return False
            try:
                await asyncio.wait_for(self._done.wait(), min(0.5, left))
            except TimeoutError:
                pass
        return True

    async def wait_until(
        self, predicate: Callable[[], bool], timeout: float, check: Callable[[], None] | None = None
    ) -> bool:
        deadline = time.perf_counter() + timeout
        while not predicate():
            if check is not None:
                check()
            if time.perf_counter() > deadline:
                return False
            await asyncio.sleep(0.05)
        return True

    def missing(self) -> int:
        return len(self._waiting)

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
        await self._consumer.stop()


@dataclass
class PacedRun:
    """What a paced producer loop did."""

    sent_at: dict[str, float]
    first_send: float
    last_send: float
    lag_p99_ms: float
    lag_max_ms: float
    errors: int

    @property
    def achieved_rate(self) -> float:
        n = len(self.sent_at)
        return (n - 1) / (self.last_send - self.first_send) if n > 1 else 0.0


async def paced(
    producer: EventProducer, topic: str, make: Callable[[], Event], rate: float, seconds: float
) -> PacedRun:
    """Offer ``rate`` intents/s for ``seconds``: intent i is due at ``t0 + i / rate``.

    The send time of an intent is taken just before ``send``. Lag is how late a send
    started against its due time: a loop that cannot keep up shows a growing lag.
    """
    total = int(rate * seconds)
    sent_at: dict[str, float] = {}
    lags: list[float] = []
    futures: list[asyncio.Future[Any]] = []
    t0 = time.perf_counter() + 0.005
    first = 0.0
    for i in range(total):
        due = t0 + i / rate
        # always yield once: the producer's sender and the watcher share this loop
        await asyncio.sleep(max(0.0, due - time.perf_counter()))
        event = make()
        sent = time.perf_counter()
        if i == 0:
            first = sent
        lags.append(sent - due)
        sent_at[str(event.event_id)] = sent
        futures.append(await producer.send_soon(topic, event))
    last = time.perf_counter()
    results = await asyncio.gather(*futures, return_exceptions=True)
    lags.sort()
    return PacedRun(
        sent_at,
        first,
        last,
        lag_p99_ms=1000 * percentile(lags, 99),
        lag_max_ms=1000 * lags[-1] if lags else 0.0,
        errors=sum(isinstance(r, BaseException) for r in results),
    )


async def backlog(producer: EventProducer, topic: str, make: Callable[[], Event], count: int) -> list[str]:
    """Write ``count`` intents as fast as the producer takes them; returns their ids."""
    ids: list[str] = []
    futures: list[asyncio.Future[Any]] = []
    for _ in range(count):
        event = make()
        ids.append(str(event.event_id))
        futures.append(await producer.send_soon(topic, event))
    for result in await asyncio.gather(*futures, return_exceptions=True):
        if isinstance(result, BaseException):
            raise result
    return ids


def percentile(sorted_values: list[float], pct: float) -> float:
    """Nearest-rank percentile of an ascending list (0.0 for an empty list)."""
    if not sorted_values:
        return 0.0
    rank = max(1, min(len(sorted_values), int(-(-pct * len(sorted_values) // 100))))
    return sorted_values[rank - 1]


def latencies_ms(sent_at: dict[str, float], seen: dict[str, float]) -> tuple[list[float], int]:
    """Sorted latencies (ms) of the intents that have a fact, and how many have none."""
    out: list[float] = []
    missing = 0
    for id_, sent in sent_at.items():
        got = seen.get(id_)
        if got is None:
            missing += 1
        else:
            out.append(1000.0 * (got - sent))
    out.sort()
    return out, missing


def latency_summary(sent_at: dict[str, float], seen: dict[str, float]) -> dict[str, Any]:
    """p50/p99/max over all intents; an intent without a fact counts as infinitely late
    (so p99 is null when more than 1% are missing)."""
    values, missing = latencies_ms(sent_at, seen)
    n = len(values) + missing

    def pct(p: float) -> float | None:
        rank = max(1, int(-(-p * n // 100)))
        return round(values[rank - 1], 2) if rank <= len(values) else None

    return {
        "p50_ms": pct(50),
        "p90_ms": pct(90),
        "p99_ms": pct(99),
        "p999_ms": pct(99.9),
        "max_ms": round(values[-1], 2) if values and not missing else None,
        "count": n,
        "missing": missing,
    }
