"""The REST api against the real stack: tokens, rooms through the log, health,
and bad input that gets a clear error and writes nothing."""

from __future__ import annotations

import httpx

from producers.rtc import CreateRoomRequested, DeleteRoomRequested
from producers.topics import Topics
from tests.harness import (
    API_SECRET,
    Infra,
    read_events,
    unique,
    wait_for,
)
from tests.harness import (
    api_token as token,
)


def error_code(r: httpx.Response) -> str:
    return str(r.json()["error"]["code"])


async def test_health_ready_metrics(stack: str) -> None:
    async with httpx.AsyncClient(base_url=stack) as client:
        assert (await client.get("/healthz")).json() == {"status": "ok"}
        ready = (await client.get("/readyz")).json()
        assert ready == {"status": "ready", "checks": {"kafka": "ok", "postgres": "ok"}}
        metrics = (await client.get("/metrics")).text
        assert "roomlog_api_requests_total" in metrics
        assert (await client.get("/openapi.json")).json()["paths"]["/v1/rooms"]


async def test_tokens_require_the_api_secret_and_valid_grants(stack: str) -> None:
    async with httpx.AsyncClient(base_url=stack) as client:
        r = await client.post("/v1/tokens", json={"identity": "a", "grants": ["join"]})
        assert r.status_code == 401 and error_code(r) == "unauthorized"
        r = await client.post(
            "/v1/tokens", headers={"X-API-Secret": "wrong"}, json={"identity": "a", "grants": ["join"]}
        )
        assert r.status_code == 401
        for body in (
            {"identity": "a", "grants": ["fly"]},
            {"identity": "", "grants": ["join"]},
            {"identity": "a", "grants": []},
            {"identity": "a", "grants": ["join"], "ttl_s": 10**7},
            {"identity": "a", "grants": ["join"], "bogus": 1},
        ):
            r = await client.post("/v1/tokens", headers={"X-API-Secret": API_SECRET}, json=body)
            assert r.status_code == 400 and error_code(r) == "invalid_request", (body, r.text)
        r = await client.post(
            "/v1/tokens",
            headers={"X-API-Secret": API_SECRET},
            json={"identity": "alice", "grants": ["join", "publish"], "room": "r1"},
        )
        assert r.status_code == 201
        assert r.json()["grants"] == ["join", "publish"] and r.json()["room"] == "r1"


async def test_rooms_lifecycle_through_the_log(stack: str, infra: Infra, topics: Topics) -> None:
    room = unique("api-")
    async with httpx.AsyncClient(base_url=stack) as client:
        admin = {"Authorization": f"Bearer {await token(client, 'ops', ['admin'])}"}
        member = {"Authorization": f"Bearer {await token(client, 'bob', ['join'], room=room)}"}

        # refused requests: each gets its code and writes nothing
        refused = [
            (client.post("/v1/rooms", json={"room_id": room}), 401, "unauthorized"),
            (
                client.post("/v1/rooms", json={"room_id": room}, headers={"Authorization": "Bearer junk"}),
                401,
                "unauthorized",
            ),
            (client.post("/v1/rooms", json={"room_id": room}, headers=member), 403, "forbidden"),
            (
                client.post("/v1/rooms", json={"room_id": room, "type": "mcu"}, headers=admin),
                400,
                "unsupported_room_type",
            ),
            (client.post("/v1/rooms", json={"room_id": room, "type": "mesh"}, headers=admin), 400, "invalid_request"),
            (
                client.post("/v1/rooms", json={"room_id": room, "max_participants": 0}, headers=admin),
                400,
                "invalid_request",
            ),
            (client.post("/v1/rooms", json={"room_id": "bad id!"}, headers=admin), 400, "invalid_request"),
            (
                client.post("/v1/rooms", content=b"{not json", headers={**admin, "Content-Type": "application/json"}),
                400,
                "invalid_request",
            ),
            (client.delete(f"/v1/rooms/{room}", headers=admin), 404, "room_not_found"),
        ]
        for call, status, code in refused:
            r = await call
            assert (r.status_code, error_code(r)) == (status, code), r.text
        assert not [
            e
            for e in await read_events(infra.kafka, topics.name("rtc.intents"))
            if isinstance(e, CreateRoomRequested | DeleteRoomRequested) and e.room_id == room
        ]

        r = await client.post(
            "/v1/rooms",
            json={"room_id": room, "type": "broadcast", "max_participants": 20, "metadata": {"title": "demo"}},
            headers={**admin, "X-Request-ID": "req-42"},
        )
        assert r.status_code == 201, r.text
        created = r.json()
        assert created["room_id"] == room and created["type"] == "broadcast" and created["status"] == "open"
        assert created["max_participants"] == 20 and created["metadata"] == {"title": "demo"}
        assert created["creator"] == "ops"

        r = await client.post("/v1/rooms", json={"room_id": room}, headers=admin)
        assert r.status_code == 409 and error_code(r) == "room_exists"

        listed = (await client.get("/v1/rooms", headers=admin)).json()
        assert room in [x["room_id"] for x in listed]
        assert (await client.get("/v1/rooms", headers=member)).status_code == 403
        one = await client.get(f"/v1/rooms/{room}", headers=member)
        assert one.status_code == 200 and one.json()["members"] == []
        other = await client.get(f"/v1/rooms/{unique('x-')}", headers=admin)
        assert other.status_code == 404 and error_code(other) == "room_not_found"

        r = await client.delete(f"/v1/rooms/{room}", headers=member)
        assert r.status_code == 403
        r = await client.delete(f"/v1/rooms/{room}", headers=admin)
        assert r.status_code == 202 and r.json()["status"] == "closing"

        async def closed() -> bool:
            return (await client.get(f"/v1/rooms/{room}", headers=admin)).json()["status"] == "closed"

        await wait_for(closed, 15, "room closed in the read model")

    intents = [
        e
        for e in await read_events(infra.kafka, topics.name("rtc.intents"))
        if isinstance(e, CreateRoomRequested | DeleteRoomRequested) and e.room_id == room
    ]
    assert [type(e).__name__ for e in intents] == ["CreateRoomRequested", "DeleteRoomRequested"]
    assert intents[0].correlation_id == "req-42" and intents[0].creator == "ops"
