"""Calls, presence and room types against a real streams worker and two real api
gateways, over raw WebSockets: invite → accept → both land in the p2p room and relay
offer/answer/candidates; reject; cancel; the 30 s timeout decided by streams; the
11th attempt in a minute refused across two gateways; mcu refused writing nothing;
presence online → busy → offline after the TTL."""

from __future__ import annotations

import asyncio
import json
import os
import signal
from collections.abc import Awaitable
from pathlib import Path
from typing import Any, TypeVar

import httpx
import pytest
import websockets
from aiortc import RTCConfiguration, RTCPeerConnection

from producers.kafka import EventProducer
from producers.rtc import CreateRoomRequested, JoinRequested, PublishRequested, RoomClosed
from producers.sessions import (
    CallAccepted,
    CallCancelled,
    CallEnded,
    CallInvited,
    CallRefused,
    CallRejected,
    CallRequested,
    CallTimedOut,
    PresenceChanged,
    SessionExpired,
)
from producers.topics import Topics
from tests.harness import (
    API_SECRET,
    Infra,
    Service,
    api_service,
    free_port,
    http_ready,
    node_service,
    of_type,
    read_events,
    streams_ready,
    streams_service,
    unique,
    wait_for,
    wait_for_events,
)

USER_GRANTS = ["join", "publish", "subscribe"]
T = TypeVar("T")


class Stack:
    def __init__(self, infra: Infra, topics: Topics, worker: Service, gateways: list[Service]) -> None:
        self.infra, self.topics, self.worker, self.gateways = infra, topics, worker, gateways
        self.bases = [f"127.0.0.1:{g.env['ROOMLOG_API_PORT']}" for g in gateways]

    async def events(self, logical: str) -> list[Any]:
        return await read_events(self.infra.kafka, self.topics.name(logical))

    async def token(self, identity: str, grants: list[str] = USER_GRANTS, room: str | None = None) -> str:
        async with httpx.AsyncClient() as client:
            r = await client.post(
                f"http://{self.bases[0]}/v1/tokens",
                headers={"X-API-Secret": API_SECRET},
                json={"identity": identity, "name": identity.title(), "grants": grants, "room": room},
            )
            assert r.status_code == 201, r.text
            return str(r.json()["token"])

    async def call(self, token: str, callee: str, gateway: int = 0) -> httpx.Response:
        async with httpx.AsyncClient() as client:
            return await client.post(
                f"http://{self.bases[gateway]}/v1/calls",
                json={"callee": callee},
                headers={"Authorization": f"Bearer {token}"},
                timeout=15,
            )

    async def presence(self, token: str, gateway: int = 0) -> dict[str, str]:
        async with httpx.AsyncClient() as client:
            r = await client.get(
                f"http://{self.bases[gateway]}/v1/presence", headers={"Authorization": f"Bearer {token}"}
            )
            assert r.status_code == 200, r.text
            return {u["user_id"]: u["status"] for u in r.json()["users"]}


class Socket:
    """A raw signaling socket that keeps every message, so a test waits for the one it wants."""

    def __init__(self, ws: Any) -> None:
        self.ws = ws
        self.seen: list[dict[str, Any]] = []
        self._new = asyncio.Event()
        self._reader = asyncio.create_task(self._read())

    @classmethod
    async def open(cls, base: str, token: str) -> Socket:
        return cls(await websockets.connect(f"ws://{base}/v1/rtc?token={token}"))

    async def _read(self) -> None:
        try:
            async for text in self.ws:
                self.seen.append(json.loads(text))
                self._new.set()
        except websockets.ConnectionClosed:
            pass

    async def send(self, message: dict[str, Any]) -> None:
        await self.ws.send(json.dumps(message))

    async def expect(self, type_: str, timeout: float = 15, **match: Any) -> dict[str, Any]:
        async def found() -> dict[str, Any] | None:
            return next(
                (m for m in self.seen if m.get("type") == type_ and all(m.get(k) == v for k, v in match.items())), None
            )

        result: dict[str, Any] = await wait_for(found, timeout, f"{type_} {match} (seen {self.seen[-5:]})", 0.05)
        return result

    async def ask(self, message: dict[str, Any], type_: str, timeout: float = 15) -> dict[str, Any]:
        message = {**message, "request_id": message.get("request_id") or unique("r")}
        await self.send(message)
        return await self.expect(type_, timeout, request_id=message["request_id"])

    async def close(self, code: int = 1000) -> None:
        await self.ws.close(code)
        self._reader.cancel()


