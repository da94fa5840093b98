"""In-room chat through a real gateway and streams worker: two Python SDK clients in a
room, each message reaches both with the sender's name, is a fact on the log, and bad
input gets its documented error code and writes no intent."""

from __future__ import annotations

import contextlib
import json
from pathlib import Path

import pytest
import websockets

from client import ChatMessage, Room, RoomError
from producers.fields import CHAT_MAX_CHARS
from producers.kafka import EventProducer
from producers.rtc import ChatMessagePosted, ChatMessageRequested, RequestRejected
from producers.topics import Topics
from tests.harness import (
    Infra,
    Service,
    mint_token,
    read_events,
    start_media_stack,
    unique,
    wait_for,
    wait_for_events,
)


async def test_two_clients_chat_through_the_log(
    infra: Infra, topics: Topics, prefix: str, producer: EventProducer, services: list[Service], tmp_path: Path
) -> None:
    _, base = await start_media_stack(infra, topics, prefix, producer, services, tmp_path)
    room_id = unique("chat-")
    ws_url = base.replace("http", "ws") + "/v1/rtc"
    alice_token = await mint_token(base, "alice", ["join", "publish", "subscribe"], room_id)
    bob_token = await mint_token(base, "bob", ["join", "subscribe"], room_id)
    alice = await Room.connect(ws_url, alice_token, room_id, name="Alice")
    bob = await Room.connect(ws_url, bob_token, room_id, name="Bob")
    heard: dict[str, list[ChatMessage]] = {"alice": [], "bob": []}
    alice.on(lambda kind, m: heard["alice"].append(m) if kind == "chat" else None)
    bob.on(lambda kind, m: heard["bob"].append(m) if kind == "chat" else None)
    try:
        await wait_for(lambda: bob.peer_id in alice.peers, 15, "alice to see bob")

        first = await alice.send_chat("  Hello Bob <b>&amp;</b> 👋 \n")
        assert (first.peer_id, first.identity, first.name, first.text) == (
            alice.peer_id,
            "alice",
            "Alice",
            "Hello Bob <b>&amp;</b> 👋",
        )
        reply = await bob.send_chat("hi Alice\nsecond line")

        def both_heard_both() -> bool:
            return all([m.id for m in heard[who]] == [first.id, reply.id] for who in heard)

        await wait_for(both_heard_both, 15, f"both clients to get both messages; heard {heard}")
        for who in heard:
            assert heard[who] == [first, reply]
        assert (reply.peer_id, reply.name, reply.text) == (bob.peer_id, "Bob", "hi Alice\nsecond line")
        assert first.at <= reply.at

        # bad input: the documented codes, the sockets stay usable
        for text, code in (("", "chat_empty"), (" \n\t ", "chat_empty"), ("x" * (CHAT_MAX_CHARS + 1), "chat_too_long")):
            with pytest.raises(RoomError) as refused:
                await alice.send_chat(text)
            assert refused.value.code == code
        await alice.ping()
        async with websockets.connect(f"{ws_url}?token={bob_token}") as ws:
            await ws.send(json.dumps({"type": "chat", "text": "not in the room yet", "request_id": "nj"}))
            error = json.loads(await ws.recv())
            assert (error["type"], error["code"], error["request_id"]) == ("error", "not_joined", "nj")
            await ws.send(json.dumps({"type": "chat", "text": 42, "request_id": "num"}))
            error = json.loads(await ws.recv())
            assert (error["code"], error["request_id"]) == ("invalid_message", "num")
        # a message exactly at the limit goes through
        longest = await bob.send_chat("é" * CHAT_MAX_CHARS)
        await wait_for(lambda: longest.id in [m.id for m in heard["alice"]], 15, "alice to get the longest message")
    finally:
        for room in (alice, bob):
            with contextlib.suppress(Exception):
                await room.close()

    # the log: one fact per message, with the ids, names, texts and times clients saw
    facts = await wait_for_events(
        infra.kafka,
        topics.name("rtc.facts"),
        lambda es: len([e for e in es if isinstance(e, ChatMessagePosted) and e.room_id == room_id]) >= 3,
        15,
        "three chat facts",
    )
    posted = [e for e in facts if isinstance(e, ChatMessagePosted) and e.room_id == room_id]
    assert [(str(e.event_id), e.peer_id, e.identity, e.name, e.text, e.occurred_at) for e in posted] == [
        (m.id, m.peer_id, m.identity, m.name, m.text, m.at) for m in (first, reply, longest)
    ]
    assert not [e for e in facts if isinstance(e, RequestRejected) and e.room_id == room_id]
    # nothing was written for the refused messages: three intents, the three that were posted
    intents = [
        e
        for e in await read_events(infra.kafka, topics.name("rtc.intents"))
        if isinstance(e, ChatMessageRequested) and e.room_id == room_id
    ]
    assert [(e.peer_id, e.text) for e in intents] == [(m.peer_id, m.text) for m in (first, reply, longest)]
    assert [e.event_id for e in intents] == [e.causation_id for e in posted]
