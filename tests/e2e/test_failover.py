"""SIGKILL the media node a call runs on: streams re-place the room on the other node,
clients reconnect and republish by themselves, and media flows again within 10 s."""

from __future__ import annotations

import contextlib
import time
from pathlib import Path

import sqlalchemy as sa

from client import LocalTrack, Room
from client.synthetic import PatternVideoTrack, ToneAudioTrack
from db.engine import make_engine
from producers.kafka import EventProducer
from producers.rtc import RoomPlaced
from producers.topics import Topics
from tests.e2e.media import Watcher, advancing
from tests.harness import (
    Infra,
    Service,
    mint_token,
    read_events,
    start_media_stack,
    unique,
    wait_for,
)


async def room_node(infra: Infra, room_id: str) -> str | None:
    engine = make_engine(infra.database_url)
    try:
        async with engine.connect() as conn:
            row = (await conn.execute(sa.text("select node_id from rooms where room_id = :r"), {"r": room_id})).first()
    finally:
        await engine.dispose()
    return row[0] if row else None


async def test_media_resumes_on_another_node_after_sigkill(
    infra: Infra, topics: Topics, prefix: str, producer: EventProducer, services: list[Service], tmp_path: Path
) -> None:
    stack, base = await start_media_stack(infra, topics, prefix, producer, services, tmp_path, nodes=2)
    nodes = stack[1:3]

    room_id = unique("fo-")
    ws_url = base.replace("http", "ws") + "/v1/rtc"
    rooms: list[Room] = []
    watchers: list[Watcher] = []
    try:
        for code in (1, 2):
            token = await mint_token(base, f"user{code}", ["join", "publish", "subscribe"], room_id)
            room = await Room.connect(ws_url, token, room_id)
            watcher = Watcher()
            watcher.attach(room)
            rooms.append(room)
            watchers.append(watcher)
            await room.publish(
                [
                    LocalTrack(PatternVideoTrack(code), f"cam-{code}", "camera"),
                    LocalTrack(ToneAudioTrack(), f"mic-{code}", "microphone"),
                ]
            )
        await wait_for(
            lambda: advancing(watchers[0].video.get(2, [])) and advancing(watchers[1].video.get(1, [])),
            30,
            "media flowing before the kill",
        )
        first_peers = [r.peer_id for r in rooms]

        hosting = await room_node(infra, room_id)
        victim = next(n for n in nodes if n.env["ROOMLOG_NODE_NODE_ID"] == hosting)
        survivor = next(n for n in nodes if n is not victim)
        victim.kill()
        killed_at = time.monotonic()

        def flowing_again() -> bool:
            return all(
                len([t for t in w.video_at.get(other, []) if t > killed_at]) >= 15
                for w, other in zip(watchers, (2, 1), strict=True)
            )

        await wait_for(flowing_again, 10, "media flowing again after the node was killed", interval=0.2)
        recovered_in = time.monotonic() - killed_at
        assert all(r.reconnects == 1 for r in rooms)
        assert [r.peer_id for r in rooms] == first_peers, "peers were resumed, not duplicated"
        assert await room_node(infra, room_id) == survivor.env["ROOMLOG_NODE_NODE_ID"]
        print(f"media flowing again {recovered_in:.1f} s after SIGKILL")
    finally:
        for watcher in watchers:
            watcher.stop()
        for room in rooms:
            with contextlib.suppress(Exception):
                await room.close()

    moved = [
        e
        for e in await read_events(infra.kafka, topics.name("rtc.intents"))
        if isinstance(e, RoomPlaced) and e.room_id == room_id and e.previous_node_id == hosting
    ]
    assert len(moved) == 1 and moved[0].reason == "node-failed"
    engine = make_engine(infra.database_url)
    try:
        async with engine.connect() as conn:
            rows = (
                await conn.execute(
                    sa.text(
                        "select identity, count(*) from room_members "
                        "where room_id = :r and state <> 'left' group by identity"
                    ),
                    {"r": room_id},
                )
            ).all()
    finally:
        await engine.dispose()
    assert sorted(rows) == [("user1", 1), ("user2", 1)], "no duplicate peers in room state"
