"""Real traffic on every kind of topic, for the outside-consumer contract test.

Run as a process (``python -m tests.e2e.contract_traffic --prefix P --log-dir D``) by
``tests/e2e/test_outside_consumer.py``, so that test imports nothing from roomlog. On
topics prefixed ``P`` it starts streams, a media node, the api, a recorder and an edge
agent (the test harness), then drives:

- rooms: an admin creates a room; two Python clients join, publish camera + microphone,
  receive each other's media, one subscribes at another layer, both chat, one mutes and
  unmutes and unpublishes its microphone; a recording runs and stops; both leave; the
  admin deletes the room;
- calls: two users online on sockets, one calls the other, who accepts; the caller hangs
  up; a call to an offline user is refused;
- stations: an edge agent registers, an operator opens a gate, the agent is stopped and the
  station goes offline;
- nodes: the media node stops cleanly and is marked dead.

It also fetches ``GET /v1/asyncapi.json`` from the running api (no token) and compares it
with docs/asyncapi.json. Each step waits for its observable outcome and fails loudly. The last stdout line is a JSON
object naming what was driven (room, calls, station, recording, node).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import signal
import sys
from pathlib import Path
from typing import Any

import httpx

from client import LocalTrack, Room
from client.synthetic import PatternVideoTrack, ToneAudioTrack
from producers.admin import create_topics
from producers.kafka import EventProducer
from producers.rtc import ChatMessagePosted
from producers.sessions import RecordingStarted, StationWentOffline
from producers.topics import Topics
from tests.e2e.media import Watcher, advancing
from tests.e2e.recording_stack import (
    admin_headers,
    bearer,
    create_room,
    record_headers,
    start_recording_stack,
)
from tests.e2e.recording_stack import wait_status as recording_status
from tests.harness import Infra, Service, api_token, mint_token, read_events, unique, wait_for
from tests.stations_stack import Operator, edge_service, station_token, write_config
from tests.stations_stack import wait_status as station_status

CONTRACT = Path(__file__).resolve().parents[2] / "docs" / "asyncapi.json"


async def join(base: str, room_id: str, identity: str, code: int) -> tuple[Room, Watcher]:
    ws_url = base.replace("http", "ws") + "/v1/rtc"
    token = await mint_token(base, identity, ["join", "publish", "subscribe"], room_id)
    room = await Room.connect(ws_url, token, room_id, name=identity)
    watcher = Watcher()
    watcher.attach(room)
    await room.publish(
        [
            LocalTrack(PatternVideoTrack(code, width=320, height=180, fps=15), f"{identity}-cam", "camera"),
            LocalTrack(ToneAudioTrack(), f"{identity}-mic", "microphone"),
        ]
    )
    return room, watcher


async def room_traffic(infra: Infra, topics: Topics, base: str, client: httpx.AsyncClient) -> dict[str, Any]:
    room_id = unique("contract-")
    admin = await admin_headers(base)
    await create_room(client, room_id, admin)
    (alice, alice_sees), (bob, bob_sees) = [await join(base, room_id, n, c) for n, c in (("alice", 11), ("bob", 22))]
    try:
        await wait_for(
            lambda: advancing(alice_sees.video.get(22, [])) and advancing(bob_sees.video.get(11, [])),
            60,
            "alice and bob decoding each other's video",
            interval=0.5,
        )
        await bob.subscribe("alice-cam", "low")
        rec = await record_headers(base, room_id)
        r = await client.post(f"/v1/rooms/{room_id}/recordings", json={"segment_s": 2}, headers=rec)
        assert r.status_code == 201, r.text
        recording_id = r.json()["recording_id"]

        async def started() -> bool:
            events = await read_events(infra.kafka, topics.name("recording.events"))
            return any(isinstance(e, RecordingStarted) and e.recording_id == recording_id for e in events)

        await wait_for(started, 30, "RecordingStarted")
        said = [await alice.send_chat("hello from alice"), await bob.send_chat("hi alice")]
        await bob.mute("microphone")
        await bob.unmute("microphone")
        await asyncio.sleep(5)  # segments, quality samples
        r = await client.delete(f"/v1/recordings/{recording_id}", headers=rec)
        assert r.status_code == 202, r.text
        await recording_status(client, recording_id, rec, "completed", 60)
        await alice.unpublish("alice-mic")
        await bob.leave()
    finally:
        alice_sees.stop()
        bob_sees.stop()
        for room in (alice, bob):
            with contextlib.suppress(Exception):
                await asyncio.wait_for(room.close(), 10)
    r = await client.delete(f"/v1/rooms/{room_id}", headers=admin)
    assert r.status_code == 202, r.text

    async def chat_posted() -> bool:
        events = await read_events(infra.kafka, topics.name("rtc.facts"))
        return len([e for e in events if isinstance(e, ChatMessagePosted) and e.room_id == room_id]) == len(said)

    await wait_for(chat_posted, 15, "both chat messages as facts")
    return {"room_id": room_id, "recording_id": recording_id}


async def call_traffic(base: str, client: httpx.AsyncClient) -> dict[str, Any]:
    cal, dee = unique("cal"), unique("dee")
    cal_token = await mint_token(base, cal, ["join"])
    dee_token = await mint_token(base, dee, ["join"])
    async with Operator(base, cal_token) as caller, Operator(base, dee_token) as callee:
        await asyncio.sleep(1)  # both sessions opened (presence online)

        async def call(who: str) -> str:
            r = await client.post("/v1/calls", json={"callee": who}, headers=bearer(cal_token))
            assert r.status_code == 201, r.text
            return str(r.json()["call_id"])

        first = await call(dee)
        await callee.wait(lambda m: m.get("type") == "call-incoming" and m.get("call_id") == first, 15, "ringing")
        await callee.send({"type": "call-accept", "call_id": first})
        await caller.wait(lambda m: m.get("type") == "call-accepted" and m.get("call_id") == first, 15, "accepted")
        await caller.send({"type": "call-hangup", "call_id": first})
        await callee.wait(lambda m: m.get("type") == "call-ended" and m.get("call_id") == first, 15, "ended")
        second = await call(unique("nobody"))
        await caller.wait(lambda m: m.get("type") == "call-refused" and m.get("call_id") == second, 15, "refused")
    return {"call_ids": [first, second]}


async def station_traffic(base: str, client: httpx.AsyncClient, log_dir: Path, services: list[Service]) -> str:
    station = unique("st")
    token = await station_token(base, station)
    config = write_config(
        log_dir / "edge.toml", station_id=station, api=base, token=token, state_dir=log_dir / "edge-state"
    )
    agent = edge_service(config, log_dir).start()
    services.append(agent)
    operator = await api_token(client, "op", ["station_control"])
    await station_status(client, operator, station, "online", 30, agent)
    r = await client.post(
        f"/v1/stations/{station}/gates/g1/open",
        json={"command_id": unique("cmd"), "wait_s": 10},
        headers=bearer(operator),
    )
    assert r.status_code == 200 and r.json()["status"] == "succeeded", r.text
    agent.stop()
    await station_status(client, operator, station, "offline", 60)
    return station


async def run(prefix: str, log_dir: Path) -> dict[str, Any]:
    infra = Infra.from_env()
    topics = Topics(prefix)
    await create_topics(infra.kafka, prefix, quiet=True)
    services: list[Service] = []
    try:
        async with EventProducer(infra.kafka, client_id="contract-traffic") as producer:
            base, _ = await start_recording_stack(infra, topics, prefix, producer, services, log_dir)
            node = services[1]
            assert node.module == "media_node", [s.module for s in services]
            async with httpx.AsyncClient(base_url=base, timeout=30) as client:
                served = await client.get("/v1/asyncapi.json")  # no token
                assert served.status_code == 200 and served.headers["etag"], served.text[:300]
                out: dict[str, Any] = {"served_contract_is_the_file": served.text == CONTRACT.read_text()}
                out |= await room_traffic(infra, topics, base, client)
                out |= await call_traffic(base, client)
                out["station_id"] = await station_traffic(base, client, log_dir, services)
            node.stop()
            node_id = node.env["ROOMLOG_NODE_NODE_ID"]

            async def node_dead() -> bool:
                events = await read_events(infra.kafka, topics.name("node.facts"))
                return any(getattr(e, "node_id", None) == node_id and e.type == "NodeMarkedDead" for e in events)

            await wait_for(node_dead, 20, "NodeMarkedDead for the stopped node")
            offline = await read_events(infra.kafka, topics.name("station.events"))
            assert any(isinstance(e, StationWentOffline) and e.station_id == out["station_id"] for e in offline)
            return out | {"prefix": prefix, "node_id": node_id}
    finally:
        for service in reversed(services):
            service.stop(timeout=10)


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.e2e.contract_traffic", description=__doc__)
    parser.add_argument("--prefix", required=True)
    parser.add_argument("--log-dir", type=Path, required=True)
    args = parser.parse_args()
    args.log_dir.mkdir(parents=True, exist_ok=True)
    # SIGTERM (the test timing out) unwinds like an error: the services are stopped
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    result = asyncio.run(run(args.prefix, args.log_dir))
    print(json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
