"""Station sockets one gateway holds, and station commands routed end to end per second.

``python -m bench.stations --json`` prints one JSON object on stdout (progress on stderr).
One ``python -m streams`` worker and one ``python -m api`` on fresh prefixed topics:

1. ``sockets``: ``--stations`` simulated edge agents (default 5,000) open ``/v1/station``
   on the one gateway, register and heartbeat at the interval it gives (2 s). The phase
   waits until ``GET /v1/stations?status=online`` lists every one, then holds for
   ``--hold-s`` (past three heartbeat intervals) and checks that none was declared offline
   (no ``StationWentOffline``) and all are still listed online → ``station_sockets``
   (the stations online and stable; 0 if any was lost) and ``register_s``.
2. ``commands``: ``--command-stations`` of them answer ``open-gate`` (ack, then result);
   ``--operators`` operator sockets send ``--commands`` open-gate requests (10 % sent twice
   with the same id: an api retry). Each command must reach its station exactly once and its
   operator must hear exactly one final outcome (``succeeded``) → ``commands_per_s``
   (commands from the first send to the last outcome), ``at_most_once`` (true if so).

``request_to_frame_p50_ms`` / ``request_to_frame_p99_ms`` are null: that phase (20 clicks in
Chromium against a real RTSP camera) is not written yet.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import random
import resource
import time
import uuid
from collections import Counter
from typing import Any

import httpx
import websockets

from api.tokens import TokenIssuer
from bench.infra import REPO, Servers, run_bench, say
from bench.procs import Child, machine
from producers.admin import create_topics
from producers.envelope import utcnow
from producers.fields import Grant

JWT_SECRET = "bench-jwt-secret-that-is-long-enough-32"
TARGETS = {"station_sockets": 5000, "request_to_frame_p99_ms": 1500}


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench.stations", description=__doc__.split("\n\n")[0])
    p.add_argument("--json", action="store_true", help="one JSON object on stdout (default: indented)")
    p.add_argument("--stations", type=int, default=5000, help="station sockets on the one gateway")
    p.add_argument("--hold-s", type=float, default=20.0, help="how long every station must stay online")
    p.add_argument("--command-stations", type=int, default=20)
    p.add_argument("--operators", type=int, default=10)
    p.add_argument("--commands", type=int, default=2000)
    p.add_argument("--rate", type=float, default=400.0, help="open-gate requests offered per second")
    return p.parse_args(argv)


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


class SimStation:
    """A simulated edge agent: registers, heartbeats, answers open-gate (counting deliveries)."""

    def __init__(self, url: str, token: str, station_id: str, delivered: Counter[str] | None) -> None:
        self.url, self.token, self.station_id, self.delivered = url, token, station_id, delivered
        self.registered = asyncio.Event()
        self.lost = False
        self.heartbeat_s = 2.0

    async def run(self, stop: asyncio.Event) -> None:
        try:
            async with websockets.connect(
                f"{self.url}?token={self.token}", ping_interval=None, open_timeout=60, max_size=2**20
            ) as ws:
                register = {"type": "register-station", "station_id": self.station_id, "gates": ["g1"], "site": "bench"}
                await ws.send(json.dumps(register))
                beats = asyncio.create_task(self._beats(ws))
                reader = asyncio.create_task(self._read(ws))
                await stop.wait()
                beats.cancel()
                reader.cancel()
        except (OSError, TimeoutError, websockets.WebSocketException) as exc:
            self.lost = True
            say(f"station {self.station_id} lost: {type(exc).__name__}: {exc}")

    async def _beats(self, ws: Any) -> None:
        await self.registered.wait()
        await asyncio.sleep(random.uniform(0, self.heartbeat_s))
        try:
            while True:
                await ws.send('{"type":"heartbeat"}')
                await asyncio.sleep(self.heartbeat_s)
        except websockets.ConnectionClosed:
            self.lost = True

    async def _read(self, ws: Any) -> None:
        try:
            async for text in ws:
                m = json.loads(text)
                if m["type"] == "registered":
                    self.heartbeat_s = float(m["heartbeat_s"])
                    self.registered.set()
                elif m["type"] == "command" and self.delivered is not None:
                    self.delivered[m["command_id"]] += 1
                    await ws.send(json.dumps({"type": "command-ack", "command_id": m["command_id"]}))
                    result = {"type": "command-result", "command_id": m["command_id"], "ok": True}
                    await ws.send(json.dumps(result))
        except websockets.ConnectionClosed:
            self.lost = True


async def count(client: httpx.AsyncClient, token: str, prefix: str, status: str = "online") -> int:
    """Stations whose id starts with ``prefix`` that the read model lists with ``status``."""
    try:
        r = await client.get(f"/v1/stations?status={status}", headers={"Authorization": f"Bearer {token}"})
    except httpx.HTTPError as exc:  # an overloaded gateway: the phase reports it, not crash
        say(f"GET /v1/stations failed: {type(exc).__name__}")
        return -1
    if r.status_code != 200:
        return 0
    return sum(1 for s in r.json()["stations"] if s["station_id"].startswith(prefix))


async def sockets_phase(args: argparse.Namespace, base: str, issuer: TokenIssuer, operator: str) -> dict[str, Any]:
    url = base.replace("http://", "ws://") + "/v1/station"
    stop = asyncio.Event()
    sims = [SimStation(url, mint(issuer, f"s{i:05d}", station=True), f"s{i:05d}", None) for i in range(args.stations)]
    started = time.monotonic()
    tasks = []
    for i, sim in enumerate(sims):
        tasks.append(asyncio.create_task(sim.run(stop)))
        if i % 100 == 99:
            await asyncio.sleep(0.5)  # agents do not all dial in the same millisecond (200/s)
    out: dict[str, Any] = {"stations_offered": args.stations}
    async with httpx.AsyncClient(base_url=base, timeout=30) as client:
        deadline = time.monotonic() + 300
        online = 0
        while time.monotonic() < deadline:
            online = await count(client, operator, "s")
            if online >= args.stations:
                break
            await asyncio.sleep(1)
        out["register_s"] = round(time.monotonic() - started, 1)
        out["online_after_register"] = online
        say(f"sockets: {online}/{args.stations} online after {out['register_s']} s; holding {args.hold_s} s")
        await asyncio.sleep(args.hold_s)
        held = await count(client, operator, "s")
        offline = await count(client, operator, "s", "offline")
    out["online_after_hold"] = held
    out["offline_after_hold"] = offline
    out["sockets_lost"] = sum(s.lost for s in sims)
    out["registered"] = sum(s.registered.is_set() for s in sims)
    stable = held == args.stations and not offline and not out["sockets_lost"]
    out["station_sockets"] = held if stable else 0
    stop.set()
    await asyncio.gather(*tasks, return_exceptions=True)
    return out


def mint(issuer: TokenIssuer, identity: str, *, station: bool = False) -> str:
    grants = [Grant.STATION] if station else [Grant.STATION_CONTROL]
    token, _ = issuer.mint(
        identity=identity,
        name=identity,
        room=None,
        grants=grants,
        ttl_s=3600,
        now=utcnow(),
        station=identity if station else None,
    )
    return token


async def commands_phase(args: argparse.Namespace, base: str, issuer: TokenIssuer, operator: str) -> dict[str, Any]:
    url = base.replace("http://", "ws://")
    stop = asyncio.Event()
    delivered: Counter[str] = Counter()
    sims = [
        SimStation(url + "/v1/station", mint(issuer, f"c{i:03d}", station=True), f"c{i:03d}", delivered)
        for i in range(args.command_stations)
    ]
    tasks = [asyncio.create_task(s.run(stop)) for s in sims]
    async with httpx.AsyncClient(base_url=base, timeout=30) as client:
        for _ in range(240):
            if await count(client, operator, "c") >= args.command_stations:
                break
            await asyncio.sleep(0.5)
    outcomes: Counter[str] = Counter()
    finals: dict[str, float] = {}
    sockets = [
        await websockets.connect(f"{url}/v1/rtc?token={operator}", max_size=2**20) for _ in range(args.operators)
    ]

    async def read(ws: Any) -> None:
        with contextlib.suppress(websockets.ConnectionClosed):
            async for text in ws:
                m = json.loads(text)
                if m.get("type") == "command" and m.get("status") in ("succeeded", "failed", "timed-out", "rejected"):
                    outcomes[m["command_id"]] += 1
                    finals.setdefault(m["command_id"], time.monotonic())

    readers = [asyncio.create_task(read(ws)) for ws in sockets]
    ids = [f"b{uuid.uuid4().hex[:16]}" for _ in range(args.commands)]
    retries = set(random.sample(ids, len(ids) // 10))
    first = time.monotonic()
    for n, command_id in enumerate(ids):
        ws = sockets[n % len(sockets)]
        message = {
            "type": "open-gate",
            "station_id": sims[n % len(sims)].station_id,
            "gate_id": "g1",
            "command_id": command_id,
        }
        await ws.send(json.dumps(message))
        if command_id in retries:
            await ws.send(json.dumps(message))
        await asyncio.sleep(max(0.0, first + (n + 1) / args.rate - time.monotonic()))
    for _ in range(300):  # up to 60 s for the last outcomes
        if len(finals) >= len(ids):
            break
        await asyncio.sleep(0.2)
    await asyncio.sleep(2)  # anything late (a second outcome, a second delivery) shows up
    last = max(finals.values()) if finals else time.monotonic()
    for ws in sockets:
        await ws.close()
    for task in readers:
        task.cancel()
    stop.set()
    await asyncio.gather(*tasks, return_exceptions=True)
    once = all(delivered[c] == 1 for c in ids) and all(outcomes[c] >= 1 for c in ids)
    return {
        "commands": len(ids),
        "retried": len(retries),
        "completed": len(finals),
        "deliveries_max": max(delivered.values(), default=0),
        "undelivered": sum(1 for c in ids if delivered[c] == 0),
        #: a retry sent while the command is pending is told its status, not a second outcome
        "outcomes_max": max(outcomes.values(), default=0),
        "at_most_once": once,
        "commands_per_s": round(len(finals) / max(1e-6, last - first), 1) if finals else 0.0,
    }


async def measure(args: argparse.Namespace, servers: Servers, run_id: str) -> dict[str, Any]:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    prefix = f"{run_id}-"
    await create_topics(servers.kafka, prefix, quiet=True)
    workdir = REPO / ".run" / "bench" / run_id
    common = {"KAFKA_BOOTSTRAP": servers.kafka, "DATABASE_URL": servers.database_url, "ROOMLOG_TOPIC_PREFIX": prefix}
    port = free_port()
    worker = Child(
        "streams",
        "streams",
        {**common, "ROOMLOG_STREAMS_APP_ID": f"{run_id}-streams", "ROOMLOG_STREAMS_DATA_DIR": str(workdir / "faust")},
        workdir,
    ).start()
    api = Child(
        "api",
        "api",
        {
            **common,
            "ROOMLOG_API_PORT": str(port),
            "ROOMLOG_API_JWT_SECRET": JWT_SECRET,
            "ROOMLOG_API_GATEWAY_ID": f"{run_id}-gw",
            "ROOMLOG_API_LOG_LEVEL": "warning",
        },
        workdir,
    ).start()
    base = f"http://127.0.0.1:{port}"
    issuer = TokenIssuer(JWT_SECRET, "roomlog")
    operator = mint(issuer, "bench-operator")
    result: dict[str, Any] = {
        "machine": machine(),
        "targets": TARGETS,
        "request_to_frame_p50_ms": None,
        "request_to_frame_p99_ms": None,
    }
    try:
        async with httpx.AsyncClient(base_url=base, timeout=5) as client:
            for _ in range(120):
                with contextlib.suppress(httpx.HTTPError):
                    if (await client.get("/healthz")).status_code == 200:
                        break
                await asyncio.sleep(0.5)
        await asyncio.sleep(5)  # the worker joins its consumer groups
        if args.stations:
            say(f"sockets: {args.stations} stations")
            result["sockets"] = await sockets_phase(args, base, issuer, operator)
            result["station_sockets"] = result["sockets"]["station_sockets"]
        say(f"commands: {args.commands} open-gate over {args.command_stations} stations")
        result["commands"] = await commands_phase(args, base, issuer, operator)
        result["commands_per_s"] = result["commands"]["commands_per_s"]
        result["at_most_once"] = result["commands"]["at_most_once"]
    finally:
        api.stop()
        worker.stop()
        for child in (api, worker):
            if child.alive():
                say(child.tail())
    return result


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    return run_bench(lambda servers, run_id: measure(args, servers, run_id), as_json=args.json)


if __name__ == "__main__":
    raise SystemExit(main())
