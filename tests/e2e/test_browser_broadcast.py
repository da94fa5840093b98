"""A broadcast room: one publisher (a Python client) and viewers. A browser watching
from the room page sees the broadcaster's frames; a raw `publish` over the WebSocket
with a subscribe-only token gets the documented `forbidden` error and writes no intent."""

from __future__ import annotations

import asyncio
import contextlib
import json
from pathlib import Path
from typing import Any

import httpx
import websockets
from aiortc import RTCConfiguration, RTCPeerConnection

from client import LocalTrack, Room
from client.synthetic import PatternVideoTrack
from producers.kafka import EventProducer
from producers.rtc import JoinRequested, PublishRequested
from producers.topics import Topics
from tests.e2e.browser import chromium, open_user, start_web_stack
from tests.harness import Infra, Service, mint_token, read_events, unique, wait_for

BROADCASTER = 21


async def offer_sdp() -> str:
    pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    try:
        pc.addTransceiver("video", direction="sendonly")
        await pc.setLocalDescription(await pc.createOffer())
        return str(pc.localDescription.sdp)
    finally:
        await pc.close()


async def receive(ws: Any, kind: str, request_id: str | None = None, timeout: float = 15) -> dict[str, Any]:
    async def first() -> dict[str, Any]:
        while True:
            message: dict[str, Any] = json.loads(await ws.recv())
            if message["type"] == kind and (request_id is None or message.get("request_id") == request_id):
                return message

    return await asyncio.wait_for(first(), timeout)


async def test_broadcast_viewer_sees_the_publisher_and_cannot_publish(
    infra: Infra, topics: Topics, prefix: str, producer: EventProducer, services: list[Service], tmp_path: Path
) -> None:
    _, base = await start_web_stack(infra, topics, prefix, producer, services, tmp_path)
    room_id = unique("cast-")
    admin = await mint_token(base, "ops", ["admin"])
    async with httpx.AsyncClient() as http:
        r = await http.post(
            f"{base}/v1/rooms",
            json={"room_id": room_id, "type": "broadcast"},
            headers={"Authorization": f"Bearer {admin}"},
        )
        assert r.status_code in (201, 202), r.text
    ws_url = base.replace("http", "ws") + "/v1/rtc"
    token = await mint_token(base, "caster", ["join", "publish", "subscribe"], room_id)
    caster = await Room.connect(ws_url, token, room_id, name="Caster")
    try:
        await caster.publish([LocalTrack(PatternVideoTrack(BROADCASTER, 640, 360), "cast-cam", "camera")])

        # a browser watches from the room page
        async with chromium() as pw:
            viewer = await open_user(pw, "Viewer", 22)
            try:
                await viewer.sign_in(base)
                await viewer.page.goto(f"{base}/web/room.html?room={room_id}&view=1")
                await viewer.page.wait_for_function(
                    "window.roomlogPage && window.roomlogPage.room.state === 'connected'"
                )

                async def sees_broadcaster() -> bool:
                    tiles = [t for t in await viewer.tiles() if t["read"] and not t["local"]]
                    return any(t["read"]["code"] == BROADCASTER and t["name"] == "Caster" for t in tiles)

                await wait_for(sees_broadcaster, 60, "the viewer's page showing the broadcaster", interval=1)
                assert await viewer.page.locator(".tile.local").count() == 0, "a viewer publishes nothing"
            finally:
                await viewer.browser.close()

        # a subscribe-only viewer tries to publish over a raw socket
        viewer_token = await mint_token(base, "viewer2", ["join", "subscribe"], room_id)
        async with websockets.connect(f"{ws_url}?token={viewer_token}") as ws:
            await ws.send(json.dumps({"type": "join", "room": room_id, "name": "V2", "request_id": "j1"}))
            joined = await receive(ws, "joined", "j1")
            assert joined["room_type"] == "broadcast"
            await ws.send(
                json.dumps(
                    {
                        "type": "publish",
                        "request_id": "p1",
                        "sdp": await offer_sdp(),
                        "tracks": [{"source_id": "sneaky", "kind": "camera", "mid": "0"}],
                    }
                )
            )
            error = await receive(ws, "error", "p1")
            assert error["code"] == "forbidden", error
            await ws.send(json.dumps({"type": "ping", "request_id": "after"}))
            await receive(ws, "pong", "after")  # the socket stays open

        intents = await read_events(infra.kafka, topics.name("rtc.intents"))
        mine = [e for e in intents if getattr(e, "room_id", None) == room_id]
        assert any(isinstance(e, JoinRequested) and e.peer_id == joined["peer_id"] for e in mine)
        publishes = [e for e in mine if isinstance(e, PublishRequested)]
        assert publishes and all(e.peer_id == caster.peer_id for e in publishes), publishes
        assert not any(e.correlation_id == "p1" for e in mine)
    finally:
        with contextlib.suppress(Exception):
            await caster.close()