async def start(
    infra: Infra,
    topics: Topics,
    prefix: str,
    producer: EventProducer,
    services: list[Service],
    tmp_path: Path,
    **streams_settings: Any,
) -> Stack:
    worker = streams_service(
        infra, prefix, tmp_path, tick_interval_s=0.5, trace_file=tmp_path / "handled.txt", **streams_settings
    ).start()
    gateways = [
        api_service(infra, prefix, tmp_path, free_port(), name=f"api{i}", session_ping_s=1).start() for i in range(2)
    ]
    services += [worker, *gateways]
    # generous: the test machine is shared, and a cold worker starts five agents
    await streams_ready(producer, infra, topics, worker, timeout=150)
    for gateway in gateways:
        await http_ready(f"http://127.0.0.1:{gateway.env['ROOMLOG_API_PORT']}/healthz", gateway, timeout=60)
    return Stack(infra, topics, worker, gateways)


@pytest.fixture
async def stack(
    infra: Infra, topics: Topics, prefix: str, producer: EventProducer, services: list[Service], tmp_path: Path
) -> Stack:
    return await start(infra, topics, prefix, producer, services, tmp_path, presence_ttl_s=4, disconnect_grace_s=3)


async def online(stack: Stack, token: str, *users: str) -> None:
    async def check() -> bool:
        now = await stack.presence(token)
        return all(now.get(u) == "online" for u in users)

    await diagnosed(stack, wait_for(check, 20, f"{users} online"))


async def diagnosed(stack: Stack, waiting: Awaitable[T]) -> T:
    """Await ``waiting``; if it times out, add what the worker handled and its task stacks
    (mode dumps them on SIGUSR1) to the failure. Under heavy machine load the users agent
    has been seen to stop consuming ``session.events``."""
    try:
        return await waiting
    except AssertionError as exc:
        os.kill(stack.worker.pid, signal.SIGUSR1)
        await asyncio.sleep(3)
        log = [
            (e.type, getattr(e, "user_id", getattr(e, "call_id", "")))
            for logical in ("session.events", "call.events")
            for e in await stack.events(logical)
            if e.type not in ("Tick", "SessionPinged")
        ]
        raise AssertionError(f"{exc}\nlog: {log}\nworker:\n{stack.worker.tail(300)}") from None


async def offer_sdp() -> str:
    pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    pc.addTransceiver("video")
    await pc.setLocalDescription(await pc.createOffer())
    sdp = pc.localDescription.sdp
    await pc.close()
    return sdp


