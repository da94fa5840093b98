"""WebSocket sessions one gateway process holds: memory per session, ping → pong and chat
fan-out latency, next to a bare WebSocket echo server holding the same sessions.

``python -m bench.gateway_sessions --json`` prints one JSON object on stdout (progress on
stderr). Run it in the loopback-only namespace:
``scripts/netns.sh bash -c '.venv/bin/python -m bench.gateway_sessions --json'``.

1. ``baseline``: a bare uvicorn + Starlette WebSocket app that answers ``ping`` with
   ``pong`` (no auth, no Kafka, no state) in its own process; ``--sessions`` sockets open,
   ping for ``--hold-s`` and close. Its resident memory per socket and ping p99 are what the
   server framework alone costs on this machine in this run.
2. ``roomlog``: one ``python -m streams`` worker, one ``python -m api`` and one media node
   (rooms are placed on a node before ``joined``; no media flows) on fresh prefixed topics.
   ``--sessions`` clients (one identity each) open ``/v1/rtc`` at ``--rate`` per second and
   ``join`` rooms of ``--room-size``; once every one has its ``joined``, each pings every
   ``--ping-s`` for ``--hold-s`` while ``--chats-per-s`` chat messages go to random rooms.
   A chat's fan-out latency is its send → the last room member's copy.

``kb_per_session`` is the gateway's resident memory after every session joined, minus
before the first opened, divided by the sessions. All clients live in this one process (on
uvloop); its event-loop lag is reported beside the latencies, since a busy client delays
every stamp it takes.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import random
import resource
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

import httpx
import websockets

from api.tokens import TokenIssuer
from bench.infra import REPO, Servers, run_bench, say
from bench.join_latency import loop_lag
from bench.load import percentile
from bench.procs import Child, machine, process_cpu_seconds
from bench.stations import free_port
from producers.admin import create_topics
from producers.envelope import utcnow
from producers.fields import Grant
from tests.harness import Infra, api_service, node_service, streams_service

JWT_SECRET = "bench-jwt-secret-that-is-long-enough-32"
TARGETS = {"sessions": 10_000, "kb_per_session": 50, "ping_p99_ms": 100}


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench.gateway_sessions", description=__doc__.split("\n\n")[0])
    p.add_argument("--json", action="store_true", help="one JSON object on stdout (default: indented)")
    p.add_argument("--sessions", type=int, default=10_000, help="sessions on the one gateway (default 10,000)")
    p.add_argument("--room-size", type=int, default=10, help="sessions per room (default 10)")
    p.add_argument("--rate", type=float, default=400.0, help="sessions opened per second (default 400)")
    p.add_argument("--ping-s", type=float, default=10.0, help="each session pings this often (default 10 s)")
    p.add_argument("--hold-s", type=float, default=40.0, help="measuring window once all joined (default 40 s)")
    p.add_argument("--chats-per-s", type=float, default=5.0, help="chat messages per second during the hold")
    p.add_argument("--join-timeout-s", type=float, default=600.0, help="how long every session may take to join")
    p.add_argument("--no-baseline", action="store_true", help="skip the bare echo server phase")
    p.add_argument("--serve-echo", type=int, metavar="PORT", help=argparse.SUPPRESS)  # the baseline child
    args = p.parse_args(argv)
    if args.sessions < 1 or args.room_size < 1 or args.rate <= 0 or args.ping_s <= 0:
        p.error("--sessions, --room-size, --rate and --ping-s must be positive")
    return args


# --- the baseline server -------------------------------------------------------------------


def serve_echo(port: int) -> int:
    """A bare WebSocket server: ``ping`` → ``pong`` with the same ``request_id``."""
    import uvicorn
    from starlette.applications import Starlette
    from starlette.routing import WebSocketRoute
    from starlette.websockets import WebSocket, WebSocketDisconnect

    async def endpoint(ws: WebSocket) -> None:
        await ws.accept()
        with contextlib.suppress(WebSocketDisconnect):
            while True:
                message = json.loads(await ws.receive_text())
                if message.get("type") == "ping":
                    await ws.send_text(json.dumps({"type": "pong", "request_id": message.get("request_id")}))

    app = Starlette(routes=[WebSocketRoute("/ws", endpoint)])
    uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning", access_log=False, ws_max_size=64 * 1024)
    return 0


# --- the clients ------------------------------------------------------------------------------


class Session:
    """One client socket: optionally joins a room, answers nothing, stamps what it gets."""

    def __init__(self, n: int, room: str | None, run: Run) -> None:
        self.n, self.room, self.run_ = n, room, run
        self.ws: Any = None
        self.joined = asyncio.Event()
        self.lost: str | None = None
        self.errors = 0

    async def run(self, url: str, stop: asyncio.Event) -> None:
        try:
            async with websockets.connect(
                url, ping_interval=None, open_timeout=120, max_size=2**20, compression=None
            ) as ws:
                self.ws = ws
                if self.room is None:
                    self.joined.set()
                else:
                    await ws.send(json.dumps({"type": "join", "room": self.room, "request_id": f"j{self.n}"}))
                reader = asyncio.create_task(self._read(ws))
                await stop.wait()
                reader.cancel()
        except (OSError, TimeoutError, websockets.WebSocketException) as exc:
            self.lost = f"{type(exc).__name__}: {exc}"
        finally:
            self.ws = None

    async def _read(self, ws: Any) -> None:
        run = self.run_
        try:
            async for text in ws:
                now = time.perf_counter()
                m = json.loads(text)
                kind = m.get("type")
                if kind == "pong":
                    sent = run.pings.pop(m.get("request_id"), None)
                    if sent is not None and run.measuring:
                        run.ping_ms.append(1000.0 * (now - sent))
                elif kind == "chat":
                    run.chat_seen(m.get("text", ""), now)
                elif kind == "joined":
                    self.joined.set()
                elif kind == "error":
                    self.errors += 1
                    if not self.joined.is_set():
                        self.lost = f"join refused: {m.get('code')}"
        except websockets.ConnectionClosed as exc:
            self.lost = self.lost or f"closed {exc.rcvd.code if exc.rcvd else '?'}"


class Run:
    """The sessions of one phase and what they measured."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.sessions: list[Session] = []
        self.pings: dict[str, float] = {}
        self.ping_ms: list[float] = []
        self.measuring = False
        self.chats: dict[str, tuple[float, int, list[float]]] = {}  # text → (sent, expected, receipts)

    def chat_seen(self, text: str, now: float) -> None:
        entry = self.chats.get(text)
        if entry is not None:
            entry[2].append(now)

    async def open(
        self, url: str, stop: asyncio.Event, rooms: bool, tokens: list[str] | None
    ) -> list[asyncio.Task[None]]:
        size = self.args.room_size
        tasks = []
        started = time.monotonic()
        for n in range(self.args.sessions):
            room = f"r{n // size:05d}" if rooms else None
            session = Session(n, room, self)
            self.sessions.append(session)
            target = url if tokens is None else f"{url}?token={tokens[n]}"
            tasks.append(asyncio.create_task(session.run(target, stop)))
            await asyncio.sleep(max(0.0, started + (n + 1) / self.args.rate - time.monotonic()))
            if n % 1000 == 999:
                say(f"  {n + 1} sessions opened, {sum(s.joined.is_set() for s in self.sessions)} ready")
        return tasks

    async def wait_ready(self, timeout: float) -> float:
        started = time.monotonic()
        while time.monotonic() - started < timeout:
            ready = sum(s.joined.is_set() for s in self.sessions)
            failed = sum(s.lost is not None for s in self.sessions)
            if ready + failed >= len(self.sessions):
                break
            await asyncio.sleep(0.5)
        return time.monotonic() - started

    async def pinger(self) -> None:
        """Every session pings once per ``--ping-s``, spread evenly (one scheduler task, not
        one sleeping task per session)."""
        per_s = len(self.sessions) / self.args.ping_s
        seq = 0
        started = time.monotonic()
        order = list(self.sessions)
        random.shuffle(order)
        while True:
            session = order[seq % len(order)]
            ws = session.ws
            if ws is not None:
                request_id = f"p{seq}"
                self.pings[request_id] = time.perf_counter()
                with contextlib.suppress(websockets.ConnectionClosed):
                    await ws.send(json.dumps({"type": "ping", "request_id": request_id}))
            seq += 1
            await asyncio.sleep(max(0.0, started + seq / per_s - time.monotonic()))

    async def chatter(self) -> None:
        if self.args.chats_per_s <= 0:
            return
        size = self.args.room_size
        k = 0
        while True:
            await asyncio.sleep(1.0 / self.args.chats_per_s)
            room = random.randrange(max(1, len(self.sessions) // size))
            members = [
                s for s in self.sessions[room * size : (room + 1) * size] if s.ws is not None and s.joined.is_set()
            ]
            if not members:
                continue
            text = f"c{k}"
            k += 1
            self.chats[text] = (time.perf_counter(), len(members), [])
            with contextlib.suppress(websockets.ConnectionClosed):
                await members[0].ws.send(json.dumps({"type": "chat", "text": text, "request_id": text}))

    def chat_summary(self) -> dict[str, Any]:
        last, every, short = [], [], 0
        for sent, expected, receipts in self.chats.values():
            every += [1000.0 * (r - sent) for r in receipts]
            if len(receipts) >= expected:
                last.append(1000.0 * (max(receipts) - sent))
            else:
                short += 1
        last.sort()
        every.sort()
        return {
            "messages": len(self.chats),
            "incomplete": short,
            "fanout_last_p50_ms": round(percentile(last, 50), 1) if last else None,
            "fanout_last_p99_ms": round(percentile(last, 99), 1) if last else None,
            "delivery_p99_ms": round(percentile(every, 99), 1) if every else None,
        }


def runqueue_wait_s(pid: int) -> float:
    """Seconds the process's threads have waited for a CPU (``/proc/PID/schedstat``, field 2):
    on a shared machine this tells a starved server from a slow one."""
    total = 0
    for task in Path(f"/proc/{pid}/task").iterdir():
        with contextlib.suppress(OSError, IndexError, ValueError):
            total += int((task / "schedstat").read_text().split()[1])
    return total / 1e9


def rss_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


async def phase(
    args: argparse.Namespace, name: str, url: str, server_pid: int, tokens: list[str] | None
) -> dict[str, Any]:
    """Open the sessions, wait until all are ready, measure for ``--hold-s``, close."""
    run = Run(args)
    stop = asyncio.Event()
    lag: list[float] = []
    lag_task = asyncio.create_task(loop_lag(lag, 0.05))
    await asyncio.sleep(1)
    rss_before = rss_kb(server_pid)
    cpu_before = process_cpu_seconds(server_pid)
    say(f"{name}: opening {args.sessions} sessions at {args.rate}/s (server rss {rss_before // 1024} MiB)")
    tasks = await run.open(url, stop, rooms=tokens is not None, tokens=tokens)
    ready_s = await run.wait_ready(args.join_timeout_s)
    ready = sum(s.joined.is_set() and s.lost is None for s in run.sessions)
    say(f"{name}: {ready}/{args.sessions} ready {ready_s:.1f} s after the last opened")
    await asyncio.sleep(5)  # settle: the last joins' notifications, allocator
    rss_after = rss_kb(server_pid)
    pinger = asyncio.create_task(run.pinger())
    chatter = asyncio.create_task(run.chatter()) if tokens is not None else None
    await asyncio.sleep(min(args.ping_s, 5))
    lag.clear()
    cpu_hold = process_cpu_seconds(server_pid)
    wait_hold = runqueue_wait_s(server_pid)
    run.measuring = True
    await asyncio.sleep(args.hold_s)
    run.measuring = False
    hold_cpu = process_cpu_seconds(server_pid) - cpu_hold
    hold_wait = runqueue_wait_s(server_pid) - wait_hold
    for task in (pinger, chatter):
        if task is not None:
            task.cancel()
    await asyncio.sleep(2)  # the last chats arrive
    # held: joined, and still open with nothing lost at the end of the hold
    held = sum(s.ws is not None and s.joined.is_set() and s.lost is None for s in run.sessions)
    lost = [s.lost for s in run.sessions if s.lost is not None]
    reasons = Counter(reason.split(":")[0] for reason in lost)
    stop.set()
    await asyncio.gather(*tasks, return_exceptions=True)
    lag_task.cancel()
    pings = sorted(run.ping_ms)
    lag.sort()
    out: dict[str, Any] = {
        "sessions_offered": args.sessions,
        "sessions": held,
        "ready": ready,
        "ready_s_after_opened": round(ready_s, 1),
        "lost": len(lost),
        "lost_reasons": dict(reasons.most_common(5)),
        "lost_examples": lost[:5],
        "server_rss_before_mib": round(rss_before / 1024, 1),
        "server_rss_after_mib": round(rss_after / 1024, 1),
        "kb_per_session": round((rss_after - rss_before) / max(1, ready), 1),
        "pings": len(pings),
        "ping_p50_ms": round(percentile(pings, 50), 1) if pings else None,
        "ping_p99_ms": round(percentile(pings, 99), 1) if pings else None,
        "server_cpu_pct_during_hold": round(100.0 * hold_cpu / args.hold_s, 1),
        # share of the hold the server's threads were runnable but waited for a CPU
        "server_runqueue_wait_pct_during_hold": round(100.0 * hold_wait / args.hold_s, 1),
        "server_cpu_s_total": round(process_cpu_seconds(server_pid) - cpu_before, 1),
        "client_loop_lag_p99_ms": round(percentile(lag, 99), 1) if lag else None,
    }
    if tokens is not None:
        out["chat"] = run.chat_summary()
    return out


async def wait_healthy(base: str, path: str = "/healthz") -> None:
    async with httpx.AsyncClient(base_url=base, timeout=5) as client:
        for _ in range(240):
            with contextlib.suppress(httpx.HTTPError):
                if (await client.get(path)).status_code < 500:
                    return
            await asyncio.sleep(0.5)
    raise RuntimeError(f"{base}{path} never answered")


def mint_all(n: int) -> list[str]:
    issuer = TokenIssuer(JWT_SECRET, "roomlog")
    now = utcnow()
    grants = [Grant.JOIN, Grant.PUBLISH, Grant.SUBSCRIBE]
    return [
        issuer.mint(identity=f"u{i:05d}", name=f"u{i:05d}", room=None, grants=grants, ttl_s=7200, now=now)[0]
        for i in range(n)
    ]


async def measure(args: argparse.Namespace, servers: Servers, run_id: str) -> dict[str, Any]:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    if hard < args.sessions + 1000:
        say(f"warning: the open-files limit ({hard}) is below {args.sessions} sessions")
    workdir = REPO / ".run" / "bench" / run_id
    result: dict[str, Any] = {"machine": machine(), "targets": TARGETS, "config": vars(args).copy()}
    result["config"].pop("serve_echo", None)
    if not args.no_baseline:
        port = free_port()
        echo = Child("echo", "bench.gateway_sessions", {}, workdir, args=["--serve-echo", str(port)]).start()
        try:
            await wait_healthy(f"http://127.0.0.1:{port}", "/")
            result["baseline"] = {
                "what": "bare uvicorn + Starlette WebSocket ping/pong server, no auth, no Kafka, no state",
                **await phase(args, "baseline", f"ws://127.0.0.1:{port}/ws", echo.pid, None),
            }
        finally:
            echo.stop()
    prefix = f"{run_id}-"
    await create_topics(servers.kafka, prefix, quiet=True)
    infra = Infra(servers.kafka, servers.database_url, "", "", "")
    port = free_port()
    # rooms are placed on a media node before `joined` is sent: one node (no media flows)
    worker = streams_service(infra, prefix, workdir, log_level="warning").start()
    node = node_service(infra, prefix, workdir, f"{prefix}n0").start()
    api = api_service(infra, prefix, workdir, port, jwt_secret=JWT_SECRET, log_level="warning").start()
    try:
        say(f"minting {args.sessions} tokens")
        tokens = mint_all(args.sessions)
        await wait_healthy(f"http://127.0.0.1:{port}")
        await asyncio.sleep(5)  # the worker joins its consumer groups
        roomlog = await phase(args, "roomlog", f"ws://127.0.0.1:{port}/v1/rtc", api.pid, tokens)
        result["roomlog"] = roomlog
        result["streams_cpu_s"] = round(worker.cpu_seconds(), 1)
    finally:
        for child in (api, node, worker):
            child.stop()
        for child in (api, node, worker):
            if child.alive():
                say(child.tail())
    result["sessions"] = roomlog["sessions"]
    result["kb_per_session"] = roomlog["kb_per_session"]
    result["ping_p99_ms"] = roomlog["ping_p99_ms"]
    result["chat_fanout_p99_ms"] = roomlog["chat"]["fanout_last_p99_ms"]
    result["meets_targets"] = {
        "sessions": roomlog["sessions"] >= TARGETS["sessions"],
        "kb_per_session": roomlog["kb_per_session"] < TARGETS["kb_per_session"],
        "ping_p99_ms": roomlog["ping_p99_ms"] is not None and roomlog["ping_p99_ms"] < TARGETS["ping_p99_ms"],
    }
    say(
        f"{roomlog['sessions']} sessions, {roomlog['kb_per_session']} KB each, ping p99 {roomlog['ping_p99_ms']} ms, "
        f"chat fan-out p99 {result['chat_fanout_p99_ms']} ms"
        + (
            f"; bare server: {result['baseline']['kb_per_session']} KB, ping p99 {result['baseline']['ping_p99_ms']} ms"
            if "baseline" in result
            else ""
        )
    )
    return result


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.serve_echo:
        return serve_echo(args.serve_echo)
    return run_bench(lambda servers, run_id: measure(args, servers, run_id), as_json=args.json)


if __name__ == "__main__":
    sys.exit(main())
