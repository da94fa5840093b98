"""Agents on a plain aiokafka loop, started and stopped with the Faust worker.

An agent needs exactly this discipline from its consumer: hand a record to the handler
once per read, never commit an offset before its record's outputs and state changes
are on the log, and never decide on a table while it is being recovered.
faust-streaming 0.15.3's agent consumer breaks each of these in some path
(docs/architecture.md, "Agents on aiokafka"), and its per-message machinery cost a
worker most of its throughput. So every agent runs here, on one consumer group per
agent (``<app_id>-<agent>``); the Faust worker hosts this service and the ticker.

Per batch of records (``getmany``, at most ``batch_max``):

1. decode, decide, hand the outputs to the producer (``streams/batch.py``);
2. wait until the broker acknowledged every output, then write the changed table
   entries to their changelogs and wait for those acknowledgements too;
3. only then remember the batch's next offsets as committable. Commits go out every
   ``commit_interval_s``, at every revocation and at shutdown.

With tracing on (``observability/tracing.py``), a batch is a span of its own (``<agent> batch``)
and each input a span in the trace its record's ``traceparent`` carries, linked to the batch's.

A crash anywhere re-reads from the last committed offset; the handlers are idempotent
by event id, and the outputs' ids are derived from their cause, so a re-read repeats
the same outputs.

Rebalances (eager): the revocation listener waits for the batch in flight (a lock) and
commits what was handled; the assignment listener forgets the partitions no longer
owned and restores newly assigned partitions from their changelogs before any record
of the new assignment is handled. Records fetched across a rebalance are not handled:
their partitions are sought back to the first of them (aiokafka has usually reset them
to the committed offset already).

Inputs of one agent are co-partitioned (same key, same partition count), and the range
assignor gives partition ``p`` of every input topic to the same member, so a table
partition ``p`` lives with input partition ``p``; its changelog is
``<app_id>-<table>-changelog`` (compacted, same partition count).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRebalanceListener, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import KafkaError, TopicAlreadyExistsError
from aiokafka.structs import ConsumerRecord
from mode import Service
from pydantic import BaseModel

from observability import metrics, tracing
from streams.lag import AgentLag

log = logging.getLogger(__name__)


class Table:
    """Values by string key for the partitions this member owns, with a changelog.

    ``data`` is what the handlers read (through ``Batch.get``): JSON values as restored, or
    the pydantic models handlers stored (kept as they are, so the next load of a hot key
    costs no validation); ``write`` changes one entry and sends its JSON to the changelog
    partition of the input partition it belongs to (``None`` forgets the key: a tombstone)."""

    def __init__(self, name: str, changelog: str, partitions: int) -> None:
        self.name = name
        self.changelog = changelog
        self.partitions = partitions
        self.data: dict[str, Any] = {}
        self._partition_of: dict[str, int] = {}
        self._producer: AIOKafkaProducer | None = None
        #: Told of every entry restored from the changelog (partition, key, JSON value or
        #: None) and of every partition forgotten: indexes derived from the table (a keyed
        #: agent's deadlines) follow it without a changelog of their own.
        self.on_restore: list[Callable[[int, str, Any], None]] = []
        self.on_forget: list[Callable[[set[int]], None]] = []

    def get(self, key: str, default: Any = None) -> Any:
        return self.data.get(key, default)

    def bind(self, producer: AIOKafkaProducer) -> None:
        self._producer = producer

    async def write(self, partition: int, key: str, value: Any) -> asyncio.Future[Any]:
        """Change the entry and send it to the changelog; returns the send's future."""
        if self._producer is None:
            raise RuntimeError(f"table {self.name} is not bound to a producer")
        self._apply(partition, key, value)
        if value is None:
            payload = None
        elif isinstance(value, BaseModel):
            payload = value.model_dump_json().encode()
        else:
            payload = json.dumps(value, separators=(",", ":")).encode()
        future: asyncio.Future[Any] = await self._producer.send(
            self.changelog, payload, key=json.dumps(key).encode(), partition=partition
        )
        return future

    def _apply(self, partition: int, key: str, value: Any) -> None:
        if value is None:
            self.data.pop(key, None)
            self._partition_of.pop(key, None)
        else:
            self.data[key] = value
            self._partition_of[key] = partition

    def restore_entry(self, partition: int, key: str, value: Any) -> None:
        """Apply one changelog record read back at restore."""
        self._apply(partition, key, value)
        for listener in self.on_restore:
            listener(partition, key, value)

    def forget(self, partitions: set[int]) -> None:
        """Drop the entries of partitions this member no longer owns."""
        for key in [k for k, p in self._partition_of.items() if p in partitions]:
            self.data.pop(key, None)
            del self._partition_of[key]
        for listener in self.on_forget:
            listener(partitions)


