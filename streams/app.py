"""The Faust app: agents that read inputs, call the pure decisions, write outputs.

Agents
- ``rooms``: ``rtc.intents`` → room table → facts, notifications, node commands,
  placement requests. Handles ticks for rooms whose grace/empty deadlines passed.
- ``registry``: ``media.nodes`` → node registry table → node facts, placements.
- ``projection``: ``rtc.facts`` → Postgres rows.
- a timer publishes a ``Tick`` to every partition of ``rtc.intents`` and ``media.nodes``.

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
from streams import registry as registry_decision
from streams import rooms as room_decision
from streams.outputs import Output
from streams.projection import project
from streams.room_state import RoomState
from streams.settings import StreamsSettings

log = logging.getLogger(__name__)


def _raw_topic(app: faust.App, name: str, partitions: int) -> faust.TopicT:
    return app.topic(name, key_type=bytes, value_type=bytes, key_serializer="raw",
                     value_serializer="raw", partitions=partitions)


def _json_table(app: faust.App, name: str, partitions: int) -> faust.Table:
    """A table of plain JSON values (dicts) keyed by str; changelog serializer json."""
    return app.Table(name, default=None, partitions=partitions, key_type=str)


@dataclass
class Worker:
    """The app and everything its agents share."""

    app: faust.App
    settings: StreamsSettings
    topics: Topics
    room_table: faust.Table
    timer_table: faust.Table
    registry_table: faust.Table
    room_config: room_decision.RoomConfig
    registry_config: registry_decision.RegistryConfig
    engine: AsyncEngine | None = None
    trace: TextIO | None = None

    async def emit(self, outputs: Sequence[Output]) -> None:
        """Hand outputs to the producer *before* the state change is written, so a
        persisted changelog entry implies its outputs were sent first (a crash in
        between re-handles the input: same ids, deduplicated downstream)."""
        for output in outputs:
            await self.app.producer.send(
                self.topics.name(output.topic), output.event.key.encode(), encode(output.event),
                output.partition, None, trace_headers(output.event))
            metrics.STREAMS_OUTPUTS.labels(output.event.type).inc()

    async def dead_letter(self, message: Any, exc: DecodeError) -> None:
        metrics.STREAMS_DEAD_LETTERS.labels(message.topic, exc.reason).inc()
        log.warning("dead letter topic=%s offset=%s reason=%s", message.topic, message.offset,
                    exc.reason)
        await self.app.producer.send(
            f"{message.topic}.dlq", message.key, message.value, None, None,
            dead_letter_headers(message.topic, message.partition, message.offset, exc))

    def traced(self, message: Any, event: Event) -> None:
        metrics.STREAMS_INPUTS.labels(message.topic, event.type).inc()
        if self.trace is not None:
            self.trace.write(f"{message.topic} {message.partition} {message.offset} "
                             f"{event.event_id}\n")

    # --- rooms -------------------------------------------------------------------

    def load_room(self, room_id: str) -> RoomState | None:
        raw = self.room_table.get(room_id)
        return RoomState.model_validate(raw) if raw else None

    def store_room(self, room_id: str, before: RoomState | None, after: RoomState | None,
                   partition: int) -> None:
        if after is None or after is before:
            return
        self.room_table[room_id] = after.model_dump(mode="json")
        deadline = room_decision.next_deadline(after, self.room_config)
        timers = self._timers(partition)
        current = timers.get(room_id)
        wanted = deadline.isoformat() if deadline else None
        if current != wanted:
            if wanted is None:
                timers.pop(room_id, None)
            else:
                timers[room_id] = wanted
            self.timer_table[f"p{partition}"] = timers

    def _timers(self, partition: int) -> dict[str, str]:
        raw: dict[str, str] | None = self.timer_table.get(f"p{partition}")
        return dict(raw) if raw else {}

    async def on_room_input(self, event: Event, partition: int) -> None:
        if isinstance(event, Tick):
            await self.on_room_tick(event, partition)
            return
        room_id = str(getattr(event, "room_id"))  # noqa: B009
        state = self.load_room(room_id)
        new_state, out = room_decision.handle(state, event, self.room_config)
        await self.emit(out.items)
        self.store_room(room_id, state, new_state, partition)

    async def on_room_tick(self, tick: Tick, partition: int) -> None:
        due = [room_id for room_id, at in self._timers(partition).items()
               if datetime.fromisoformat(at) <= tick.now]
        for room_id in sorted(due):
            state = self.load_room(room_id)
            new_state, out = room_decision.handle(state, tick, self.room_config, room_id=room_id)
            await self.emit(out.items)
            self.store_room(room_id, state, new_state, partition)

    # --- node registry -----------------------------------------------------------

    async def on_registry_input(self, event: Event) -> None:
        raw = self.registry_table.get(registry_decision.REGISTRY_KEY)
        state = registry_decision.RegistryState.model_validate(raw) if raw else None
        new_state, out = registry_decision.handle(state, event, self.registry_config)
        await self.emit(out.items)
        if out.items or not isinstance(event, Tick):
            self.registry_table[registry_decision.REGISTRY_KEY] = new_state.model_dump(mode="json")

    async def tick(self) -> None:
        now = utcnow()
        for logical in ("rtc.intents", "media.nodes"):
            for partition in range(spec(logical).partitions):
                tick = Tick.new(now=now, occurred_at=now)
                await self.app.producer.send(self.topics.name(logical), b"tick", encode(tick),
                                             partition, None, trace_headers(tick))


def build(settings: StreamsSettings) -> Worker:
    topics = Topics(settings.topic_prefix)
    app = faust.App(
        settings.app_id,
        broker=f"kafka://{settings.kafka_bootstrap}",
        store="memory://",
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
        topic_allow_declare=True,
    )
    worker = Worker(
        app=app, settings=settings, topics=topics,
        room_table=_json_table(app, "rooms", ROOM_PARTITIONS),
        timer_table=_json_table(app, "room-timers", ROOM_PARTITIONS),
        registry_table=_json_table(app, "node-registry", spec("media.nodes").partitions),
        room_config=room_decision.RoomConfig(disconnect_grace_s=settings.disconnect_grace_s,
                                             command_ttl_s=settings.command_ttl_s),
        registry_config=registry_decision.RegistryConfig(node_timeout_s=settings.node_timeout_s),
    )
    intents = _raw_topic(app, topics.name("rtc.intents"), spec("rtc.intents").partitions)
    nodes = _raw_topic(app, topics.name("media.nodes"), spec("media.nodes").partitions)
    facts = _raw_topic(app, topics.name("rtc.facts"), spec("rtc.facts").partitions)

    async def parsed(stream: faust.StreamT) -> Any:
        async for message in stream.events():
            try:
                event = decode(message.value)
            except DecodeError as exc:
                await worker.dead_letter(message.message, exc)
                continue
            worker.traced(message.message, event)
            yield message.message, event

    @app.agent(intents, name="rooms")
    async def rooms_agent(stream: faust.StreamT) -> None:
        async for message, event in parsed(stream):
            with metrics.STREAMS_HANDLE_SECONDS.labels("rooms").time():
                await worker.on_room_input(event, message.partition)

    @app.agent(nodes, name="registry")
    async def registry_agent(stream: faust.StreamT) -> None:
        async for _message, event in parsed(stream):
            await worker.on_registry_input(event)

    if settings.project_to_postgres:
        @app.agent(facts, name="projection")
        async def projection_agent(stream: faust.StreamT) -> None:
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

    @app.timer(settings.tick_interval_s)
    async def ticker() -> None:
        await worker.tick()

    return worker
