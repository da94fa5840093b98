"""Ticks on demand: the ticker writes a ``Tick`` only to a partition where an agent has a
deadline due, the tick drives the decision, and an idle worker writes none."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from typing import Any

from producers.catalog import decode
from producers.envelope import Event, utcnow
from producers.fields import Grant
from producers.media import NodeHeartbeat
from producers.rtc import ConnectionLost, JoinRequested, PeerLeft, Tick
from producers.sessions import SessionOpened
from streams.app import Worker, build
from streams.keyed import KeyedAgent
from streams.outputs import Outputs
from streams.registry import RegistryConfig, RegistryState, handle, next_deadline
from streams.settings import StreamsSettings


class FakeProducer:
    def __init__(self) -> None:
        self.sent: list[tuple[str, bytes | None, int | None]] = []

    async def send(
        self, topic: str, value: bytes | None, key: Any = None, partition: int | None = None, *_: Any, **__: Any
    ) -> asyncio.Future[None]:
        self.sent.append((topic, value, partition))
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        future.set_result(None)
        return future


class FaustProducer:
    """``faust.App.producer.send(topic, key, value, partition, timestamp, headers)``."""

    def __init__(self, into: FakeProducer) -> None:
        self.into = into

    async def send(self, topic: str, key: Any, value: bytes | None, partition: int | None, *_: Any) -> None:
        await self.into.send(topic, value, key, partition)


class FakeApp:
    def __init__(self, producer: FakeProducer) -> None:
        self.producer = FaustProducer(producer)


def worker() -> tuple[Worker, FakeProducer]:
    w = build(StreamsSettings(project_to_postgres=False, disconnect_grace_s=30))
    producer = FakeProducer()
    w.driver._producer = producer  # type: ignore[assignment]
    w.app = FakeApp(producer)  # type: ignore[assignment]
    for agent in w.keyed:
        agent.table.bind(producer)  # type: ignore[arg-type]
    return w, producer


def agent(w: Worker, tick_topic: str) -> KeyedAgent[Any]:
    return next(a for a in w.keyed if a.tick_topic == tick_topic)


async def feed(w: Worker, a: KeyedAgent[Any], partition: int, *events: Event) -> list[Event]:
    batch = w.batch()
    before = len(w.driver.producer.sent)  # type: ignore[attr-defined]
    for event in events:
        await a.on_input(batch, event, partition)
    await batch.acknowledged()
    await batch.persist()
    sent = w.driver.producer.sent[before:]  # type: ignore[attr-defined]
    return [decode(v) for t, v, _ in sent if v is not None and "changelog" not in t]


def ticks(sent: list[tuple[str, bytes | None, int | None]]) -> list[tuple[str, int | None]]:
    return [(t, p) for t, v, p in sent if v is not None and isinstance(decode(v), Tick)]


async def test_an_idle_worker_writes_no_tick() -> None:
    w, producer = worker()
    assert {a.tick_topic for a in w.keyed} >= {"rtc.intents", "media.nodes", "session.events", "call.events"}
    await w.tick()
    await w.tick()
    assert producer.sent == []


async def test_a_pending_grace_period_ticks_only_its_partition_until_decided() -> None:
    w, producer = worker()
    rooms = agent(w, "rtc.intents")
    t0 = utcnow() - timedelta(seconds=31)
    join = JoinRequested.new(
        room_id="r1", peer_id="p1", identity="u1", session_id="s1", gateway_id="gw", grants=[Grant.JOIN]
    )
    lost = ConnectionLost.new(room_id="r1", peer_id="p1", session_id="s1")
    await feed(w, rooms, 2, join.model_copy(update={"occurred_at": t0}), lost.model_copy(update={"occurred_at": t0}))
    assert rooms.due(t0 + timedelta(seconds=29)) == []
    assert rooms.due(t0 + timedelta(seconds=30)) == [2]

    producer.sent.clear()
    await w.tick()
    assert ticks(producer.sent) == [("rtc.intents", 2)]
    tick = decode(producer.sent[0][1] or b"")
    assert isinstance(tick, Tick)

    out = await feed(w, rooms, 2, tick)
    assert [(e.peer_id, e.reason) for e in out if isinstance(e, PeerLeft)] == [("p1", "disconnect-timeout")]
    # the room is empty now: its next deadline is the empty timeout (300 s), not due
    assert rooms.due(tick.now) == []
    producer.sent.clear()
    await w.tick()
    assert ticks(producer.sent) == []


async def test_a_session_ttl_ticks_the_users_partition() -> None:
    w, producer = worker()
    users = agent(w, "session.events")
    t0 = utcnow() - timedelta(seconds=91)
    opened = SessionOpened.new(user_id="alice", session_id="s1", gateway_id="gw", name="Alice")
    await feed(w, users, 1, opened.model_copy(update={"occurred_at": t0}))
    assert users.due(t0 + timedelta(seconds=89)) == []
    producer.sent.clear()
    await w.tick()
    assert ticks(producer.sent) == [("session.events", 1)]


def test_registry_deadline_allows_two_promised_intervals_of_an_idle_node() -> None:
    cfg = RegistryConfig(node_timeout_s=5)
    t0 = utcnow()
    idle = NodeHeartbeat.new(node_id="n1", started_at=t0, interval_s=15.0).model_copy(update={"occurred_at": t0})
    state, _ = handle(None, idle, cfg)
    assert next_deadline(state, cfg) == t0 + timedelta(seconds=30)
    state, out = handle(state, Tick.new(now=t0 + timedelta(seconds=29)), cfg)
    assert out.items == []
    busy = NodeHeartbeat.new(node_id="n1", started_at=t0, interval_s=1.0).model_copy(
        update={"occurred_at": t0 + timedelta(seconds=1)}
    )
    state, _ = handle(state, busy, cfg)
    assert next_deadline(state, cfg) == t0 + timedelta(seconds=6)
    state, out = handle(state, Tick.new(now=t0 + timedelta(seconds=6)), cfg)
    assert [o.event.type for o in out.items] == ["NodeMarkedDead"]
    assert next_deadline(state, cfg) is None
    assert next_deadline(RegistryState(), cfg) is None


def test_heartbeat_promises_the_idle_interval_only_while_idle() -> None:
    from media_node.heartbeat import Heartbeat

    beat = Heartbeat(None, "media.nodes", "n1", "", 1.0, 15.0)  # type: ignore[arg-type]
    assert beat.next_interval() == 15.0
    beat.peers = 1
    assert beat.next_interval() == 1.0


async def test_deadlines_are_rebuilt_from_the_restored_state_and_cost_no_changelog() -> None:
    import json

    w, producer = worker()
    rooms = agent(w, "rtc.intents")
    t0 = utcnow() - timedelta(seconds=31)
    join = JoinRequested.new(
        room_id="r1", peer_id="p1", identity="u1", session_id="s1", gateway_id="gw", grants=[Grant.JOIN]
    )
    lost = ConnectionLost.new(room_id="r1", peer_id="p1", session_id="s1")
    await feed(w, rooms, 3, join.model_copy(update={"occurred_at": t0}), lost.model_copy(update={"occurred_at": t0}))
    changelog = [(t, v, p) for t, v, p in producer.sent if t.endswith("-changelog")]
    # one state table per agent, no timer table: the only changelog written is the rooms table's
    assert {t for t, _, _ in changelog} == {rooms.table.changelog}

    # another worker takes partition 3 over: it restores the rooms table and knows the deadline
    other, _ = worker()
    restored = agent(other, "rtc.intents")
    for _, value, partition in changelog:
        assert partition is not None
        restored.table.restore_entry(partition, "r1", None if value is None else json.loads(value))
    assert restored.due(t0 + timedelta(seconds=29)) == []
    assert restored.due(t0 + timedelta(seconds=30)) == [3]
    restored.table.forget({3})
    assert restored.due(t0 + timedelta(seconds=30)) == []


def test_an_agent_wired_the_older_way_is_served_by_the_ticker() -> None:
    """``KeyedAgent(model, table, timers, ...)`` + ``Worker.agent(...)`` (how agents were
    wired before deadlines were derived) still builds, and the ticker ticks its first topic."""
    from streams.driver import Table
    from streams.user_state import UserState

    w, _ = worker()
    older = KeyedAgent(
        UserState,
        Table("x", "x-changelog", 4),
        Table("x-timers", "x-timers-changelog", 4),
        key_of=lambda e: str(getattr(e, "user_id", "")) or None,
        decide=lambda state, event, key: (state, Outputs(event, key, event.occurred_at)),
        deadline=lambda state: None,
    )
    w.driver.agents.append(w.agent("x", ["station.events"], [older.table], older.on_input))
    assert any(a is older for a in w.keyed) and older.tick_topic == "station.events"
