"""bench.stations' ``frames`` phase: request-stream click → first frame decoded by a viewer.

A streams worker, one media node and an api (real processes, their own prefixed topics),
GStreamer's RTSP test camera (``tests/rtsp_server.py``) and a real edge agent
(``python -m edge``, every codec factory raising). Each try is cold: the previous stream was
stopped (nobody watched for ``idle_stop_s``) and its RTSP session closed before the click.
A try, as the stations page does it: the operator socket sends ``request-stream``; on
``stream-ready`` a viewer joins the station room (the Python SDK, aiortc decoding) and the
try ends when it decodes a frame of camera 1 (``client.synthetic.decode_pattern``).

Per hop (the profile): the click → ``StreamRequested`` on the log (the gateway's checks),
→ ``StationCommand start-stream`` (streams), → ``StationCommandCompleted`` (the edge agent:
the command's delivery, RTSP DESCRIBE/SETUP/PLAY and the first keyframe, join, publish with
ICE/DTLS, the first packet sent; the agent logs its own steps), → ``stream-ready`` at the
operator, → the viewer joined, → its track, → the first decoded frame. Log times are the
Kafka records' timestamps (the producer's clock: this machine's).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import websockets
from aiokafka import AIOKafkaConsumer

from bench.infra import Servers, say
from bench.procs import Child
from client import Room
from client.synthetic import decode_pattern
from producers.admin import create_topics
from tests.harness import Infra, api_service, free_port, http_ready, mint_token, node_service, streams_service
from tests.rtsp_server import RtspCamera
from tests.stations_stack import station_token, write_config

STEPS = re.compile(r"start ms: (.*)$")


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return round(ordered[min(len(ordered) - 1, max(0, round(p / 100 * (len(ordered) - 1))))], 1)


def spread(values: list[float]) -> dict[str, float]:
    return {"p50": percentile(values, 50), "p99": percentile(values, 99), "max": round(max(values), 1)}


async def log_times(kafka: str, topics: list[str]) -> dict[tuple[str, str], float]:
    """(event type, command id) → record timestamp (s) of what the tries wrote."""
    reader = AIOKafkaConsumer(*topics, bootstrap_servers=kafka, auto_offset_reset="earliest", group_id=None)
    await reader.start()
    out: dict[tuple[str, str], float] = {}
    try:
        while True:
            got = await reader.getmany(timeout_ms=2000)
            if not got:
                return out
            for records in got.values():
                for r in records:
                    body = json.loads(r.value or b"{}")
                    command = str(body.get("command_id") or "")
                    out.setdefault((str(body.get("type")), command), r.timestamp / 1000)
    finally:
        await reader.stop()


class Operator:
    def __init__(self, ws: Any) -> None:
        self.ws = ws
        self.inbox: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self.task = asyncio.create_task(self._read())

    async def _read(self) -> None:
        with contextlib.suppress(websockets.ConnectionClosed):
            async for text in self.ws:
                self.inbox.put_nowait(json.loads(text))

    async def wait(self, kinds: set[str], timeout: float) -> dict[str, Any]:
        async with asyncio.timeout(timeout):
            while True:
                m = await self.inbox.get()
                if m.get("type") in kinds:
                    return m


async def one_try(base: str, op: Operator, station: str, viewer_token: str, timeout: float) -> dict[str, Any]:
    """Client-side times (s, wall clock) of one cold click."""
    t: dict[str, Any] = {"click": time.time()}
    await op.ws.send(json.dumps({"type": "request-stream", "station_id": station, "camera_id": "cam1"}))
    requested = await op.wait({"stream-requested", "error"}, timeout)
    if requested["type"] == "error":
        raise RuntimeError(f"request-stream refused: {requested}")
    t["command_id"] = requested["command_id"]
    ready = await op.wait({"stream-ready", "stream-failed"}, timeout)
    if ready["type"] != "stream-ready":
        raise RuntimeError(f"stream failed: {ready}")
    t["ready"] = time.time()
    first: asyncio.Future[float] = asyncio.get_running_loop().create_future()

    async def on_event(kind: str, payload: Any) -> None:
        if kind != "track" or getattr(payload.track, "kind", "video") != "video":
            return
        t.setdefault("track", time.time())

        async def consume() -> None:
            with contextlib.suppress(Exception):
                while not first.done():
                    frame = await payload.track.recv()
                    if decode_pattern(frame)[0] == 1 and not first.done():
                        first.set_result(time.time())

        asyncio.ensure_future(consume())

    ws_url = base.replace("http", "ws") + "/v1/rtc"
    viewer = Room(url=ws_url, token=viewer_token, room=ready["room"], name="bench-viewer")
    viewer.on(on_event)
    try:
        await viewer.open()
        t["joined"] = time.time()
        t["frame"] = await asyncio.wait_for(first, timeout)
    finally:
        with contextlib.suppress(Exception):
            await viewer.leave()
    return t


async def frames_phase(
    servers: Servers, run_id: str, workdir: Path, *, station: str, tries: int, idle_stop_s: float, timeout: float
) -> dict[str, Any]:
    prefix = f"{run_id}-f-"
    await create_topics(servers.kafka, prefix, quiet=True)
    infra = Infra(servers.kafka, servers.database_url, "", "", "")
    port = free_port()
    services = [
        streams_service(infra, prefix, workdir, node_timeout_s=3, station_idle_stop_s=idle_stop_s),
        node_service(infra, prefix, workdir, f"{prefix}n0"),
        api_service(infra, prefix, workdir, port),
    ]
    stack = [Child(s.name, s.module, s.env, workdir) for s in services]
    base = f"http://127.0.0.1:{port}"
    camera = RtspCamera(host="127.0.0.1")
    edge: Child | None = None
    out: dict[str, Any] = {"tries": tries, "idle_stop_s": idle_stop_s}
    try:
        for child in stack:
            child.start()
        camera.start()
        await http_ready(f"{base}/healthz", stack[-1], timeout=180)  # type: ignore[arg-type]
        config = write_config(
            workdir / "edge.toml",
            station_id=station,
            api=base,
            token=await station_token(base, station),
            state_dir=workdir / "edge-state",
            cameras=(("cam1", camera.url(1)),),
            forbid_codecs=True,
        )
        edge = Child("edge", "edge", {}, workdir, args=["--config", str(config)]).start()
        operator_token = await mint_token(base, "bench-operator", ["station_control"])
        viewer_token = await mint_token(base, "bench-viewer", ["join", "subscribe"], f"station:{station}:cam1")
        async with websockets.connect(f"{base.replace('http', 'ws')}/v1/rtc?token={operator_token}") as ws:
            op = Operator(ws)
            out |= await run_tries(base, op, station, viewer_token, camera, tries + 1, timeout)
            op.task.cancel()
        logged = await log_times(servers.kafka, [f"{prefix}station.events", f"{prefix}station.commands"])
        logged |= edge_received(edge.log_path)
        out |= hops(out.pop("raw"), logged, edge_steps(edge.log_path))
    finally:
        if edge is not None:
            edge.stop()
        camera.stop()
        for child in reversed(stack):
            child.stop()
    return out


async def run_tries(
    base: str, op: Operator, station: str, viewer_token: str, camera: RtspCamera, tries: int, timeout: float
) -> dict[str, Any]:
    """``tries`` clicks (the first a warm-up, not counted), each after the stream stopped."""
    raw: list[dict[str, Any]] = []
    failures: list[str] = []
    for i in range(tries):
        for _ in range(600):  # the station online, the previous stream stopped, its RTSP session closed
            ready = await station_online(base, op, station) and camera.sessions() == 0
            if ready:
                break
            await asyncio.sleep(0.1)
        try:
            t = await one_try(base, op, station, viewer_token, timeout)
        except Exception as exc:  # noqa: BLE001 - a failed try is counted, not fatal
            failures.append(f"{type(exc).__name__}: {exc}")
            say(f"frames: try {i} failed: {exc!r}")
            continue
        ms = (t["frame"] - t["click"]) * 1000
        say(f"frames: try {i}{' (warm-up)' if i == 0 else ''}: click → first frame {ms:.0f} ms")
        if i:
            raw.append(t)
    values = [(t["frame"] - t["click"]) * 1000 for t in raw]
    return {
        "request_to_frame_p50_ms": percentile(values, 50) if values else None,
        "request_to_frame_p99_ms": percentile(values, 99) if values else None,
        "request_to_frame_ms": [round(v) for v in values],
        "failures": failures,
        "raw": raw,
    }


_online_cache: dict[str, float] = {}


async def station_online(base: str, op: Operator, station: str) -> bool:
    """Once seen online, trusted for the phase (the agent heartbeats all along)."""
    if station in _online_cache:
        return True
    import httpx

    token = await mint_token(base, "bench-operator", ["station_control"])
    async with httpx.AsyncClient(base_url=base, timeout=5) as client:
        r = await client.get(f"/v1/stations/{station}", headers={"Authorization": f"Bearer {token}"})
    if r.status_code == 200 and r.json().get("status") == "online":
        _online_cache[station] = time.time()
        return True
    return False


def edge_received(log_path: Path) -> dict[tuple[str, str], float]:
    """("received", command id) → when the edge agent's log says the command arrived (s)."""
    out: dict[tuple[str, str], float] = {}
    for line in log_path.read_text(errors="replace").splitlines():
        if '"command received"' not in line:
            continue
        record = json.loads(line)
        at = datetime.fromisoformat(record["ts"].replace("Z", "+00:00")).timestamp()
        out.setdefault(("received", str(record.get("command_id"))), at)
    return out


