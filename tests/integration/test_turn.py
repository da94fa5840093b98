"""TURN against the real coturn that ``scripts/infra.sh up`` starts (``TURN_URL``/``TURN_SECRET``
in infra.env): the api's ephemeral credentials allocate real relays, wrong or expired ones
are refused, and aiortc peers that may use relayed candidates only still get media through."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import hmac
import os
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from aioice import stun, turn
from aiortc import RTCPeerConnection, RTCSessionDescription

from api.ice import turn_credential
from client import LocalTrack, Room
from client.room import rtc_configuration
from client.synthetic import PatternVideoTrack, decode_pattern
from producers.kafka import EventProducer
from producers.topics import Topics
from tests.e2e.media import Watcher, advancing
from tests.harness import (
    Infra,
    Service,
    api_service,
    free_port,
    http_ready,
    mint_token,
    node_service,
    streams_ready,
    streams_service,
    unique,
    wait_for,
)


@pytest.fixture(scope="module")
def coturn() -> tuple[str, str]:
    """(TURN URL, secret) of the coturn the scripts started."""
    url, secret = os.environ.get("TURN_URL"), os.environ.get("TURN_SECRET")
    if not url or not secret:
        raise RuntimeError("TURN_URL/TURN_SECRET not set: run with `make test` (scripts/infra.sh starts coturn)")
    return url, secret


def turn_settings(url: str, secret: str) -> dict[str, str]:
    return {"turn_urls": url, "turn_secret": secret, "stun_urls": url.replace("turn:", "stun:", 1)}


async def start_api(
    infra: Infra, prefix: str, tmp_path: Path, services: list[Service], name: str, **settings: str
) -> str:
    port = free_port()
    api = api_service(infra, prefix, tmp_path, port, name=name, **settings).start()
    services.append(api)
    base = f"http://127.0.0.1:{port}"
    await http_ready(f"{base}/healthz", api, timeout=60)  # the machine may be busy
    return base


async def get_ice(base: str, token: str) -> dict[str, Any]:
    async with httpx.AsyncClient() as client:
        r = await client.get(f"{base}/v1/ice-servers", headers={"Authorization": f"Bearer {token}"})
    assert r.status_code == 200, r.text
    body: dict[str, Any] = r.json()
    return body


def turn_entry(ice_servers: list[dict[str, Any]]) -> dict[str, Any]:
    entries = [s for s in ice_servers if any(u.startswith("turn:") for u in s["urls"])]
    assert len(entries) == 1, ice_servers
    return entries[0]


def server_address(url: str) -> tuple[str, int]:
    host, _, port = url.split(":", 1)[1].split("?")[0].rpartition(":")
    return host, int(port)


class Inbox(asyncio.DatagramProtocol):
    def __init__(self) -> None:
        self.received: asyncio.Queue[tuple[bytes, tuple[str, int]]] = asyncio.Queue()

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        self.received.put_nowait((data, addr))


async def allocate_and_relay(
    server: tuple[str, int],
    username: str,
    password: str,
    transport: str,
) -> tuple[str, int]:
    """A real TURN Allocate, then datagrams both ways between the client and a peer through
    the relayed address. Returns the relayed address."""
    relay, client = await turn.create_turn_endpoint(
        Inbox, server_addr=server, username=username, password=password, transport=transport
    )
    loop = asyncio.get_running_loop()
    peer_transport, peer = await loop.create_datagram_endpoint(Inbox, local_addr=("127.0.0.2", 0))
    try:
        relayed: tuple[str, int] = relay.get_extra_info("sockname")
        assert relayed != relay.get_extra_info("related_address")
        relay.sendto(b"to-peer", peer_transport.get_extra_info("sockname"))  # also opens the permission
        data, source = await asyncio.wait_for(peer.received.get(), 10)
        assert (data, source) == (b"to-peer", relayed)
        peer_transport.sendto(b"to-client", relayed)
        data, source = await asyncio.wait_for(client.received.get(), 10)
        assert (data, source) == (b"to-client", peer_transport.get_extra_info("sockname"))
        return relayed
    finally:
        relay.close()
        peer_transport.close()
        await asyncio.sleep(0.1)


async def assert_refused(server: tuple[str, int], username: str, password: str) -> None:
    with pytest.raises(stun.TransactionFailed) as refused:
        await turn.create_turn_endpoint(Inbox, server_addr=server, username=username, password=password)
    assert refused.value.response.attributes["ERROR-CODE"][0] == 401


async def test_ice_servers_need_a_valid_token(
    coturn: tuple[str, str], infra: Infra, topics: Topics, prefix: str, services: list[Service], tmp_path: Path
) -> None:
    base = await start_api(infra, prefix, tmp_path, services, "api", **turn_settings(*coturn))
    async with httpx.AsyncClient(base_url=base) as client:
        for headers in ({}, {"Authorization": "Bearer not-a-jwt"}, {"Authorization": "Basic dXNlcjpwdw=="}):
            r = await client.get("/v1/ice-servers", headers=headers)
            assert r.status_code == 401, (headers, r.text)
            assert r.json()["error"]["code"] == "unauthorized"
            assert "credential" not in r.text


async def test_ephemeral_credentials_allocate_relays_on_coturn(
    coturn: tuple[str, str], infra: Infra, topics: Topics, prefix: str, services: list[Service], tmp_path: Path
) -> None:
    url, secret = coturn
    good, wrong = await asyncio.gather(
        start_api(infra, prefix, tmp_path, services, "api", **turn_settings(url, secret), turn_ttl_s="600"),
        start_api(infra, prefix, tmp_path, services, "api-wrong", **turn_settings(url, "not-the-secret")),
    )
    identity = unique("alice-")
    before = int(time.time())
    body = await get_ice(good, await mint_token(good, identity, ["join"]))

    assert body["ttl_s"] == 600
    assert {"urls": [url.replace("turn:", "stun:", 1)]} in body["ice_servers"]
    entry = turn_entry(body["ice_servers"])
    assert entry["urls"] == [f"{url}?transport=udp", f"{url}?transport=tcp"]
    expiry, _, who = entry["username"].partition(":")
    assert who == identity and before + 600 <= int(expiry) <= int(time.time()) + 600
    expected = hmac.new(secret.encode(), entry["username"].encode(), hashlib.sha1).digest()
    assert base64.b64decode(entry["credential"]) == expected

    server = server_address(url)
    relayed_udp = await allocate_and_relay(server, entry["username"], entry["credential"], "udp")
    relayed_tcp = await allocate_and_relay(server, entry["username"], entry["credential"], "tcp")
    assert relayed_udp != relayed_tcp and relayed_udp[0].startswith("127.")

    # a gateway with the wrong secret hands out credentials coturn refuses; so is an expired one
    refused = turn_entry((await get_ice(wrong, await mint_token(wrong, identity, ["join"])))["ice_servers"])
    await assert_refused(server, refused["username"], refused["credential"])
    await assert_refused(server, *turn_credential(secret, identity, int(time.time()) - 5))

    for service in services:
        assert secret not in service.log_path.read_text(errors="replace"), f"{service.name} logged the secret"


async def connect_pair(config: Any) -> tuple[RTCPeerConnection, RTCPeerConnection, str, asyncio.Future[Any]]:
    """Two aiortc peers in this process, video from the first to the second. Returns them,
    the offer SDP and a future with the first decoded frame the second receives."""
    sender, receiver = RTCPeerConnection(config), RTCPeerConnection(config)
    first: asyncio.Future[Any] = asyncio.get_running_loop().create_future()

    async def consume(track: Any) -> None:
        with contextlib.suppress(Exception):
            frame = await track.recv()
            if not first.done():
                first.set_result(frame)

    receiver.on("track", lambda track: asyncio.ensure_future(consume(track)))
    sender.addTrack(PatternVideoTrack(7))
    await sender.setLocalDescription(await sender.createOffer())
    offer = sender.localDescription.sdp
    await receiver.setRemoteDescription(RTCSessionDescription(offer, "offer"))
    await receiver.setLocalDescription(await receiver.createAnswer())
    await sender.setRemoteDescription(RTCSessionDescription(receiver.localDescription.sdp, "answer"))
    return sender, receiver, offer, first


def candidate_types(sdp: str) -> list[str]:
    return [line.split(" typ ")[1].split()[0] for line in sdp.splitlines() if line.startswith("a=candidate:")]


async def test_two_aiortc_peers_exchange_video_over_relay_only(
    coturn: tuple[str, str], infra: Infra, topics: Topics, prefix: str, services: list[Service], tmp_path: Path
) -> None:
    url, secret = coturn
    good, wrong = await asyncio.gather(
        start_api(infra, prefix, tmp_path, services, "api", **turn_settings(url, secret)),
        start_api(infra, prefix, tmp_path, services, "api-wrong", **turn_settings(url, "not-the-secret")),
    )
    servers = (await get_ice(good, await mint_token(good, "p2p", ["join"])))["ice_servers"]
    sender, receiver, offer, received = await connect_pair(rtc_configuration(servers, "relay"))
    try:
        frame = await asyncio.wait_for(received, 30)
        assert decode_pattern(frame)[0] == 7
        types = candidate_types(offer) + candidate_types(receiver.localDescription.sdp)
        assert types and set(types) == {"relay"}, types
    finally:
        await sender.close()
        await receiver.close()

    # credentials from a gateway with the wrong secret: no relayed candidate, no connection
    bad = (await get_ice(wrong, await mint_token(wrong, "p2p", ["join"])))["ice_servers"]
    sender, receiver, offer, received = await connect_pair(rtc_configuration(bad, "relay"))
    try:
        assert candidate_types(offer) == [] and candidate_types(receiver.localDescription.sdp) == []
        with pytest.raises(TimeoutError):  # aiortc waits for candidates that never come: no media
            await asyncio.wait_for(received, 10)
        assert sender.connectionState != "connected" and receiver.connectionState != "connected"
    finally:
        await sender.close()
        await receiver.close()


async def test_sdk_uses_joined_ice_servers_relay_only_through_a_media_node(
    coturn: tuple[str, str],
    infra: Infra,
    topics: Topics,
    prefix: str,
    producer: EventProducer,
    services: list[Service],
    tmp_path: Path,
) -> None:
    url, _ = coturn
    worker = streams_service(infra, prefix, tmp_path, node_timeout_s=3).start()
    services += [worker, node_service(infra, prefix, tmp_path, f"{prefix}n0").start()]
    base = await start_api(infra, prefix, tmp_path, services, "api", **turn_settings(*coturn))
    await streams_ready(producer, infra, topics, worker)

    room_id = unique("turn-")
    ws_url = base.replace("http", "ws") + "/v1/rtc"
    publisher = await Room.connect(
        ws_url, await mint_token(base, "pub", ["join", "publish"], room_id), room_id, ice_transport_policy="relay"
    )
    viewer = await Room.connect(
        ws_url, await mint_token(base, "viewer", ["join", "subscribe"], room_id), room_id, ice_transport_policy="relay"
    )
    watcher = Watcher()
    watcher.attach(viewer)
    try:
        for room, identity in ((publisher, "pub"), (viewer, "viewer")):
            entry = turn_entry(room.server_ice_servers)
            assert entry["username"].endswith(f":{identity}") and entry["urls"][0] == f"{url}?transport=udp"
        await publisher.publish([LocalTrack(PatternVideoTrack(3), "cam-3", "camera")])
        await wait_for(lambda: advancing(watcher.video.get(3, [])), 60, "the viewer decoding the publisher")
        for pc in (publisher._publisher, viewer._subscriber):  # noqa: SLF001 - the connections' own SDP
            assert pc is not None
            types = candidate_types(pc.localDescription.sdp)
            assert types and set(types) == {"relay"}, types
    finally:
        watcher.stop()
        for room in (publisher, viewer):
            with contextlib.suppress(Exception):
                await room.close()