async def test_invite_accept_p2p_relay_and_hang_up(stack: Stack) -> None:
    alice_t, bob_t = await stack.token("alice"), await stack.token("bob")
    alice = await Socket.open(stack.bases[0], alice_t)
    bob = await Socket.open(stack.bases[1], bob_t)  # the callee on the other gateway
    await online(stack, alice_t, "alice", "bob")

    r = await stack.call(alice_t, "bob")
    assert r.status_code == 201, r.text
    call = r.json()
    assert call["status"] == "inviting" and call["caller"] == "alice" and call["callee"] == "bob"
    call_id = call["call_id"]
    incoming = await diagnosed(stack, bob.expect("call-incoming", call_id=call_id))
    assert incoming["caller"] == "alice" and incoming["caller_name"] == "Alice"
    await alice.expect("call-ringing", call_id=call_id)

    await bob.send({"type": "call-accept", "call_id": call_id, "request_id": "acc"})
    to_bob = await bob.expect("call-accepted", call_id=call_id)
    to_alice = await alice.expect("call-accepted", call_id=call_id)
    room = to_bob["room"]
    assert room == to_alice["room"] and to_bob["answered_here"] is True and "answered_here" not in to_alice
    await wait_for(lambda: _statuses(stack, alice_t, "busy"), 10, "both busy in the call")

    # both join the p2p room: no media node, the offer/answer/candidates go over the log
    a_join = await alice.ask({"type": "join", "room": room}, "joined")
    b_join = await bob.ask({"type": "join", "room": room}, "joined")
    assert a_join["room_type"] == b_join["room_type"] == "p2p"
    a_peer, b_peer = a_join["peer_id"], b_join["peer_id"]
    assert [p["peer_id"] for p in b_join["peers"]] == [a_peer]
    sdp = await offer_sdp()
    await alice.send({"type": "p2p-offer", "to": b_peer, "sdp": sdp})
    offer = await bob.expect("p2p-offer")
    assert offer["from"] == a_peer and offer["sdp"] == sdp
    await bob.send({"type": "p2p-answer", "to": a_peer, "sdp": sdp})
    assert (await alice.expect("p2p-answer"))["from"] == b_peer
    candidate = {"candidate": "candidate:1 1 udp 2122260223 127.0.0.2 40000 typ host", "sdpMid": "0"}
    await bob.send({"type": "ice-candidate", "to": a_peer, "candidate": candidate})
    assert (await alice.expect("ice-candidate"))["candidate"] == candidate
    # a room-bound stranger cannot get in
    mallory = await Socket.open(stack.bases[0], await stack.token("mallory", room=room))
    assert (await mallory.ask({"type": "join", "room": room}, "error"))["code"] == "forbidden"
    # media-node requests make no sense in p2p: refused by the gateway, nothing written
    refused = await alice.ask(
        {"type": "publish", "sdp": sdp, "tracks": [{"source_id": "cam", "kind": "camera", "mid": "0"}]}, "error"
    )
    assert refused["code"] == "unsupported"

    await alice.send({"type": "call-hangup", "call_id": call_id})
    assert (await bob.expect("call-ended", call_id=call_id))["by"] == "alice"
    await alice.expect("call-ended", call_id=call_id)

    events = await wait_for_events(
        stack.infra.kafka, stack.topics.name("call.events"), lambda es: bool(of_type(es, CallEnded)), 10, "CallEnded"
    )
    mine = [e for e in events if getattr(e, "call_id", None) == call_id]
    assert [type(e).__name__ for e in mine if type(e) in (CallInvited, CallAccepted, CallEnded)] == [
        "CallInvited",
        "CallAccepted",
        "CallEnded",
    ]
    facts = await wait_for_events(
        stack.infra.kafka,
        stack.topics.name("rtc.facts"),
        lambda es: any(isinstance(e, RoomClosed) and e.room_id == room for e in es),
        15,
        "the call's room closed",
    )
    assert not [e for e in facts if getattr(e, "room_id", None) == room and type(e).__name__ == "RoomPlaced"]
    intents = await stack.events("rtc.intents")
    assert not [e for e in intents if isinstance(e, PublishRequested) and e.room_id == room]
    await wait_for(lambda: _statuses(stack, alice_t, "online"), 10, "back online after the call")
    for s in (alice, bob, mallory):
        await s.close()


async def _statuses(stack: Stack, token: str, status: str) -> bool:
    now = await stack.presence(token)
    return now.get("alice") == status and now.get("bob") == status