def edge_steps(log_path: Path) -> list[dict[str, float]]:
    """The edge agent's own start steps (ms from ``CameraStream.start``), in order."""
    steps = []
    for line in log_path.read_text(errors="replace").splitlines():
        m = STEPS.search(line.replace('"}', ""))
        if m:
            steps.append({k: float(v) for k, v in (kv.split("=") for kv in m.group(1).split())})
    return steps


def hops(
    raw: list[dict[str, Any]], logged: dict[tuple[str, str], float], steps: list[dict[str, float]]
) -> dict[str, Any]:
    """ms per hop, p50/p99/max over the tries."""
    names = {
        "click→StreamRequested": ("click", ("StreamRequested", None)),
        "StreamRequested→StationCommand": (("StreamRequested", None), ("StationCommand", None)),
        "StationCommand→edge received": (("StationCommand", None), ("received", None)),
        "edge received→Completed": (("received", None), ("StationCommandCompleted", None)),
        "Completed→stream-ready": (("StationCommandCompleted", None), "ready"),
        "stream-ready→viewer joined": ("ready", "joined"),
        "joined→track": ("joined", "track"),
        "track→first frame": ("track", "frame"),
    }
    per: dict[str, list[float]] = {name: [] for name in names}
    for t in raw:

        def at(point: Any, t: dict[str, Any] = t) -> float | None:
            if isinstance(point, str):
                return t.get(point)
            return logged.get((point[0], t["command_id"]))

        for name, (a, b) in names.items():
            start, end = at(a), at(b)
            if start is not None and end is not None:
                per[name].append((end - start) * 1000)
    out: dict[str, Any] = {"hops_ms": {name: spread(v) for name, v in per.items() if v}}
    edge = steps[1:]  # the warm-up's first
    if edge:
        keys = list(edge[0])
        out["edge_start_ms"] = {k: spread([s[k] for s in edge if k in s]) for k in keys}
    return out
