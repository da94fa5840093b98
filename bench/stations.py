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

0. ``frames`` (first, on its own stack with a media node, ``bench/stations_frames.py``):
   ``--tries`` cold clicks (request-stream → stream-ready → a viewer joins and decodes) against
   GStreamer's RTSP camera and a real edge agent → ``request_to_frame_p50_ms`` /
   ``request_to_frame_p99_ms`` and the time per hop (``frames.hops_ms``, ``frames.edge_start_ms``).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import random
import resource
import time
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

import httpx
import sqlalchemy as sa
import websockets
from sqlalchemy.ext.asyncio import AsyncEngine

from api.tokens import TokenIssuer
from bench.infra import REPO, Servers, run_bench, say
from bench.procs import Child, machine
from bench.stations_frames import frames_phase
from db.engine import make_engine
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
    p.add_argument("--dial-rate", type=float, default=100.0, help="new station sockets per second")
    p.add_argument("--command-stations", type=int, default=20)
    p.add_argument("--operators", type=int, default=10)
    p.add_argument("--commands", type=int, default=2000)
    p.add_argument("--rate", type=float, default=400.0, help="open-gate requests offered per second")
    p.add_argument("--tries", type=int, default=20, help="cold request-stream clicks (0: no frames phase)")
    p.add_argument("--idle-stop-s", type=float, default=2.0, help="the streams worker's station_idle_stop_s")
    p.add_argument("--frame-timeout", type=float, default=20.0, help="seconds per click")
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
                f"{self.url}?token={self.token}", ping_interval=10, open_timeout=60, max_size=2**20
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


def cpu_s(pid: int) -> float:
    """CPU seconds (user + system) process ``pid`` has used so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


REGISTRY = sa.text(
    "SELECT count(*) FILTER (WHERE online), count(*) FILTER (WHERE NOT online),"
    " count(*) FILTER (WHERE online AND last_heartbeat_at > now() - make_interval(secs => :fresh_s))"
    " FROM stations WHERE station_id LIKE :prefix"
)


async def registry(engine: AsyncEngine, prefix: str, fresh_s: float) -> tuple[int, int, int]:
    """(online, offline, online with a heartbeat in the last ``fresh_s``) in the stations table."""
    async with engine.connect() as conn:
        row = (await conn.execute(REGISTRY, {"prefix": f"{prefix}%", "fresh_s": fresh_s})).one()
    return int(row[0]), int(row[1]), int(row[2])


async def sockets_phase(
    args: argparse.Namespace, base: str, issuer: TokenIssuer, operator: str, engine: AsyncEngine, pids: dict[str, int]
) -> dict[str, Any]:
    """Progress is read from the stations table (a 1 s poll of ``GET /v1/stations`` listing
    thousands of rows was itself a large share of the gateway's time); the gateway's own
    answer is checked once, after the hold."""
    url = base.replace("http://", "ws://") + "/v1/station"
    stop = asyncio.Event()
    ids = [f"s{args.tag}-{i:05d}" for i in range(args.stations)]
    sims = [SimStation(url, mint(issuer, sid, station=True), sid, None) for sid in ids]
    started = time.monotonic()
    tasks = []
    for i, sim in enumerate(sims):
        tasks.append(asyncio.create_task(sim.run(stop)))
        if i % 10 == 9:
            await asyncio.sleep(10 / args.dial_rate)  # agents do not all dial in the same millisecond
    out: dict[str, Any] = {"stations_offered": args.stations, "dial_rate": args.dial_rate}
    deadline = time.monotonic() + 300
    online = 0
    while time.monotonic() < deadline:
        online, _, _ = await registry(engine, f"s{args.tag}-", 6.0)
        if online >= args.stations - sum(s.lost for s in sims):
            break
        await asyncio.sleep(2)
    out["register_s"] = round(time.monotonic() - started, 1)
    out["online_after_register"] = online
    say(f"sockets: {online}/{args.stations} online after {out['register_s']} s; holding {args.hold_s} s")
    cpu_before = {name: cpu_s(pid) for name, pid in pids.items()}
    held_from = time.monotonic()
    await asyncio.sleep(args.hold_s)
    held_s = time.monotonic() - held_from
    #: CPU share of one core each process used while holding (heartbeats: stations / 2 s)
    out["cpu_during_hold"] = {name: round((cpu_s(pid) - cpu_before[name]) / held_s, 2) for name, pid in pids.items()}
    held, offline, fresh = await registry(engine, f"s{args.tag}-", 6.0)
    async with httpx.AsyncClient(base_url=base, timeout=60) as client:
        listed = await count(client, operator, f"s{args.tag}-")
    out |= {"online_after_hold": held, "offline_after_hold": offline, "heartbeat_fresh_after_hold": fresh}
    out["listed_online_by_gateway"] = listed
    out["sockets_lost"] = sum(s.lost for s in sims)
    out["registered"] = sum(s.registered.is_set() for s in sims)
    stable = held == fresh == listed == args.stations and not offline and not out["sockets_lost"]
    out["station_sockets"] = held if stable else 0
    say(f"sockets: {json.dumps(out)}")
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
        SimStation(url + "/v1/station", mint(issuer, sid, station=True), sid, delivered)
        for sid in (f"c{args.tag}-{i:03d}" for i in range(args.command_stations))
    ]
    tasks = [asyncio.create_task(s.run(stop)) for s in sims]
    async with httpx.AsyncClient(base_url=base, timeout=30) as client:
        for _ in range(240):
            if await count(client, operator, f"c{args.tag}-") >= args.command_stations:
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
    workdir = REPO / ".run" / "bench" / run_id
    #: station ids of this run (the bench's Postgres may keep rows of earlier runs)
    args.tag = run_id.rsplit("-", 1)[-1][:6]
    result: dict[str, Any] = {
        "machine": machine(),
        "targets": TARGETS,
        "request_to_frame_p50_ms": None,
        "request_to_frame_p99_ms": None,
    }
    if args.tries:
        say(f"frames: {args.tries} cold request-stream clicks (and a warm-up)")
        frames = await frames_phase(
            servers,
            run_id,
            workdir / "frames",
            station=f"cam{args.tag}",
            tries=args.tries,
            idle_stop_s=args.idle_stop_s,
            timeout=args.frame_timeout,
        )
        result["frames"] = frames
        result["request_to_frame_p50_ms"] = frames.pop("request_to_frame_p50_ms")
        result["request_to_frame_p99_ms"] = frames.pop("request_to_frame_p99_ms")
        say(f"frames: p50 {result['request_to_frame_p50_ms']} ms, p99 {result['request_to_frame_p99_ms']} ms")
    if not args.stations and not args.commands:
        return result
    prefix = f"{run_id}-"
    await create_topics(servers.kafka, prefix, quiet=True)
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
    engine = make_engine(servers.database_url)
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
            pids = {"api": api.pid, "streams": worker.pid}
            result["sockets"] = await sockets_phase(args, base, issuer, operator, engine, pids)
            result["station_sockets"] = result["sockets"]["station_sockets"]
        if args.commands:
            say(f"commands: {args.commands} open-gate over {args.command_stations} stations")
            result["commands"] = await commands_phase(args, base, issuer, operator)
            result["commands_per_s"] = result["commands"]["commands_per_s"]
            result["at_most_once"] = result["commands"]["at_most_once"]
    finally:
        await engine.dispose()
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
