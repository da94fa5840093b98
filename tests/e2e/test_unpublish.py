"""Unpublishing a source with the Python SDK: a client publishes a camera and a screen, a
second client receives both; the first unpublishes the screen. The second gets
`track-unpublished`, stops receiving the screen and keeps the camera; the log holds the
facts. Bad requests get the documented codes and write no intent."""

from __future__ import annotations

import asyncio
import contextlib
import json
from pathlib import Path
from typing import Any

import pytest
import websockets

from client import LocalTrack, Room, RoomError
from client.synthetic import PatternVideoTrack
from producers.kafka import EventProducer
from producers.media import RemoveSource
from producers.rtc import (
    RequestRejected,
    SubscriptionRemoved,
    TrackPublished,
    TrackUnpublished,
    UnpublishRequested,
)
from producers.topics import Topics
from tests.e2e.media import Watcher, advancing
from tests.harness import Infra, Service, mint_token, read_events, start_media_stack, unique, wait_for

CAMERA, SCREEN = 41, 42  # the codes in the sharer's two pattern tracks


@pytest.mark.timeout(240)
async def test_unpublishing_a_source_removes_it_for_the_other_client(
    infra: Infra, topics: Topics, prefix: str, producer: EventProducer, services: list[Service], tmp_path: Path
) -> None:
    _, base = await start_media_stack(infra, topics, prefix, producer, services, tmp_path)
    room_id = unique("unpub-")
    ws_url = base.replace("http", "ws") + "/v1/rtc"
    sharer_token = await mint_token(base, "sharer", ["join", "publish", "subscribe"], room_id)
    viewer_token = await mint_token(base, "viewer", ["join", "publish", "subscribe"], room_id)

    # not joined: refused by the gateway
    async with websockets.connect(f"{ws_url}?token={viewer_token}") as ws:
        await ws.send(json.dumps({"type": "unpublish", "source_id": f"screen-{CAMERA}", "request_id": "nj"}))
        reply = json.loads(await ws.recv())
        assert (reply["type"], reply["code"], reply["request_id"]) == ("error", "not_joined", "nj"), reply

    sharer = await Room.connect(ws_url, sharer_token, room_id, name="Sharer")
    viewer = await Room.connect(ws_url, viewer_token, room_id, name="Viewer")
    watcher = Watcher()
    watcher.attach(viewer)
    messages: list[dict[str, Any]] = []

    async def record(kind: str, payload: object) -> None:
        if kind in ("track-published", "track-unpublished") and isinstance(payload, dict):
            messages.append(payload)

    viewer.on(record)
    sharer_messages: list[dict[str, Any]] = []

    async def record_sharer(kind: str, payload: object) -> None:
        if kind == "track-unpublished" and isinstance(payload, dict):
            sharer_messages.append(payload)

    sharer.on(record_sharer)
    try:
        await sharer.publish(
            [
                LocalTrack(PatternVideoTrack(CAMERA), "cam-s", "camera"),
                LocalTrack(PatternVideoTrack(SCREEN), "screen-s", "screen"),
            ]
        )
        assert sharer.peer_id is not None

        def sees_both() -> bool:
            return advancing(watcher.video.get(CAMERA, [])) and advancing(watcher.video.get(SCREEN, []))

        await wait_for(sees_both, 60, "the viewer decoding the sharer's camera and screen", interval=0.5)
        assert {(sharer.peer_id, "cam-s"), (sharer.peer_id, "screen-s")} <= set(viewer.remote)

        # bad requests: the documented codes, nothing written
        with pytest.raises(RoomError) as refused:
            await viewer.unpublish("screen-s")
        assert refused.value.code == "forbidden"
        with pytest.raises(RoomError) as refused:
            await sharer.unpublish("no-such-source")
        assert refused.value.code == "source_not_found"

        # the sharer unpublishes its screen
        answer = await sharer.unpublish("screen-s")
        assert (answer["type"], answer["source_id"]) == ("unpublished", "screen-s"), answer

        async def told() -> bool:
            return any(m["type"] == "track-unpublished" for m in messages)

        await wait_for(told, 15, "the viewer being told the screen is unpublished", interval=0.2)
        assert [m for m in messages if m["type"] == "track-unpublished"] == [
            {"type": "track-unpublished", "peer_id": sharer.peer_id, "source_id": "screen-s"}
        ]
        assert sharer_messages == [], "the unpublishing peer is not told its own track-unpublished"
        assert (sharer.peer_id, "screen-s") not in viewer.remote
        assert (sharer.peer_id, "cam-s") in viewer.remote

        # the screen's frames stop, the camera's go on
        await asyncio.sleep(1.5)
        screen_before, camera_before = len(watcher.video[SCREEN]), len(watcher.video[CAMERA])
        await asyncio.sleep(3)
        assert len(watcher.video[SCREEN]) == screen_before, "screen frames still arrive"
        assert len(watcher.video[CAMERA]) >= camera_before + 30, "the camera stopped too"

        # unpublishing it again: refused by streams (the gateway cannot tell a live source
        # from a declared one), recorded as a RequestRejected fact
        with pytest.raises(RoomError) as refused:
            await sharer.unpublish("screen-s")
        assert refused.value.code == "source_not_found"
    finally:
        watcher.stop()
        for room in (sharer, viewer):
            with contextlib.suppress(Exception):
                await room.close()

    intents = [
        e
        for e in await read_events(infra.kafka, topics.name("rtc.intents"))
        if isinstance(e, UnpublishRequested) and e.room_id == room_id
    ]
    # only the sharer's own declared source got through the gateway (twice: see above)
    assert [(e.peer_id, e.source_id) for e in intents] == [(sharer.peer_id, "screen-s")] * 2
    facts = [
        e for e in await read_events(infra.kafka, topics.name("rtc.facts")) if getattr(e, "room_id", "") == room_id
    ]
    unpublished = [e for e in facts if isinstance(e, TrackUnpublished)]
    assert [(e.peer_id, e.source_id, e.causation_id) for e in unpublished] == [
        (sharer.peer_id, "screen-s", intents[0].event_id)
    ]
    removed = [e for e in facts if isinstance(e, SubscriptionRemoved) and e.source_id == "screen-s"]
    assert [e.peer_id for e in removed] == [viewer.peer_id]
    assert [(e.request_type, e.code) for e in facts if isinstance(e, RequestRejected)] == [
        ("UnpublishRequested", "source_not_found")
    ]
    published = [e.track.source_id for e in facts if isinstance(e, TrackPublished)]
    assert sorted(published) == ["cam-s", "screen-s"]
    commands = [
        e
        for e in await read_events(infra.kafka, topics.name("media.commands"))
        if isinstance(e, RemoveSource) and e.room_id == room_id
    ]
    assert [(c.peer_id, c.source_id, c.causation_id) for c in commands] == [
        (sharer.peer_id, "screen-s", intents[0].event_id)
    ]
