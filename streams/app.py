"""The streams worker: a Faust worker hosting the agents that read inputs, call the pure
decisions and write outputs.

Every agent runs on a plain aiokafka consumer driven by ``streams/driver.py`` (why:
that module's docstring), one consumer group ``<app_id>-<agent>`` each:
- ``rooms``: ``rtc.intents`` + ``media.results`` → room table → facts, notifications, node
  commands, placement requests. Handles ticks for rooms whose grace/empty deadlines passed.
- ``registry``: ``media.nodes`` → node registry table → node facts, placements.
- ``users``: ``session.events`` → user table → presence facts, call requests past the rate
  limit, rings and call notices for the user's sessions (``streams/users.py``).
- ``calls``: ``call.events`` → call table → call facts, p2p rooms (``streams/calls.py``).
- ``recordings``: ``recording.intents`` + ``recording.events`` + ``rtc.facts`` → recording
  table → recording facts, recorder commands, ``recording`` notices (``streams/recordings.py``).
- ``quality``: ``quality.samples`` + ``rtc.facts`` → quality windows and a mirror of each
  room → ``QualityDecided``/``EncodingsChanged`` on ``quality.facts``, ``SetLayer``/``SetPaused``
  to the node, ``quality``/``encodings`` notifications (``streams/quality_agent.py``).
- ``projection``: ``rtc.facts`` → Postgres rows; ``presence-projection``: ``presence.facts``
  → the Postgres ``presence`` table (stateless, idempotent writes).

Every stateful agent (rooms, registry, users, calls, recordings, stations) is a ``KeyedAgent``
(``streams/keyed.py``). Tables are restored from ``<app_id>-<table>-changelog``. A Faust
timer runs the ticker: a ``Tick`` only to the partitions where an agent's timer is due
(docs/events.md, "Ticks"); the Faust worker starts and stops the driver, handles signals
and logs.

Payloads are roomlog JSON (``producers.catalog``), not Faust models. Anything that
does not parse goes to ``<topic>.dlq`` with the reason in headers; the agent goes on.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, TextIO

import faust
from aiokafka.structs import ConsumerRecord
from sqlalchemy.ext.asyncio import AsyncEngine

from db.engine import make_engine
from observability import metrics, tracing
from producers.catalog import decode, encode
from producers.envelope import Event, utcnow
from producers.errors import DecodeError
from producers.kafka import dead_letter_headers, trace_headers
from producers.rtc import Tick
from producers.topics import Topics, spec
from streams import calls as call_decision
from streams import recordings as recording_decision
from streams import registry as registry_decision
from streams import rooms as room_decision
from streams import stations_agent
from streams import users as user_decision
from streams.batch import Batch
from streams.call_state import CallState
from streams.decision import RoomConfig
from streams.driver import DrivenAgent, Driver, DriverSettings, Projected, Table
from streams.keyed import KeyedAgent, by_field
from streams.presence_projection import project_presence
from streams.projection import project
from streams.quality import QualityConfig
from streams.quality_agent import QualityAgent
from streams.quality_projection import QualityProjection
from streams.recording_projection import project_recordings
from streams.room_state import RoomState
from streams.settings import StreamsSettings
from streams.user_state import UserState

log = logging.getLogger(__name__)
#: per-record counter children, looked up once per (topic, type)
INPUTS = metrics.children(metrics.STREAMS_INPUTS)


@dataclass
class Worker:
    """The app, the driver of the stateful agents, and everything they share."""

    app: faust.App
    driver: Driver
    settings: StreamsSettings
    topics: Topics
    room_config: RoomConfig
    registry_config: registry_decision.RegistryConfig
    #: The stateful agents, each on the one ``KeyedAgent`` shape; the ticker serves their timers.
    keyed: list[KeyedAgent[Any]] = field(default_factory=list)
    engine: AsyncEngine | None = None
    trace: TextIO | None = None

    def batch(self) -> Batch:
        return Batch(self.driver.producer, self.topics)

    async def dead_letter(self, batch: Batch, record: ConsumerRecord, exc: DecodeError) -> None:
        metrics.STREAMS_DEAD_LETTERS.labels(record.topic, exc.reason).inc()
        log.warning("dead letter topic=%s offset=%s reason=%s", record.topic, record.offset, exc.reason)
        await batch.send_raw(
            f"{record.topic}.dlq",
            record.key,
            record.value,
            dead_letter_headers(record.topic, record.partition, record.offset, exc),
        )

    async def parsed(self, batch: Batch, records: Sequence[ConsumerRecord]) -> list[tuple[int, Event]]:
        """Decode a batch; dead-letter what does not parse."""
        out: list[tuple[int, Event]] = []
        for record in records:
            try:
                event = decode(record.value)
            except DecodeError as exc:
                await self.dead_letter(batch, record, exc)
                continue
            INPUTS(record.topic, event.type).inc()
            if self.trace is not None:
                self.trace.write(f"{record.topic} {record.partition} {record.offset} {event.event_id}\n")
            out.append((record.partition, event))
        return out

    def agent(
        self,
        name: str,
        logical: Sequence[str],
        tables: list[Table],
        on_input: Callable[[Batch, Event, int], Awaitable[None]],
    ) -> DrivenAgent:
        """A driven agent: decode each record, hand it to ``on_input``, return the batch. A
        ``KeyedAgent``'s ``on_input`` also gets the ticker's service (``keyed_agent``)."""
        keyed = getattr(on_input, "__self__", None)
        if isinstance(keyed, KeyedAgent) and all(k is not keyed for k in self.keyed):
            if keyed.tick_topic is None and logical:
                keyed.tick_topic = logical[0]
            self.keyed.append(keyed)

        async def handle(records: Sequence[ConsumerRecord]) -> Batch:
            batch = self.batch()
            if not tracing.enabled():
                for partition, event in await self.parsed(batch, records):
                    await on_input(batch, event, partition)
                return batch
            for record in records:  # one span per input, in the trace its record carries
                for partition, event in await self.parsed(batch, [record]):
                    with tracing.consumed(f"{name} decide {event.type}", record.headers, event, topic=record.topic):
                        await on_input(batch, event, partition)
            return batch

        return DrivenAgent(name, [self.topics.name(t) for t in logical], tables, handle)

    # --- projections (stateless: a batch is in Postgres when its handler returns) ---

    def _engine(self) -> AsyncEngine:
        if self.engine is None:
            self.engine = make_engine(self.settings.database_url)
        return self.engine

    async def project_facts(self, records: Sequence[ConsumerRecord]) -> Projected:
        events = []
        for record in records:
            try:
                events.append(decode(record.value))
            except DecodeError:
                continue  # the facts topic is written by streams only
        await project(self._engine(), events)
        metrics.STREAMS_PROJECTED.inc(len(events))
        return Projected()

    async def project_presence(self, records: Sequence[ConsumerRecord]) -> Projected:
        await project_presence(self._engine(), [r.value for r in records if r.value is not None])
        return Projected()

    # --- ticks ------------------------------------------------------------------

    async def tick(self) -> None:
        """One ``Tick`` to each partition where some agent has a deadline at or before now
        (``KeyedAgent.due``); none anywhere else (docs/events.md, "Ticks")."""
        now = utcnow()
        targets = sorted({(agent.tick_topic, p) for agent in self.keyed if agent.tick_topic for p in agent.due(now)})
        for logical, partition in targets:
            tick = Tick.new(now=now, occurred_at=now)
            await self.app.producer.send(
                self.topics.name(logical), b"tick", encode(tick), partition, None, trace_headers(tick)
            )
            metrics.STREAMS_TICKS.labels(logical).inc()

    def keyed_agent(self, name: str, logical: Sequence[str], agent: KeyedAgent[Any]) -> None:
        """Run ``agent`` on ``logical`` (co-partitioned input topics) and let the ticker serve
        it (its ticks go to ``agent.tick_topic``, by default the first of ``logical``)."""
        self.driver.agents.append(self.agent(name, logical, [agent.table], agent.on_input))


def build(settings: StreamsSettings) -> Worker:
    topics = Topics(settings.topic_prefix)
    # Faust runs the worker (signals, logging, the ticker); it reads no topic itself
    app = faust.App(
        settings.app_id,
        broker=f"kafka://{settings.kafka_bootstrap}",
        store="memory://",
        datadir=f"{settings.data_dir}/{settings.app_id}",
        topic_replication_factor=1,
        web_enabled=False,
        producer_linger=0.002,
    )

    def table(name: str, logical: str) -> Table:
        return Table(name, f"{settings.app_id}-{name}-changelog", spec(logical).partitions)

    driver = Driver(
        DriverSettings(
            bootstrap=settings.kafka_bootstrap,
            app_id=settings.app_id,
            batch_max=settings.batch_max,
            commit_interval_s=settings.commit_interval_s,
            session_timeout_s=settings.session_timeout_s,
        ),
        [],
    )
    worker = Worker(
        app=app,
        driver=driver,
        settings=settings,
        topics=topics,
        room_config=RoomConfig(disconnect_grace_s=settings.disconnect_grace_s, command_ttl_s=settings.command_ttl_s),
        registry_config=registry_decision.RegistryConfig(node_timeout_s=settings.node_timeout_s),
    )
    _room_and_registry_agents(worker, table)
    _user_and_call_agents(worker, table)
    _recording_agent(worker, table)
    stations_agent.install(worker, table)  # stations, station-viewers, station-projection
    quality = QualityAgent(
        table("quality", "quality.samples"),
        table("quality-rooms", "quality.samples"),
        QualityConfig(),
        settings.command_ttl_s,
        topics.name("quality.samples"),
        topics.name("rtc.facts"),
    )
    driver.agents.append(quality.driven(worker))

    if settings.project_to_postgres:
        driver.agents.append(DrivenAgent("projection", [topics.name("rtc.facts")], [], worker.project_facts))
        driver.agents.append(
            DrivenAgent("presence-projection", [topics.name("presence.facts")], [], worker.project_presence)
        )
        history = QualityProjection(worker._engine, settings.quality_retention_days, settings.quality_prune_batch)
        driver.agents.append(DrivenAgent("quality-projection", [topics.name("quality.samples")], [], history.samples))
        driver.agents.append(
            DrivenAgent("quality-decisions-projection", [topics.name("quality.facts")], [], history.decisions)
        )

        @app.timer(settings.quality_retention_interval_s)  # type: ignore[untyped-decorator]
        async def quality_retention() -> None:
            await history.prune()

    @app.timer(settings.tick_interval_s)  # type: ignore[untyped-decorator]
    async def ticker() -> None:
        await worker.tick()

    return worker


def _room_and_registry_agents(worker: Worker, table: Callable[[str, str], Table]) -> None:
    """The room agent (``streams/rooms.py``) and the node registry (``streams/registry.py``)."""
    room_config, registry_config = worker.room_config, worker.registry_config
    rooms = KeyedAgent(
        RoomState,
        table("rooms", "rtc.intents"),
        key_of=by_field("room_id"),
        decide=lambda state, event, key: room_decision.handle(state, event, room_config, room_id=key),
        deadline=lambda state: room_decision.next_deadline(state, room_config),
        tick_topic="rtc.intents",
    )
    # the room agent reads intents and media-node results: same key, same partition count,
    # so a room's inputs from both topics land in the same partition number (co-partitioned)
    worker.keyed_agent("rooms", ["rtc.intents", "media.results"], rooms)
    # one registry state for the cluster, on the single partition of media.nodes
    registry = KeyedAgent(
        registry_decision.RegistryState,
        table("node-registry", "media.nodes"),
        key_of=lambda e: registry_decision.REGISTRY_KEY,
        decide=lambda state, event, key: registry_decision.handle(state, event, registry_config),
        deadline=lambda state: registry_decision.next_deadline(state, registry_config),
        tick_topic="media.nodes",
    )
    worker.keyed_agent("registry", ["media.nodes"], registry)


def _recording_agent(worker: Worker, table: Callable[[str, str], Table]) -> None:
    """The recording agent: ``recording.intents`` + ``recording.events`` + ``rtc.facts`` →
    recording facts, recorder commands, ``recording`` notices (``streams/recordings.py``)."""
    config = recording_decision.RecordingConfig()
    recordings = KeyedAgent(
        recording_decision.RoomRecordings,
        table("recordings", "recording.intents"),
        key_of=by_field("room_id"),
        decide=lambda state, event, key: recording_decision.handle(state, event, config, room_id=key),
        deadline=lambda state: None,
    )
    worker.keyed_agent("recordings", ["recording.intents", "recording.events", "rtc.facts"], recordings)
    if worker.settings.project_to_postgres:

        async def project(records: Sequence[ConsumerRecord]) -> Projected:
            events = []
            for record in records:
                try:
                    events.append(decode(record.value))
                except DecodeError:
                    continue  # the recorder's topic dead-letters in the recording agent
            await project_recordings(worker._engine(), events)
            return Projected()

        worker.driver.agents.append(
            DrivenAgent(
                "recording-projection",
                [worker.topics.name(t) for t in ("recording.facts", "recording.events")],
                [],
                project,
            )
        )


def _user_and_call_agents(worker: Worker, table: Callable[[str, str], Table]) -> None:
    """The users agent (``session.events``) and the call agent (``call.events``)."""
    settings = worker.settings
    user_config = user_decision.UserConfig(
        presence_ttl_s=settings.presence_ttl_s,
        resume_grace_s=settings.disconnect_grace_s,
        max_call_attempts=settings.call_max_attempts,
        attempt_window_s=settings.call_attempt_window_s,
    )
    call_config = call_decision.CallConfig(ring_timeout_s=settings.call_ring_timeout_s)
    users = KeyedAgent(
        UserState,
        table("users", "session.events"),
        key_of=by_field("user_id"),
        decide=lambda state, event, key: user_decision.handle(state, event, user_config, user_id=key),
        deadline=lambda state: user_decision.next_deadline(state, user_config),
        tick_topic="session.events",
    )
    calls = KeyedAgent(
        CallState,
        table("calls", "call.events"),
        key_of=by_field("call_id"),
        decide=lambda state, event, key: call_decision.handle(state, event, call_config, call_id=key),
        deadline=lambda state: call_decision.next_deadline(state, call_config),
        tick_topic="call.events",
    )
    worker.keyed_agent("users", ["session.events"], users)
    worker.keyed_agent("calls", ["call.events"], calls)