async def restore(bootstrap: str, tables: Sequence[Table], partitions: set[int]) -> int:
    """Read the tables' changelog partitions from their beginning to their end now, with
    one reader for all of them; returns how many records were applied."""
    if not partitions or not tables:
        return 0
    by_topic = {table.changelog: table for table in tables}
    for table in tables:
        table.forget(partitions)
    reader = AIOKafkaConsumer(
        bootstrap_servers=bootstrap,
        group_id=None,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        client_id="restore",
    )
    await reader.start()
    applied = 0
    try:
        tps = [TopicPartition(topic, p) for topic in by_topic for p in sorted(partitions)]
        reader.assign(tps)
        ends = await reader.end_offsets(tps)
        await reader.seek_to_beginning(*tps)
        remaining = {tp for tp in tps if await reader.position(tp) < ends[tp]}
        while remaining:
            got = await reader.getmany(*remaining, timeout_ms=500)
            for tp, records in got.items():
                table = by_topic[tp.topic]
                for record in records:
                    if record.offset >= ends[tp]:
                        break
                    key = json.loads(record.key) if record.key else ""
                    table.restore_entry(tp.partition, key, None if record.value is None else json.loads(record.value))
                    applied += 1
            for tp in list(remaining):
                if await reader.position(tp) >= ends[tp]:
                    remaining.discard(tp)
    finally:
        await reader.stop()
    return applied


class Committable(Protocol):
    """What a handler returns: the batch's outputs are handed to the producer, its state
    changes staged."""

    async def acknowledged(self) -> None:
        """Wait until every output is acknowledged by the broker."""

    async def persist(self) -> None:
        """Write the state changes to the tables and changelogs; wait for their acks."""


#: What a driven agent does with one batch of records: decide and stage; the driver
#: then waits for the batch to be on the log (``commit``) before offsets move.
BatchHandler = Callable[[Sequence[ConsumerRecord]], Awaitable[Committable]]


class Projected:
    """A stateless projection's batch: in Postgres when its handler returns, nothing left to
    wait for (what a ``BatchHandler`` of a projection returns)."""

    async def acknowledged(self) -> None:
        return None

    async def persist(self) -> None:
        return None


@dataclass
class DrivenAgent:
    name: str
    topics: list[str]
    tables: list[Table]
    handle: BatchHandler


@dataclass
class DriverSettings:
    bootstrap: str
    app_id: str
    batch_max: int = 500
    commit_interval_s: float = 1.0
    session_timeout_s: float = 10.0
    #: how long the broker holds a fetch when there is nothing to read (it answers as soon as
    #: there is): a long poll, so idle agents cost nothing and busy ones wait for nothing
    fetch_wait_ms: int = 500


class _Listener(ConsumerRebalanceListener):  # type: ignore[misc]
    def __init__(self, runner: _Runner) -> None:
        self._runner = runner

    async def on_partitions_revoked(self, revoked: list[TopicPartition]) -> None:
        await self._runner.revoked(set(revoked))

    async def on_partitions_assigned(self, assigned: list[TopicPartition]) -> None:
        await self._runner.assigned(set(assigned))


