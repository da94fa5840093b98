"""The signaling socket over a raw WebSocket (not the SDK): documented errors for bad
input, connections that survive them, and no intent written for a refused message."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx
import pytest
import websockets
from websockets.exceptions import ConnectionClosed

from producers.kafka import EventProducer
from producers.rtc import JoinRequested, LeaveRequested, PublishRequested, RoomPlaced
from producers.topics import Topics
from tests.harness import (
    API_SECRET,
    Infra,
    Service,
    api_service,
    free_port,
    http_ready,
    node_service,
    read_events,
    streams_ready,
    streams_service,
    unique,
)


@pytest.fixture
async def gateway(
    infra: Infra, topics: Topics, prefix: str, producer: EventProducer, services: list[Service], tmp_path: Path
) -> str:
    worker = streams_service(infra, prefix, tmp_path).start()
    node = node_service(infra, prefix, tmp_path, unique("node-")).start()
    port = free_port()
    api = api_service(infra, prefix, tmp_path, port).start()
    services += [worker, node, api]
    await streams_ready(producer, infra, topics, worker)
    await http_ready(f"http://127.0.0.1:{port}/healthz", api)
    return f"127.0.0.1:{port}"


async def mint(base: str, identity: str, grants: list[str], room: str | None) -> str:
    async with httpx.AsyncClient() as client:
        r = await client.post(
            f"http://{base}/v1/tokens",
            headers={"X-API-Secret": API_SECRET},
            json={"identity": identity, "grants": grants, "room": room},
        )
        assert r.status_code == 201, r.text
        return str(r.json()["token"])


async def ask(ws: Any, message: dict[str, Any] | str) -> dict[str, Any]:
    await ws.send(message if isinstance(message, str) else json.dumps(message))
    reply: dict[str, Any] = json.loads(await ws.recv())
    return reply


async def test_bad_input_is_refused_and_writes_nothing(gateway: str, infra: Infra, topics: Topics) -> None:
    room = unique("sig-")
    url = f"ws://{gateway}/v1/rtc"

    # a bad token: closed with 4001 before anything is read
    async with websockets.connect(f"{url}?token=nope") as ws:
        assert (json.loads(await ws.recv()))["code"] == "unauthorized"
        with pytest.raises(ConnectionClosed) as closed:
            await ws.recv()
        assert closed.value.rcvd is not None and closed.value.rcvd.code == 4001

    viewer = await mint(gateway, "viewer", ["join", "subscribe"], room)
    async with websockets.connect(f"{url}?token={viewer}") as ws:
        assert (await ask(ws, "{not json"))["code"] == "invalid_message"
        assert (await ask(ws, {"type": "teleport", "request_id": "r1"})) == {
            "type": "error",
            "code": "unknown_type",
            "message": "unknown message type 'teleport'",
            "request_id": "r1",
        }
        assert (await ask(ws, {"type": "join", "request_id": "r2"}))["code"] == "invalid_message"
        assert (
            await ask(
                ws,
                {
                    "type": "publish",
                    "request_id": "r3",
                    "sdp": "v=0",
                    "tracks": [{"source_id": "cam", "kind": "camera", "mid": "0"}],
                },
            )
        )["code"] == "not_joined"
        other = await ask(ws, {"type": "join", "room": unique("other-"), "request_id": "r4"})
        assert (other["code"], other["request_id"]) == ("forbidden", "r4")
        assert (await ask(ws, {"type": "ping", "request_id": "p1"})) == {"type": "pong", "request_id": "p1"}

        joined = await ask(ws, {"type": "join", "room": room, "request_id": "j1", "name": "Viewer"})
        assert joined["type"] == "joined" and joined["request_id"] == "j1" and joined["room"] == room
        assert joined["peer_id"] and joined["peers"] == [] and joined["ice_servers"] == []
        assert (await ask(ws, {"type": "join", "room": room}))["code"] == "already_joined"
        refused = await ask(
            ws,
            {
                "type": "publish",
                "request_id": "r5",
                "sdp": "v=0\r\n",
                "tracks": [{"source_id": "cam", "kind": "camera", "mid": "0"}],
            },
        )
        assert (refused["code"], refused["request_id"]) == ("forbidden", "r5")

    publisher = await mint(gateway, "pub", ["join", "publish", "subscribe"], room)
    async with websockets.connect(f"{url}?token={publisher}") as ws:
        assert (await ask(ws, {"type": "join", "room": room}))["type"] == "joined"
        garbage = await ask(
            ws,
            {
                "type": "publish",
                "request_id": "r6",
                "sdp": "this is not sdp",
                "tracks": [{"source_id": "cam", "kind": "camera", "mid": "0"}],
            },
        )
        assert (garbage["code"], garbage["request_id"]) == ("invalid_sdp", "r6")
        wrong_kind = await ask(
            ws, {"type": "publish", "sdp": "v=0\r\n", "tracks": [{"source_id": "cam", "kind": "hologram", "mid": "0"}]}
        )
        assert wrong_kind["code"] == "invalid_message"
        # still usable after every refusal
        assert (await ask(ws, {"type": "ping"}))["type"] == "pong"
        left = await ask(ws, {"type": "leave", "request_id": "bye"})
        assert left["type"] == "left"

    async with websockets.connect(f"{url}?token={viewer}", max_size=None) as ws:
        await ws.send(json.dumps({"type": "ping", "pad": "x" * (65 * 1024)}))
        with pytest.raises(ConnectionClosed) as closed:
            await ws.recv()
        assert closed.value.rcvd is not None and closed.value.rcvd.code == 1009

    intents = [
        e
        for e in await read_events(infra.kafka, topics.name("rtc.intents"))
        if getattr(e, "room_id", None) == room and not isinstance(e, RoomPlaced)
    ]
    # only what was allowed: two joins, the viewer's dropped socket, the publisher's leave
    assert [type(e).__name__ for e in intents] == ["JoinRequested", "ConnectionLost", "JoinRequested", "LeaveRequested"]
    assert not [e for e in intents if isinstance(e, PublishRequested)]
    assert isinstance(intents[0], JoinRequested) and intents[0].correlation_id == "j1"
    assert isinstance(intents[3], LeaveRequested) and intents[3].correlation_id == "bye"