async def test_reject_cancel_and_bad_answers(stack: Stack) -> None:
    alice_t, bob_t = await stack.token("alice"), await stack.token("bob")
    alice = await Socket.open(stack.bases[0], alice_t)
    bob = await Socket.open(stack.bases[0], bob_t)
    await online(stack, alice_t, "alice", "bob")

    first = (await stack.call(alice_t, "bob")).json()["call_id"]
    await bob.expect("call-incoming", call_id=first)
    # only the callee may accept; unknown ids are refused
    assert (await alice.ask({"type": "call-accept", "call_id": first}, "error"))["code"] == "forbidden"
    assert (await bob.ask({"type": "call-accept", "call_id": "Cnope"}, "error"))["code"] == "call_not_found"
    await bob.send({"type": "call-reject", "call_id": first})
    assert (await alice.expect("call-rejected", call_id=first))["by"] == "bob"
    # too late: the call is over
    assert (await bob.ask({"type": "call-accept", "call_id": first}, "error"))["code"] == "call_over"

    second = (await stack.call(alice_t, "bob")).json()["call_id"]
    await bob.expect("call-incoming", call_id=second)
    await alice.send({"type": "call-cancel", "call_id": second})
    await bob.expect("call-cancelled", call_id=second)

    # calling someone who is offline
    third = (await stack.call(alice_t, "nobody")).json()["call_id"]
    assert (await alice.expect("call-refused", call_id=third))["reason"] == "callee_offline"
    # bad REST input writes nothing
    before = await stack.events("session.events")
    r = await stack.call(alice_t, "alice")
    assert r.status_code == 400 and r.json()["error"]["code"] == "invalid_request"
    r = await stack.call(await stack.token("roomy", room="r1"), "bob")
    assert r.status_code == 403 and r.json()["error"]["code"] == "forbidden"
    r = await stack.call(alice_t, "not a user id")
    assert r.status_code == 400
    after = await stack.events("session.events")
    assert len(of_type(after, CallRequested)) == len(of_type(before, CallRequested)) == 3

    events = await stack.events("call.events")
    assert [e.by for e in of_type(events, CallRejected)] == ["bob"]
    assert [e.call_id for e in of_type(events, CallCancelled)] == [second]
    assert [(e.call_id, e.reason) for e in of_type(events, CallRefused)] == [(third, "callee_offline")]
    for s in (alice, bob):
        await s.close()


async def test_unanswered_call_times_out_after_30_s_from_streams(stack: Stack) -> None:
    """The real 30 s contract (ticks every 0.5 s): both sides are told, the callee stops ringing."""
    alice_t, bob_t = await stack.token("alice"), await stack.token("bob")
    alice = await Socket.open(stack.bases[0], alice_t)
    bob = await Socket.open(stack.bases[1], bob_t)
    await online(stack, alice_t, "alice", "bob")
    call_id = (await stack.call(alice_t, "bob")).json()["call_id"]
    await bob.expect("call-incoming", call_id=call_id)
    loop = asyncio.get_running_loop()
    rang_at = loop.time()
    await bob.expect("call-timed-out", call_id=call_id, timeout=45)
    await alice.expect("call-timed-out", call_id=call_id, timeout=5)
    assert loop.time() - rang_at >= 29
    events = await stack.events("call.events")
    invited = next(e for e in of_type(events, CallInvited) if e.call_id == call_id)
    timed_out = next(e for e in of_type(events, CallTimedOut) if e.call_id == call_id)
    waited = (timed_out.occurred_at - invited.occurred_at).total_seconds()
    assert 30 <= waited < 33, waited  # decided by streams from a tick at or after ring_until
    assert timed_out.causation_id is not None and timed_out.causation_id != invited.event_id
    for s in (alice, bob):
        await s.close()


async def test_eleventh_attempt_in_a_minute_is_refused_across_two_gateways(stack: Stack) -> None:
    alice_t = await stack.token("alice")
    codes = []
    for i in range(11):
        r = await stack.call(alice_t, f"friend{i}", gateway=i % 2)
        codes.append(r.status_code)
        if i < 10:
            assert r.status_code == 201, r.text
    assert codes[-1] == 429
    refusal = r.json()["error"]
    assert refusal["code"] == "rate_limited" and 0 < refusal["details"]["retry_after_s"] <= 60
    assert 1 <= int(r.headers["Retry-After"]) <= 60
    events = await stack.events("call.events")
    assert [e.reason for e in of_type(events, CallRefused) if e.caller == "alice"] == ["rate_limited"]
    # the refused attempt never became a call
    refused_id = refusal["details"]["call_id"]
    assert not [e for e in of_type(events, CallInvited) if e.call_id == refused_id]


