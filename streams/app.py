"""The Faust app: agents that read inputs, call the pure decisions, write outputs.

Agents
- ``rooms``: ``rtc.intents`` + ``media.results`` → room table → facts, notifications, node commands,
  placement requests. Handles ticks for rooms whose grace/empty deadlines passed.
- ``registry``: ``media.nodes`` → node registry table → node facts, placements.
- ``projection``: ``rtc.facts`` → Postgres rows.
- ``users``: ``session.events`` → user table → presence facts, call requests past the rate
  limit, rings and call notices for the user's sessions (``streams/users.py``).
- ``calls``: ``call.events`` → call table → call facts, p2p rooms (``streams/calls.py``).
- ``presence-projection``: ``presence.facts`` → the Postgres ``presence`` table.
- a timer publishes a ``Tick`` to every partition of ``rtc.intents``, ``media.nodes``,
  ``session.events`` and ``call.events``.

Payloads are roomlog JSON (``producers.catalog``), not Faust models. Anything that
does not parse goes to ``<topic>.dlq`` with the reason in headers; the agent goes on.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, TextIO

import faust
from sqlalchemy.ext.asyncio import AsyncEngine

from db.engine import make_engine
from observability import metrics
from producers.catalog import decode, encode
from producers.envelope import Event, utcnow
from producers.errors import DecodeError
from producers.kafka import dead_letter_headers, trace_headers
from producers.rtc import Tick
from producers.topics import ROOM_PARTITIONS, Topics, spec
from streams import calls as call_decision
from streams import faust_fixes
from streams import registry as registry_decision
from streams import rooms as room_decision
from streams import users as user_decision
from streams.batch import Batch
from streams.call_state import CallState
from streams.decision import RoomConfig
from streams.keyed import KeyedAgent
from streams.presence_projection import project_presence
from streams.projection import project
from streams.room_state import RoomState
from streams.settings import StreamsSettings
from streams.user_state import UserState

log = logging.getLogger(__name__)


def _raw_topic(app: faust.App, name: str, partitions: int) -> faust.TopicT:
    return app.topic(name, key_type=bytes, value_type=bytes, key_serializer="raw",
                     value_serializer="raw", partitions=partitions)


def _json_table(app: faust.App, name: str, partitions: int) -> faust.Table[str, Any]:
    """A table of plain JSON values (dicts) keyed by str; changelog serializer json."""
    table: faust.Table[str, Any] = app.Table(name, default=None, partitions=partitions, key_type=str)  # type: ignore[assignment]
    return table


@dataclass
class Worker:
    """The app and everything its agents share."""

    app: faust.App
    settings: StreamsSettings
    topics: Topics
    room_table: faust.Table[str, Any]
    timer_table: faust.Table[str, Any]
    registry_table: faust.Table[str, Any]
    room_config: RoomConfig
    registry_config: registry_decision.RegistryConfig
    users: KeyedAgent[UserState] | None = None
    calls: KeyedAgent[CallState] | None = None
    engine: AsyncEngine | None = None
    trace: TextIO | None = None

    def batch(self) -> Batch:
        return Batch(self.app.producer, self.topics)

    async def dead_letter(self, batch: Batch, message: Any, exc: DecodeError) -> None:
        metrics.STREAMS_DEAD_LETTERS.labels(message.topic, exc.reason).inc()
        log.warning("dead letter topic=%s offset=%s reason=%s", message.topic, message.offset, exc.reason)
        await batch.send_raw(f"{message.topic}.dlq", message.key, message.value,
                             dead_letter_headers(message.topic, message.partition, message.offset, exc))

    def traced(self, message: Any, event: Event) -> None:
        metrics.STREAMS_INPUTS.labels(message.topic, event.type).inc()
        if self.trace is not None:
            self.trace.write(f"{message.topic} {message.partition} {message.offset} {event.event_id}\n")

    async def parsed(self, batch: Batch, events: Sequence[Any]) -> list[tuple[int, Event]]:
        """Decode a batch; dead-letter what does not parse."""
        out: list[tuple[int, Event]] = []
        for item in events:
            message = item.message
            try:
                event = decode(message.value)
            except DecodeError as exc:
                await self.dead_letter(batch, message, exc)
                continue
            self.traced(message, event)
            out.append((message.partition, event))
        return out

    # --- rooms -------------------------------------------------------------------

    def load_room(self, batch: Batch, room_id: str) -> RoomState | None:
        raw = batch.get(self.room_table, room_id)
        if raw is None:
            return None
        return raw if isinstance(raw, RoomState) else RoomState.model_validate(raw)

    def store_room(self, batch: Batch, room_id: str, before: RoomState | None, after: RoomState | None,
                   partition: int) -> None:
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
        due = [room_id for room_id, at in self._timers(batch, partition).items()
               if datetime.fromisoformat(at) <= tick.now]
        for room_id in sorted(due):
            state = self.load_room(batch, room_id)
            new_state, out = room_decision.handle(state, tick, self.room_config, room_id=room_id)
            await batch.emit(out.items)
            self.store_room(batch, room_id, state, new_state, partition)

    # --- node registry -----------------------------------------------------------

    async def on_registry_input(self, batch: Batch, event: Event, partition: int) -> None:
        raw = batch.get(self.registry_table, registry_decision.REGISTRY_KEY)
        state = registry_decision.RegistryState.model_validate(raw) if raw else None
        new_state, out = registry_decision.handle(state, event, self.registry_config)
        await batch.emit(out.items)
        if out.items or not isinstance(event, Tick):
            batch.put(self.registry_table, registry_decision.REGISTRY_KEY, partition, new_state.model_dump(mode="json"))

    async def tick(self) -> None:
        now = utcnow()
        for logical in ("rtc.intents", "media.nodes", "session.events", "call.events"):
            for partition in range(spec(logical).partitions):
                tick = Tick.new(now=now, occurred_at=now)
                await self.app.producer.send(self.topics.name(logical), b"tick", encode(tick),
                                             partition, None, trace_headers(tick))


def build(settings: StreamsSettings) -> Worker:
    faust_fixes.install()
    topics = Topics(settings.topic_prefix)
    app = faust.App(
        settings.app_id,
        broker=f"kafka://{settings.kafka_bootstrap}",
        store="memory://",
        datadir=f"{settings.data_dir}/{settings.app_id}",
        topic_partitions=ROOM_PARTITIONS,
        topic_replication_factor=1,
        processing_guarantee="at_least_once",
        web_enabled=False,
        broker_commit_interval=settings.commit_interval_s,
        broker_session_timeout=settings.session_timeout_s,
        broker_heartbeat_interval=min(3.0, settings.session_timeout_s / 3),
        table_standby_replicas=0,
        consumer_auto_offset_reset="earliest",
        stream_wait_empty=False,
        producer_linger=0.002,
        # a burst of joins makes hundreds of notifications; 16 KB batches stall on round trips
        producer_max_batch_size=1_000_000,
        topic_allow_declare=True,
    )
    worker = Worker(
        app=app, settings=settings, topics=topics,
        room_table=_json_table(app, "rooms", ROOM_PARTITIONS),
        timer_table=_json_table(app, "room-timers", ROOM_PARTITIONS),
        registry_table=_json_table(app, "node-registry", spec("media.nodes").partitions),
        room_config=RoomConfig(disconnect_grace_s=settings.disconnect_grace_s,
                                             command_ttl_s=settings.command_ttl_s),
        registry_config=registry_decision.RegistryConfig(node_timeout_s=settings.node_timeout_s),
    )
    _user_and_call_agents(worker)
    # the room agent reads intents and media-node results: same key, same partition count,
    # so a room's inputs from both topics land in the same partition number (co-partitioned)
    room_inputs = app.topic(topics.name("rtc.intents"), topics.name("media.results"), key_type=bytes,
                            value_type=bytes, key_serializer="raw", value_serializer="raw")
    nodes = _raw_topic(app, topics.name("media.nodes"), spec("media.nodes").partitions)
    facts = _raw_topic(app, topics.name("rtc.facts"), spec("rtc.facts").partitions)

    @app.agent(room_inputs, name="rooms")
    async def rooms_agent(stream: Any) -> None:
        async for events in stream.take_events(settings.batch_max, within=settings.batch_within_s):
            batch = worker.batch()
            with metrics.STREAMS_HANDLE_SECONDS.labels("rooms").time():
                for partition, event in await worker.parsed(batch, events):
                    await worker.on_room_input(batch, event, partition)
                await batch.commit()

    @app.agent(nodes, name="registry")
    async def registry_agent(stream: Any) -> None:
        async for events in stream.take_events(settings.batch_max, within=settings.batch_within_s):
            batch = worker.batch()
            for partition, event in await worker.parsed(batch, events):
                await worker.on_registry_input(batch, event, partition)
            await batch.commit()

    if settings.project_to_postgres:
        @app.agent(facts, name="projection")
        async def projection_agent(stream: Any) -> None:
            async for batch in stream.take(500, within=0.05):
                events = []
                for raw in batch:
                    try:
                        events.append(decode(raw))
                    except DecodeError:
                        continue  # the facts topic is written by streams only
                if worker.engine is None:
                    worker.engine = make_engine(settings.database_url)
                await project(worker.engine, events)
                metrics.STREAMS_PROJECTED.inc(len(events))

    if settings.project_to_postgres:
        presence_facts = _raw_topic(app, topics.name("presence.facts"), spec("presence.facts").partitions)

        @app.agent(presence_facts, name="presence-projection")
        async def presence_projection_agent(stream: Any) -> None:
            async for raw_batch in stream.take(500, within=0.05):
                if worker.engine is None:
                    worker.engine = make_engine(settings.database_url)
                await project_presence(worker.engine, raw_batch)

    @app.timer(settings.tick_interval_s)  # type: ignore[untyped-decorator]
    async def ticker() -> None:
        await worker.tick()

    return worker


def _user_and_call_agents(worker: Worker) -> None:
    """The users agent (``session.events``) and the call agent (``call.events``)."""
    app, settings = worker.app, worker.settings
    user_config = user_decision.UserConfig(
        presence_ttl_s=settings.presence_ttl_s, resume_grace_s=settings.disconnect_grace_s,
        max_call_attempts=settings.call_max_attempts, attempt_window_s=settings.call_attempt_window_s)
    call_config = call_decision.CallConfig(ring_timeout_s=settings.call_ring_timeout_s)
    user_parts, call_parts = spec("session.events").partitions, spec("call.events").partitions
    worker.users = KeyedAgent(
        UserState, _json_table(app, "users", user_parts), _json_table(app, "user-timers", user_parts),
        key_of=lambda e: str(getattr(e, "user_id", "")) or None,
        decide=lambda state, event, key: user_decision.handle(state, event, user_config, user_id=key),
        deadline=lambda state: user_decision.next_deadline(state, user_config))
    worker.calls = KeyedAgent(
        CallState, _json_table(app, "calls", call_parts), _json_table(app, "call-timers", call_parts),
        key_of=lambda e: str(getattr(e, "call_id", "")) or None,
        decide=lambda state, event, key: call_decision.handle(state, event, call_config, call_id=key),
        deadline=lambda state: call_decision.next_deadline(state, call_config))
    _keyed(worker, "session.events", "users", worker.users)
    _keyed(worker, "call.events", "calls", worker.calls)


def _keyed(worker: Worker, logical: str, name: str, agent: KeyedAgent[Any]) -> None:
    settings = worker.settings
    topic = _raw_topic(worker.app, worker.topics.name(logical), spec(logical).partitions)

    @worker.app.agent(topic, name=name)
    async def keyed_agent(stream: Any) -> None:
        async for events in stream.take_events(settings.batch_max, within=settings.batch_within_s):
            batch = worker.batch()
            with metrics.STREAMS_HANDLE_SECONDS.labels(name).time():
                for partition, event in await worker.parsed(batch, events):
                    await agent.on_input(batch, event, partition)
                await batch.commit()