@dataclass
class _Runner:
    agent: DrivenAgent
    settings: DriverSettings
    consumer: AIOKafkaConsumer | None = None
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    generation: int = 0
    owned: set[TopicPartition] = field(default_factory=set)
    #: next offsets handled and on the log, not yet committed
    handled: dict[TopicPartition, int] = field(default_factory=dict)
    last_commit: float = 0.0
    stopping: bool = False
    #: seconds per step since the last summary: fetch (waiting in getmany), decide, outputs,
    #: changelog, commit, lock (waiting for a rebalance listener); and records, batches
    spent: dict[str, float] = field(default_factory=dict)
    last_summary: float = field(default_factory=time.monotonic)
    #: consumer lag per owned partition, for Prometheus (streams/lag.py)
    lag: AgentLag | None = None

    async def revoked(self, revoked: set[TopicPartition]) -> None:
        async with self.lock:  # the batch in flight finishes first
            self.generation += 1
            await self._commit()
            log.info("agent %s: partitions revoked %s", self.agent.name, _names(revoked))

    async def assigned(self, assigned: set[TopicPartition]) -> None:
        async with self.lock:
            self.generation += 1
            before = {tp.partition for tp in self.owned}
            now = {tp.partition for tp in assigned}
            started = time.monotonic()
            for table in self.agent.tables:
                table.forget(before - now)
            restored = await restore(self.settings.bootstrap, self.agent.tables, now - before)
            self.owned = set(assigned)
            if self.lag is not None:
                self.lag.forget(set(self.lag.partitions) - self.owned)
                self.lag.assigned(self.owned)
            self.handled = {tp: o for tp, o in self.handled.items() if tp in assigned}
            log.info(
                "agent %s: partitions assigned %s; restored %d changelog records of partitions %s in %.2fs",
                self.agent.name,
                _names(assigned),
                restored,
                sorted(now - before),
                time.monotonic() - started,
            )

    async def run(self) -> None:
        s = self.settings
        self.consumer = consumer = AIOKafkaConsumer(
            bootstrap_servers=s.bootstrap,
            group_id=f"{s.app_id}-{self.agent.name}",
            client_id=f"{s.app_id}-{self.agent.name}",
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            session_timeout_ms=int(s.session_timeout_s * 1000),
            heartbeat_interval_ms=int(min(3.0, s.session_timeout_s / 3) * 1000),
            fetch_max_wait_ms=s.fetch_wait_ms,
            max_poll_records=s.batch_max,
        )
        self.lag = AgentLag(self.agent.name, consumer.highwater)
        consumer.subscribe(topics=self.agent.topics, listener=_Listener(self))
        await consumer.start()
        self.last_commit = time.monotonic()
        try:
            while not self.stopping:
                generation = self.generation
                t0 = time.perf_counter()
                got = await consumer.getmany(timeout_ms=200, max_records=s.batch_max)
                t1 = time.perf_counter()
                async with self.lock:
                    self._spend("fetch", t1 - t0)
                    self._spend("lock", time.perf_counter() - t1)
                    if got:
                        await self._handle(generation, got)
                    if time.monotonic() - self.last_commit >= s.commit_interval_s:
                        t2 = time.perf_counter()
                        await self._commit()
                        self._spend("commit", time.perf_counter() - t2)
                    self.lag.idle()
                self._summarize()
        finally:
            async with self.lock:
                await self._commit()
            self.lag.forget(list(self.lag.partitions))
            await consumer.stop()

    async def _handle(self, generation: int, got: dict[TopicPartition, list[ConsumerRecord]]) -> None:
        assert self.consumer is not None
        if generation != self.generation or any(tp not in self.owned for tp in got):
            # fetched across a rebalance: handle them in the new assignment, from their offsets
            for tp, records in got.items():
                if tp in self.consumer.assignment():
                    self.consumer.seek(tp, records[0].offset)
            return
        records = [record for tp in sorted(got, key=lambda t: (t.topic, t.partition)) for record in got[tp]]
        name = self.agent.name
        with tracing.span(f"{name} batch", root=True, agent=name, records=len(records)):
            t0 = time.perf_counter()
            batch = await self.agent.handle(records)  # each input's span links to this one
            t1 = time.perf_counter()
            await batch.acknowledged()
            t2 = time.perf_counter()
            await batch.persist()
            t3 = time.perf_counter()
        metrics.STREAMS_BATCH_RECORDS.labels(name).observe(len(records))
        for step, seconds in (("decide", t1 - t0), ("outputs", t2 - t1), ("changelog", t3 - t2)):
            metrics.STREAMS_BATCH_SECONDS.labels(name, step).observe(seconds)
            self._spend(step, seconds)
        self._spend("records", len(records))
        self._spend("batches", 1)
        log.debug(
            "agent %s: %d records: decide %.1f ms, outputs acked %.1f ms, changelog %.1f ms",
            name,
            len(records),
            (t1 - t0) * 1e3,
            (t2 - t1) * 1e3,
            (t3 - t2) * 1e3,
        )
        for tp, tp_records in got.items():
            self.handled[tp] = tp_records[-1].offset + 1
            if self.lag is not None:
                self.lag.handled(tp, tp_records[-1].offset + 1, tp_records[-1].timestamp)

    def _spend(self, what: str, amount: float) -> None:
        self.spent[what] = self.spent.get(what, 0.0) + amount

    def _summarize(self, every_s: float = 10.0) -> None:
        """Every ``every_s`` with work done, one INFO line: where this agent's time went."""
        now = time.monotonic()
        if now - self.last_summary < every_s:
            return
        spent, self.spent, elapsed, self.last_summary = self.spent, {}, now - self.last_summary, now
        if not spent.get("records"):
            return
        steps = ", ".join(
            f"{k} {spent.get(k, 0.0):.2f}s" for k in ("fetch", "lock", "decide", "outputs", "changelog", "commit")
        )
        log.info(
            "agent %s: %d records in %d batches in the last %.1fs; %s",
            self.agent.name,
            spent["records"],
            spent["batches"],
            elapsed,
            steps,
        )

    async def _commit(self) -> None:
        self.last_commit = time.monotonic()
        if not self.handled or self.consumer is None:
            return
        offsets = {tp: o for tp, o in self.handled.items() if tp in self.owned}
        self.handled.clear()
        if not offsets:
            return
        try:
            await self.consumer.commit(offsets)
        except KafkaError as exc:  # a rebalance took the partitions: their new owner re-reads
            log.warning(
                "agent %s: commit of %s failed (%r); those records will be handled again",
                self.agent.name,
                _names(set(offsets)),
                exc,
            )


