"""Unparseable or unknown events go to the dead-letter topic; the worker keeps going."""

from __future__ import annotations

import json
from pathlib import Path

from producers.fields import Grant
from producers.kafka import EventProducer
from producers.rtc import JoinRequested, PeerJoined
from producers.topics import Topics
from tests.harness import Infra, Service, read_topic, streams_ready, streams_service, unique, wait_for, wait_for_events


async def test_bad_payloads_are_dead_lettered(
    infra: Infra, topics: Topics, prefix: str, producer: EventProducer, services: list[Service], tmp_path: Path
) -> None:
    worker = streams_service(infra, prefix, tmp_path).start()
    services.append(worker)
    await streams_ready(producer, infra, topics, worker)

    room = unique("dlq-")
    intents = topics.name("rtc.intents")
    malformed = b'{"type": "JoinRequested", "room_id": '
    unknown = json.dumps({"type": "TeleportRequested", "event_id": "x", "room_id": room}).encode()
    invalid = json.dumps({"type": "JoinRequested", "room_id": room}).encode()  # required fields missing
    for payload in (malformed, unknown, invalid):
        await producer.send_raw(intents, payload, key=room.encode())
    good = JoinRequested.new(
        room_id=room, peer_id="p1", identity="alice", session_id="s1", gateway_id="gw", grants=[Grant.JOIN]
    )
    await producer.send(intents, good)

    await wait_for_events(
        infra.kafka,
        topics.name("rtc.facts"),
        lambda ev: any(isinstance(e, PeerJoined) and e.room_id == room for e in ev),
        30,
        "the valid join after the bad ones",
    )

    async def dead() -> list[object]:
        return await read_topic(infra.kafka, topics.dlq("rtc.intents"))

    records = await wait_for(lambda: dead(), 10, "dead letters")
    got = {r.value: dict(r.headers) for r in records}
    assert set(got) == {malformed, unknown, invalid}
    assert got[malformed]["dlq.reason"] == b"malformed-json"
    assert got[unknown]["dlq.reason"] == b"unknown-type"
    assert got[invalid]["dlq.reason"] == b"invalid-event"
    assert all(h["dlq.source"].startswith(intents.encode()) for h in got.values())
    assert worker.alive()
