"""A real Faust worker turns join/leave intents into room state and Postgres rows."""

from __future__ import annotations

from pathlib import Path

import sqlalchemy as sa

from db.engine import make_engine
from producers.fields import Grant
from producers.kafka import EventProducer
from producers.rtc import JoinRequested, LeaveRequested, PeerJoined, PeerLeft, RoomCreated
from producers.topics import Topics
from tests.harness import (
    Infra,
    Service,
    of_type,
    read_events,
    streams_ready,
    streams_service,
    unique,
    wait_for,
    wait_for_events,
)

GRANTS = [Grant.JOIN, Grant.PUBLISH, Grant.SUBSCRIBE]


def join(room: str, peer: str, identity: str) -> JoinRequested:
    return JoinRequested.new(
        room_id=room, peer_id=peer, identity=identity, session_id=f"s-{peer}", gateway_id="gw-test", grants=GRANTS
    )


async def members(infra: Infra, rooms: list[str]) -> dict[str, dict[str, str]]:
    engine = make_engine(infra.database_url)
    try:
        async with engine.connect() as conn:
            rows = (
                await conn.execute(
                    sa.text("select room_id, peer_id, state from room_members where room_id = any(:rooms)"),
                    {"rooms": rooms},
                )
            ).all()
    finally:
        await engine.dispose()
    out: dict[str, dict[str, str]] = {r: {} for r in rooms}
    for room_id, peer_id, state in rows:
        out[room_id][peer_id] = state
    return out


async def test_three_rooms_and_idempotent_rejoin(
    infra: Infra, topics: Topics, prefix: str, producer: EventProducer, services: list[Service], tmp_path: Path
) -> None:
    worker = streams_service(infra, prefix, tmp_path).start()
    services.append(worker)
    await streams_ready(producer, infra, topics, worker)

    rooms = [unique("room-") for _ in range(3)]
    intents = topics.name("rtc.intents")
    # room 0: alice and bob join, bob leaves; room 1: carol; room 2: dave joins, leaves,
    # and the very same join (same event_id) is delivered again.
    dave = join(rooms[2], "p-dave", "dave")
    for intent in [
        join(rooms[0], "p-alice", "alice"),
        join(rooms[0], "p-bob", "bob"),
        LeaveRequested.new(room_id=rooms[0], peer_id="p-bob"),
        join(rooms[1], "p-carol", "carol"),
        dave,
        LeaveRequested.new(room_id=rooms[2], peer_id="p-dave"),
        dave,
    ]:
        await producer.send(intents, intent)

    def settled(events: list[object]) -> bool:
        return (
            len([e for e in of_type(events, PeerLeft) if e.room_id in rooms]) >= 2
            and len([e for e in of_type(events, PeerJoined) if e.room_id in rooms]) >= 4
        )

    facts = await wait_for_events(infra.kafka, topics.name("rtc.facts"), settled, 30, "room facts")
    mine = [f for f in facts if getattr(f, "room_id", None) in rooms]
    assert sorted(f.room_id for f in of_type(mine, RoomCreated)) == sorted(rooms)
    joined = {(f.room_id, f.peer_id) for f in of_type(mine, PeerJoined)}
    assert joined == {(rooms[0], "p-alice"), (rooms[0], "p-bob"), (rooms[1], "p-carol"), (rooms[2], "p-dave")}
    # the duplicate join produced nothing new
    assert len([f for f in of_type(mine, PeerJoined) if f.peer_id == "p-dave"]) == 1

    expected = {
        rooms[0]: {"p-alice": "joined", "p-bob": "left"},
        rooms[1]: {"p-carol": "joined"},
        rooms[2]: {"p-dave": "left"},
    }

    async def projected() -> bool:
        return await members(infra, rooms) == expected

    await wait_for(projected, 20, "Postgres rows")
    # deliver the same join once more, then a marker in the same room (same partition, so
    # handled after it): dave must still be out.
    await producer.send(intents, dave)
    await producer.send(intents, join(rooms[2], "p-eve", "eve"))
    await wait_for_events(
        infra.kafka,
        topics.name("rtc.facts"),
        lambda ev: any(isinstance(e, PeerJoined) and e.peer_id == "p-eve" for e in ev),
        20,
        "marker join",
    )
    expected[rooms[2]]["p-eve"] = "joined"
    await wait_for(projected, 20, "Postgres rows after the re-delivered join")
    facts = await wait_for_events(infra.kafka, topics.name("rtc.facts"), lambda ev: True, 5, "facts")
    assert len([f for f in of_type(facts, PeerJoined) if f.peer_id == "p-dave"]) == 1


async def test_dropped_connection_becomes_leave_after_grace_via_ticks(
    infra: Infra, topics: Topics, prefix: str, producer: EventProducer, services: list[Service], tmp_path: Path
) -> None:
    from producers.rtc import ConnectionLost, PeerDisconnected, ResumeRequested, Tick

    worker = streams_service(infra, prefix, tmp_path, disconnect_grace_s=2, tick_interval_s=0.5).start()
    services.append(worker)
    await streams_ready(producer, infra, topics, worker)
    room = unique("grace-")
    intents = topics.name("rtc.intents")
    await producer.send(intents, join(room, "p-gone", "gone"))
    await producer.send(intents, join(room, "p-back", "back"))
    await producer.send(intents, ConnectionLost.new(room_id=room, peer_id="p-gone", session_id="s-p-gone"))
    await producer.send(intents, ConnectionLost.new(room_id=room, peer_id="p-back", session_id="s-p-back"))
    await producer.send(
        intents, ResumeRequested.new(room_id=room, peer_id="p-back", session_id="s-new", gateway_id="gw-2")
    )

    facts = await wait_for_events(
        infra.kafka,
        topics.name("rtc.facts"),
        lambda ev: any(isinstance(e, PeerLeft) and e.room_id == room for e in ev),
        20,
        "leave after the grace period",
    )
    mine = [f for f in facts if getattr(f, "room_id", None) == room]
    assert {f.peer_id for f in of_type(mine, PeerDisconnected)} == {"p-gone", "p-back"}
    left = of_type(mine, PeerLeft)
    assert [(f.peer_id, f.reason) for f in left] == [("p-gone", "disconnect-timeout")]
    lost_at = next(f.occurred_at for f in of_type(mine, PeerDisconnected) if f.peer_id == "p-gone")
    assert (left[0].occurred_at - lost_at).total_seconds() >= 2
    # the decision was caused by a tick on the log
    ticks = {e.event_id for e in await read_events(infra.kafka, intents) if isinstance(e, Tick)}
    assert left[0].causation_id in ticks
    await wait_for(lambda: _members_are(infra, room, {"p-gone": "left", "p-back": "joined"}), 20, "rows")


async def _members_are(infra: Infra, room: str, expected: dict[str, str]) -> bool:
    return (await members(infra, [room]))[room] == expected
