"""Stations against the real stack (api + streams on Kafka and Postgres, real edge agent
processes): registry online/offline from heartbeats, gate commands at most once through
a redelivery, an api retry and a kill between executing and reporting, a command nobody
answers timing out at the operator, and bad input refused with its code, writing nothing."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path

import httpx
import pytest
import websockets

from producers.kafka import EventProducer
from producers.rtc import Notification
from producers.sessions import StationCommandCompleted, StationRegistered, StationWentOffline
from producers.stations import StationCommandOutcome
from producers.topics import Topics
from tests.harness import (
    Infra,
    Service,
    api_service,
    api_token,
    free_port,
    http_ready,
    of_type,
    read_events,
    streams_ready,
    streams_service,
    unique,
    wait_for,
)
from tests.stations_stack import (
    Operator,
    bearer,
    edge_service,
    gate_openings,
    station_token,
    wait_status,
    write_config,
)

#: long enough for an agent killed mid-command to restart and report on a loaded machine
COMMAND_TIMEOUT_S = 15.0


@pytest.fixture
async def station_stack(
    infra: Infra, topics: Topics, prefix: str, producer: EventProducer, services: list[Service], tmp_path: Path
) -> str:
    worker = streams_service(infra, prefix, tmp_path, station_command_timeout_s=COMMAND_TIMEOUT_S).start()
    port = free_port()
    api = api_service(infra, prefix, tmp_path, port).start()
    services += [worker, api]
    await streams_ready(producer, infra, topics, worker)
    base = f"http://127.0.0.1:{port}"
    await http_ready(f"{base}/healthz", api)
    return base


def edge(
    base: str, token: str, station_id: str, tmp_path: Path, name: str = "edge", faults: dict[str, bool] | None = None
) -> Service:
    state = tmp_path / f"state-{station_id}"
    config = write_config(
        tmp_path / f"{name}.toml", station_id=station_id, api=base, token=token, state_dir=state, faults=faults
    )
    return edge_service(config, tmp_path, name)


async def test_register_online_sigkill_offline_restart_online(
    station_stack: str, services: list[Service], tmp_path: Path, infra: Infra, topics: Topics
) -> None:
    station = unique("bj_")
    token = await station_token(station_stack, station)
    agent = edge(station_stack, token, station, tmp_path).start()
    services.append(agent)
    async with httpx.AsyncClient(base_url=station_stack, timeout=10) as client:
        operator = await api_token(client, "op", ["station_control"])
        await wait_status(client, operator, station, "online", 30, agent)
        listed = (await client.get("/v1/stations?status=online", headers=bearer(operator))).json()["stations"]
        row = next(s for s in listed if s["station_id"] == station)
        assert row["site"] == "Beijing" and row["gates"] == ["g1"] and row["name"] == f"Station {station}"
        offline = (await client.get("/v1/stations?status=offline", headers=bearer(operator))).json()["stations"]
        assert station not in [s["station_id"] for s in offline]

        agent.kill()
        killed = time.monotonic()
        await wait_status(client, operator, station, "offline", 10, None)
        took = time.monotonic() - killed
        assert took < 10, took
        offline = (await client.get("/v1/stations?status=offline", headers=bearer(operator))).json()["stations"]
        assert station in [s["station_id"] for s in offline]

        again = edge(station_stack, token, station, tmp_path, name="edge2").start()
        services.append(again)
        await wait_status(client, operator, station, "online", 30, again)
    facts = await read_events(infra.kafka, topics.name("station.events"))
    assert [f.reason for f in of_type(facts, StationWentOffline) if f.station_id == station] == ["heartbeats-missed"]
    assert len([e for e in of_type(facts, StationRegistered) if e.station_id == station]) == 2


async def open_gate(client: httpx.AsyncClient, operator: str, station: str, command_id: str, wait_s: float) -> dict:  # type: ignore[type-arg]
    r = await client.post(
        f"/v1/stations/{station}/gates/g1/open",
        json={"command_id": command_id, "wait_s": wait_s},
        headers=bearer(operator),
    )
    assert r.status_code in (200, 202), r.text
    body: dict = r.json()  # type: ignore[type-arg]
    return body


async def test_open_gate_at_most_once(
    station_stack: str,
    services: list[Service],
    tmp_path: Path,
    infra: Infra,
    topics: Topics,
    producer: EventProducer,
) -> None:
    station = unique("bj_")
    state = tmp_path / f"state-{station}"
    token = await station_token(station_stack, station)
    agent = edge(station_stack, token, station, tmp_path).start()
    services.append(agent)
    async with httpx.AsyncClient(base_url=station_stack, timeout=30) as client:
        operator = await api_token(client, "op", ["station_control"])
        await wait_status(client, operator, station, "online", 30, agent)

        # an operator retry: the same command id twice opens once, both hear the outcome
        first = await open_gate(client, operator, station, "gate-1", 10)
        assert first["status"] == "succeeded", first
        second = await open_gate(client, operator, station, "gate-1", 10)
        assert second["status"] == "succeeded", second
        assert [o["command_id"] for o in gate_openings(state)] == ["gate-1"]

        # a redelivery: the station's command notification again on the log
        notes = of_type(await read_events(infra.kafka, topics.name("gateway.notifications")), Notification)
        delivered = [n for n in notes if n.message.get("command_id") == "gate-1" and "deadline" in n.message]
        assert len(delivered) == 1
        await producer.send(topics.name("gateway.notifications"), delivered[0])

        async def reported_twice() -> bool:
            events = await read_events(infra.kafka, topics.name("station.events"))
            return len([e for e in of_type(events, StationCommandCompleted) if e.command_id == "gate-1"]) >= 2

        await wait_for(reported_twice, 15, "the redelivered command reported again")
        assert [o["command_id"] for o in gate_openings(state)] == ["gate-1"]
        events = await read_events(infra.kafka, topics.name("station.events"))
        outcomes = [e.status for e in of_type(events, StationCommandOutcome) if e.command_id == "gate-1"]
        assert outcomes == ["acked", "succeeded"]

        # killed after executing, before reporting; restarted: not run again, reported
        agent.stop()
        crashing = edge(station_stack, token, station, tmp_path, "edge-crash", {"exit_after_execute": True}).start()
        services.append(crashing)
        await wait_status(client, operator, station, "online", 30, crashing)
        await asyncio.sleep(1.0)  # the registration is applied before the command
        pending = await open_gate(client, operator, station, "gate-2", 0)
        assert pending["status"] == "requested"
        await wait_for(lambda: not crashing.alive(), 15, "the agent killed itself after executing")
        assert [o["command_id"] for o in gate_openings(state)] == ["gate-1", "gate-2"]
        restarted = edge(station_stack, token, station, tmp_path, "edge-after").start()
        services.append(restarted)

        async def settled() -> str | None:
            r = await client.get(f"/v1/stations/{station}/commands/gate-2", headers=bearer(operator))
            status = r.json().get("status") if r.status_code == 200 else None
            return status if status in ("succeeded", "failed", "timed_out") else None

        assert await wait_for(settled, 30, "gate-2's outcome") == "succeeded"
        await asyncio.sleep(2)
        assert [o["command_id"] for o in gate_openings(state)] == ["gate-1", "gate-2"]
        # the first command's row says succeeded too
        r = await client.get(f"/v1/stations/{station}/commands/gate-1", headers=bearer(operator))
        assert r.json()["status"] == "succeeded"


async def test_unanswered_command_times_out_at_the_operator(
    station_stack: str, services: list[Service], tmp_path: Path
) -> None:
    station = unique("bj_")
    state = tmp_path / f"state-{station}"
    token = await station_token(station_stack, station)
    agent = edge(station_stack, token, station, tmp_path, faults={"never_answer": True}).start()
    services.append(agent)
    async with httpx.AsyncClient(base_url=station_stack, timeout=30) as client:
        operator = await api_token(client, "op", ["station_control"])
        await wait_status(client, operator, station, "online", 30, agent)
        async with Operator(station_stack, operator) as op:
            await op.send({"type": "open-gate", "station_id": station, "gate_id": "g1", "command_id": "gate-x"})
            sent = await op.wait(lambda m: m.get("command_id") == "gate-x", 10, "sent")
            assert sent["status"] == "sent"
            started = time.monotonic()
            out = await op.wait(
                lambda m: m.get("command_id") == "gate-x" and m.get("status") not in ("sent", "acked"),
                COMMAND_TIMEOUT_S + 10,
                "the outcome",
            )
            assert out["status"] == "timed-out" and out["station_id"] == station, out
            assert time.monotonic() - started >= COMMAND_TIMEOUT_S - 1.5
            assert [m.get("status") for m in op.messages if m.get("command_id") == "gate-x"] == ["sent", "timed-out"]

        async def projected() -> str | None:
            r = await client.get(f"/v1/stations/{station}/commands/gate-x", headers=bearer(operator))
            status = r.json().get("status") if r.status_code == 200 else None
            return status if status != "pending" else None

        assert await wait_for(projected, 15, "the projected outcome") == "timed_out"
    assert gate_openings(state) == []


async def station_socket(base: str, token: str) -> websockets.ClientConnection:
    return await websockets.connect(base.replace("http://", "ws://") + f"/v1/station?token={token}")


async def answer(ws: websockets.ClientConnection, message: dict) -> dict:  # type: ignore[type-arg]
    await ws.send(json.dumps(message))
    reply: dict = json.loads(await asyncio.wait_for(ws.recv(), 10))  # type: ignore[type-arg]
    return reply


async def test_bad_input_gets_codes_and_writes_nothing(
    station_stack: str, services: list[Service], tmp_path: Path, infra: Infra, topics: Topics
) -> None:
    base = station_stack
    async with httpx.AsyncClient(base_url=base, timeout=10) as client:
        # station tokens: only with a station id, only the station grant
        for body in (
            {"identity": "e", "grants": ["station"]},
            {"identity": "e", "grants": ["station", "join"], "station_id": "bj_01"},
            {"identity": "e", "grants": ["join"], "station_id": "bj_01"},
        ):
            r = await client.post("/v1/tokens", headers={"X-API-Secret": "test-api-secret"}, json=body)
            assert r.status_code == 400 and r.json()["error"]["code"] == "invalid_request", r.text
        token = await station_token(base, "bj_01")

        # the socket: a station token for bj_01 cannot register or answer as bj_02
        ws = await station_socket(base, token)
        async with ws:
            reply = await answer(ws, {"type": "heartbeat"})
            assert reply["code"] == "not_registered"
            reply = await answer(ws, {"type": "register-station", "station_id": "bj_02", "name": "x"})
            assert reply["type"] == "error" and reply["code"] == "station_mismatch"
            reply = await answer(
                ws, {"type": "register-station", "station_id": "bj_01", "cameras": [{"camera_id": ""}]}
            )
            assert reply["code"] == "invalid_message"
            reply = await answer(ws, {"type": "register-station"})
            assert reply["code"] == "invalid_message"
            reply = await answer(ws, {"type": "open-sesame"})
            assert reply["code"] == "unknown_type"
            await ws.send("not json")
            assert json.loads(await ws.recv())["code"] == "invalid_message"
            reply = await answer(
                ws,
                {
                    "type": "register-station",
                    "station_id": "bj_01",
                    "cameras": [{"camera_id": "c1"}, {"camera_id": "c1"}],
                },
            )
            assert reply["code"] == "invalid_message"
        # an operator token on the station socket is refused at once
        operator = await api_token(client, "op", ["station_control"])
        ws = await station_socket(base, operator)
        async with ws:
            reply = json.loads(await ws.recv())
            assert reply["code"] == "forbidden"
            with pytest.raises(websockets.ConnectionClosed) as closed:
                await ws.recv()
            assert closed.value.rcvd is not None and closed.value.rcvd.code == 4003

        # operators: the grant, unknown station/camera/gate
        viewer = await api_token(client, "viewer", ["join", "subscribe"])
        r = await client.get("/v1/stations", headers=bearer(viewer))
        assert r.status_code == 403 and r.json()["error"]["code"] == "forbidden"
        r = await client.post("/v1/stations/bj_01/gates/g1/open", headers=bearer(viewer))
        assert r.status_code == 403 and r.json()["error"]["code"] == "forbidden"
        r = await client.post("/v1/stations/nowhere/cameras/c1/stream", headers=bearer(operator))
        assert r.status_code == 404 and r.json()["error"]["code"] == "station_not_found"
        r = await client.get("/v1/stations/nowhere", headers=bearer(operator))
        assert r.status_code == 404 and r.json()["error"]["code"] == "station_not_found"

        # a real station, then its unknown camera and gate
        station = unique("bj_")
        agent = edge(base, await station_token(base, station), station, tmp_path).start()
        services.append(agent)
        await wait_status(client, operator, station, "online", 30, agent)
        r = await client.post(f"/v1/stations/{station}/cameras/c9/stream", headers=bearer(operator))
        assert r.status_code == 404 and r.json()["error"]["code"] == "camera_not_found"
        r = await client.post(f"/v1/stations/{station}/gates/g9/open", headers=bearer(operator))
        assert r.status_code == 404 and r.json()["error"]["code"] == "gate_not_found"
        async with Operator(base, await api_token(client, "viewer", ["join", "subscribe"])) as op:
            await op.send({"type": "open-gate", "station_id": station, "gate_id": "g1", "request_id": "r1"})
            err = await op.wait(lambda m: m.get("request_id") == "r1", 10, "refusal")
            assert err["type"] == "error" and err["code"] == "forbidden"
        async with Operator(base, operator) as op:
            await op.send({"type": "request-stream", "station_id": station, "camera_id": "c9", "request_id": "r2"})
            err = await op.wait(lambda m: m.get("request_id") == "r2", 10, "refusal")
            assert err["code"] == "camera_not_found"
            await op.send({"type": "open-gate", "station_id": "nowhere", "gate_id": "g1", "request_id": "r3"})
            err = await op.wait(lambda m: m.get("request_id") == "r3", 10, "refusal")
            assert err["code"] == "station_not_found"

    events = await read_events(infra.kafka, topics.name("station.events"))
    kinds = sorted({e.type for e in events if getattr(e, "station_id", None) in ("bj_01", "bj_02", "nowhere")})
    assert kinds == [], kinds
    written = sorted({e.type for e in events if getattr(e, "station_id", None) == station})
    assert "StreamRequested" not in written and "StationCommandRequested" not in written, written
