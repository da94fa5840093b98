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

Tables are restored from ``<app_id>-<table>-changelog``. A Faust timer publishes a
``Tick`` to every partition of ``rtc.intents``, ``media.nodes``, ``session.events``,
``call.events`` and ``station.events``; the Faust worker starts and stops the driver, handles signals and logs.

Payloads are roomlog JSON (``producers.catalog``), not Faust models. Anything that
does not parse goes to ``<topic>.dlq`` with the reason in headers; the agent goes on.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import TextIO

import faust
from aiokafka.structs import ConsumerRecord
from sqlalchemy.ext.asyncio import AsyncEngine

from db.engine import make_engine
from observability import metrics
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
from streams.keyed import KeyedAgent
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


@dataclass
class Worker:
    """The app, the driver of the stateful agents, and everything they share."""

    app: faust.App
    driver: Driver
    settings: StreamsSettings
    topics: Topics
    room_table: Table
    timer_table: Table
    registry_table: Table
    room_config: RoomConfig
    registry_config: registry_decision.RegistryConfig
    users: KeyedAgent[UserState] | None = None
    calls: KeyedAgent[CallState] | None = None
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
            metrics.STREAMS_INPUTS.labels(record.topic, event.type).inc()
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
        """A driven agent: decode each record, hand it to ``on_input``, return the batch."""

        async def handle(records: Sequence[ConsumerRecord]) -> Batch:
            batch = self.batch()
            for partition, event in await self.parsed(batch, records):
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

    # --- rooms -------------------------------------------------------------------

    def load_room(self, batch: Batch, room_id: str) -> RoomState | None:
        raw = batch.get(self.room_table, room_id)
        if raw is None:
            return None
        return raw if isinstance(raw, RoomState) else RoomState.model_validate(raw)

    def store_room(
        self, batch: Batch, room_id: str, before: RoomState | None, after: RoomState | None, partition: int
    ) -> None:
        if after is None or after is before:
            return
        batch.put(self.room_table, room_id, partition, after)
        deadline = room_decision.next_deadline(after, self.room_config)
        timers = self._timers(batch, partition)
        wanted = deadline.isoformat() if deadline else None
        if timers.get(room_id) != wanted:
            timers = dict(timers)
            if wanted is None:
                timers.pop(room_id, None)
            else:
                timers[room_id] = wanted
            batch.put(self.timer_table, f"p{partition}", partition, timers)

    def _timers(self, batch: Batch, partition: int) -> dict[str, str]:
        raw: dict[str, str] | None = batch.get(self.timer_table, f"p{partition}")
        return raw or {}

    async def on_room_input(self, batch: Batch, event: Event, partition: int) -> None:
        if isinstance(event, Tick):
            await self.on_room_tick(batch, event, partition)
            return
        room_id = str(getattr(event, "room_id"))  # noqa: B009
        state = self.load_room(batch, room_id)
        new_state, out = room_decision.handle(state, event, self.room_config)
        await batch.emit(out.items)
        self.store_room(batch, room_id, state, new_state, partition)

    async def on_room_tick(self, batch: Batch, tick: Tick, partition: int) -> None:
        due = [
            room_id for room_id, at in self._timers(batch, partition).items() if datetime.fromisoformat(at) <= tick.now
        ]
        for room_id in sorted(due):
            state = self.load_room(batch, room_id)
            new_state, out = room_decision.handle(state, tick, self.room_config, room_id=room_id)
            await batch.emit(out.items)
            self.store_room(batch, room_id, state, new_state, partition)

    # --- node registry -----------------------------------------------------------

    async def on_registry_input(self, batch: Batch, event: Event, partition: int) -> None:
        raw = batch.get(self.registry_table, registry_decision.REGISTRY_KEY)
        state = (
            raw
            if isinstance(raw, registry_decision.RegistryState) or raw is None
            else registry_decision.RegistryState.model_validate(raw)
        )
        new_state, out = registry_decision.handle(state, event, self.registry_config)
        await batch.emit(out.items)
        if out.items or not isinstance(event, Tick):
            batch.put(self.registry_table, registry_decision.REGISTRY_KEY, partition, new_state)

    async def tick(self) -> None:
        now = utcnow()
        for logical in ("rtc.intents", "media.nodes", "session.events", "call.events", "station.events"):
            for partition in range(spec(logical).partitions):
                tick = Tick.new(now=now, occurred_at=now)
                await self.app.producer.send(
                    self.topics.name(logical), b"tick", encode(tick), partition, None, trace_headers(tick)
                )


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
        room_table=table("rooms", "rtc.intents"),
        timer_table=table("room-timers", "rtc.intents"),
        registry_table=table("node-registry", "media.nodes"),
        room_config=RoomConfig(disconnect_grace_s=settings.disconnect_grace_s, command_ttl_s=settings.command_ttl_s),
        registry_config=registry_decision.RegistryConfig(node_timeout_s=settings.node_timeout_s),
    )
    # the room agent reads intents and media-node results: same key, same partition count,
    # so a room's inputs from both topics land in the same partition number (co-partitioned)
    driver.agents.append(
        worker.agent(
            "rooms", ["rtc.intents", "media.results"], [worker.room_table, worker.timer_table], worker.on_room_input
        )
    )
    driver.agents.append(worker.agent("registry", ["media.nodes"], [worker.registry_table], worker.on_registry_input))
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


def _recording_agent(worker: Worker, table: Callable[[str, str], Table]) -> None:
    """The recording agent: ``recording.intents`` + ``recording.events`` + ``rtc.facts`` →
    recording facts, recorder commands, ``recording`` notices (``streams/recordings.py``)."""
    config = recording_decision.RecordingConfig()
    recordings = KeyedAgent(
        recording_decision.RoomRecordings,
        table("recordings", "recording.intents"),
        table("recording-timers", "recording.intents"),
        key_of=lambda e: str(getattr(e, "room_id", "")) or None,
        decide=lambda state, event, key: recording_decision.handle(state, event, config, room_id=key),
        deadline=lambda state: None,
    )
    worker.driver.agents.append(
        worker.agent(
            "recordings",
            ["recording.intents", "recording.events", "rtc.facts"],
            [recordings.table, recordings.timers],
            recordings.on_input,
        )
    )
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
    worker.users = users = KeyedAgent(
        UserState,
        table("users", "session.events"),
        table("user-timers", "session.events"),
        key_of=lambda e: str(getattr(e, "user_id", "")) or None,
        decide=lambda state, event, key: user_decision.handle(state, event, user_config, user_id=key),
        deadline=lambda state: user_decision.next_deadline(state, user_config),
    )
    worker.calls = calls = KeyedAgent(
        CallState,
        table("calls", "call.events"),
        table("call-timers", "call.events"),
        key_of=lambda e: str(getattr(e, "call_id", "")) or None,
        decide=lambda state, event, key: call_decision.handle(state, event, call_config, call_id=key),
        deadline=lambda state: call_decision.next_deadline(state, call_config),
    )
    worker.driver.agents.append(worker.agent("users", ["session.events"], [users.table, users.timers], users.on_input))
    worker.driver.agents.append(worker.agent("calls", ["call.events"], [calls.table, calls.timers], calls.on_input))