async def test_mcu_is_refused_and_writes_nothing(stack: Stack, services: list[Service], tmp_path: Path) -> None:
    admin = await stack.token("ops", ["admin"])
    async with httpx.AsyncClient() as client:
        r = await client.post(
            f"http://{stack.bases[0]}/v1/rooms",
            json={"room_id": "m1", "type": "mcu"},
            headers={"Authorization": f"Bearer {admin}"},
        )
    assert r.status_code == 400 and r.json()["error"]["code"] == "unsupported_room_type"
    user = await Socket.open(stack.bases[1], await stack.token("ursula"))
    refused = await user.ask({"type": "join", "room": "m2", "room_type": "mcu"}, "error")
    assert refused["code"] == "unsupported_room_type"
    bogus = await user.ask({"type": "join", "room": "m2", "room_type": "hologram"}, "error")
    assert bogus["code"] == "invalid_message"
    # a broadcast viewer's raw publish: forbidden at the gateway, no intent (a broadcast room
    # goes through a media node: `joined` comes once it is placed)
    services.append(node_service(stack.infra, stack.topics.prefix, tmp_path, unique("node-")).start())
    viewer = await Socket.open(stack.bases[0], await stack.token("viewer", ["join", "subscribe"]))
    joined = await viewer.ask({"type": "join", "room": "b1", "room_type": "broadcast"}, "joined", timeout=40)
    assert joined["room_type"] == "broadcast"
    forbidden = await viewer.ask(
        {"type": "publish", "sdp": await offer_sdp(), "tracks": [{"source_id": "cam", "kind": "camera", "mid": "0"}]},
        "error",
    )
    assert forbidden["code"] == "forbidden"
    intents = await stack.events("rtc.intents")
    assert not [e for e in intents if getattr(e, "room_id", None) in ("m1", "m2")]
    assert not [e for e in intents if isinstance(e, CreateRoomRequested) and e.room_id == "m1"]
    assert not [e for e in intents if isinstance(e, PublishRequested) and e.room_id == "b1"]
    assert [e.room_type for e in of_type(intents, JoinRequested) if e.room_id == "b1"] == ["broadcast"]
    for s in (user, viewer):
        await s.close()


async def test_presence_online_resume_and_offline_after_ttl(stack: Stack) -> None:
    watcher_t = await stack.token("watcher")
    watcher = await Socket.open(stack.bases[1], watcher_t)
    snapshot = await watcher.ask({"type": "presence-subscribe"}, "presence")
    assert snapshot["snapshot"] is True
    carol_t = await stack.token("carol")
    carol = await Socket.open(stack.bases[0], carol_t)
    await wait_for(lambda: pushed(watcher, "carol", "online"), 15, "carol's presence pushed to the watcher")
    assert (await stack.presence(watcher_t, gateway=1)).get("carol") == "online"

    # a dropped socket (1001) that comes back within the grace: never offline
    await carol.close(1001)
    carol = await Socket.open(stack.bases[1], carol_t)
    await wait_for(lambda: _expired(stack, "grace"), 15, "the lost session expires after the grace")
    assert (await stack.presence(watcher_t)).get("carol") == "online"

    # the gateway dies without a word: the TTL (4 s here, 90 s by default) takes carol offline
    stack.gateways[1].kill()
    carol._reader.cancel()
    await wait_for(lambda: _expired(stack, "ttl"), 20, "the session expires after the TTL")
    changes = [
        e for e in await stack.events("presence.facts") if isinstance(e, PresenceChanged) and e.user_id == "carol"
    ]
    assert [e.status for e in changes] == ["online", "offline"]
    assert "carol" not in await stack.presence(watcher_t, gateway=0)


def pushed(socket: Socket, user_id: str, status: str) -> bool:
    return any(
        user["user_id"] == user_id and user["status"] == status
        for m in socket.seen
        if m.get("type") == "presence"
        for user in m["users"]
    )


async def _expired(stack: Stack, reason: str) -> bool:
    return any(
        isinstance(e, SessionExpired) and e.user_id == "carol" and e.reason == reason
        for e in await stack.events("presence.facts")
    )