def _names(tps: set[TopicPartition]) -> str:
    return ",".join(f"{tp.topic}[{tp.partition}]" for tp in sorted(tps, key=lambda t: (t.topic, t.partition)))


class Driver(Service):
    """Runs the driven agents; started after the Faust app by the Faust worker."""

    def __init__(self, settings: DriverSettings, agents: list[DrivenAgent], **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.settings = settings
        self.agents = agents
        self._producer: AIOKafkaProducer | None = None
        self._runners: list[_Runner] = []
        self._agent_tasks: list[asyncio.Task[None]] = []

    @property
    def producer(self) -> AIOKafkaProducer:
        if self._producer is None:
            raise RuntimeError("the driver has not started")
        return self._producer

    async def on_start(self) -> None:
        s = self.settings  # made here: aiokafka binds the running loop
        self._producer = AIOKafkaProducer(
            bootstrap_servers=s.bootstrap,
            client_id=f"{s.app_id}-driver",
            acks="all",
            enable_idempotence=True,
            linger_ms=2,
            max_batch_size=1_000_000,
            max_request_size=2_000_000,
        )
        await self.producer.start()
        await self._create_changelogs()
        for agent in self.agents:
            for table in agent.tables:
                table.bind(self.producer)
        self._runners = [_Runner(agent, self.settings) for agent in self.agents]
        self._agent_tasks = [
            asyncio.create_task(self._supervise(r), name=f"agent-{r.agent.name}") for r in self._runners
        ]

    async def _supervise(self, runner: _Runner) -> None:
        try:
            await runner.run()
        except asyncio.CancelledError:
            raise
        except Exception:  # an agent that dies takes the worker down: a new one re-reads
            log.exception("agent %s crashed; stopping the worker", runner.agent.name)
            await self.crash(RuntimeError(f"agent {runner.agent.name} crashed"))

    async def on_stop(self) -> None:
        for runner in self._runners:
            runner.stopping = True
        if self._agent_tasks:
            _, pending = await asyncio.wait(self._agent_tasks, timeout=self.settings.session_timeout_s)
            for task in pending:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task
        await self.producer.stop()

    async def _create_changelogs(self) -> None:
        tables = [t for agent in self.agents for t in agent.tables]
        admin = AIOKafkaAdminClient(bootstrap_servers=self.settings.bootstrap, client_id="roomlog-streams-admin")
        await admin.start()
        try:
            existing = set(await admin.list_topics())
            wanted = [
                NewTopic(
                    t.changelog, t.partitions, 1, topic_configs={"cleanup.policy": "compact", "segment.ms": "600000"}
                )
                for t in tables
                if t.changelog not in existing
            ]
            if wanted:
                with contextlib.suppress(TopicAlreadyExistsError):
                    await admin.create_topics(wanted)
        finally:
            await admin.close()
