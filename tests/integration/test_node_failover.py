"""A media node that stops heartbeating is marked dead; its rooms move to a live node."""

from __future__ import annotations

from pathlib import Path

import sqlalchemy as sa

from db.engine import make_engine
from producers.fields import Grant
from producers.kafka import EventProducer
from producers.media import NodeMarkedAlive, NodeMarkedDead
from producers.rtc import JoinRequested, Notification, RoomPlaced
from producers.topics import Topics
from tests.harness import (
    Infra,
    Service,
    node_service,
    of_type,
    read_events,
    streams_ready,
    streams_service,
    unique,
    wait_for,
    wait_for_events,
)


async def node_of(infra: Infra, rooms: list[str]) -> dict[str, str | None]:
    engine = make_engine(infra.database_url)
    try:
        async with engine.connect() as conn:
            rows = (
                await conn.execute(sa.text("select room_id, node_id from rooms where room_id = any(:r)"), {"r": rooms})
            ).all()
    finally:
        await engine.dispose()
    return {room: node for room, node in rows}


async def test_dead_node_rooms_are_replaced(
    infra: Infra, topics: Topics, prefix: str, producer: EventProducer, services: list[Service], tmp_path: Path
) -> None:
    worker = streams_service(infra, prefix, tmp_path, node_timeout_s=3).start()
    services.append(worker)
    n1 = node_service(infra, prefix, tmp_path, "n1").start()
    n2 = node_service(infra, prefix, tmp_path, "n2").start()
    services += [n1, n2]
    await streams_ready(producer, infra, topics, worker)
    await wait_for_events(
        infra.kafka,
        topics.name("node.facts"),
        lambda ev: {e.node_id for e in of_type(ev, NodeMarkedAlive)} >= {"n1", "n2"},
        30,
        "both nodes alive",
    )

    rooms = [unique("fo-") for _ in range(4)]
    for i, room in enumerate(rooms):
        await producer.send(
            topics.name("rtc.intents"),
            JoinRequested.new(
                room_id=room,
                peer_id=f"p{i}",
                identity=f"u{i}",
                session_id=f"s{i}",
                gateway_id="gw-fo",
                grants=[Grant.JOIN, Grant.PUBLISH, Grant.SUBSCRIBE],
            ),
        )
    placed = await wait_for(lambda: _all_placed(infra, rooms), 30, "rooms placed in Postgres")
    assert set(placed.values()) == {"n1", "n2"}, f"placement did not spread rooms over both nodes: {placed}"

    victim = "n1"
    moved = sorted(r for r, n in placed.items() if n == victim)
    n1.kill()
    facts = await wait_for_events(
        infra.kafka,
        topics.name("rtc.facts"),
        lambda ev: {e.room_id for e in of_type(ev, RoomPlaced) if e.previous_node_id == victim} >= set(moved),
        30,
        "rooms re-placed after the node died",
    )
    dead = of_type(await read_events(infra.kafka, topics.name("node.facts")), NodeMarkedDead)
    assert [d.node_id for d in dead] == [victim] and dead[0].reason == "heartbeat-timeout"
    replaced = [e for e in of_type(facts, RoomPlaced) if e.previous_node_id == victim]
    assert {e.node_id for e in replaced} == {"n2"} and all(e.reason == "node-failed" for e in replaced)

    async def all_on_n2() -> bool:
        return set((await node_of(infra, rooms)).values()) == {"n2"}

    await wait_for(all_on_n2, 20, "Postgres shows every room on n2")
    notes = of_type(await read_events(infra.kafka, topics.name("gateway.notifications")), Notification)
    told = {n.room_id for n in notes if n.message.get("type") == "reconnect"}
    assert told == set(moved), "clients of the moved rooms were told to reconnect"


async def _all_placed(infra: Infra, rooms: list[str]) -> dict[str, str | None] | None:
    nodes = await node_of(infra, rooms)
    return nodes if len(nodes) == len(rooms) and all(nodes.values()) else None
