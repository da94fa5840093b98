"""Station test helpers: a station token, an edge agent's config file and process, the
operator's REST and socket calls. Used by the station integration and browser tests."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx
import websockets

from tests.harness import API_SECRET, Service, wait_for


async def station_token(base: str, station_id: str, ttl_s: int = 3600) -> str:
    async with httpx.AsyncClient(base_url=base, timeout=10) as client:
        r = await client.post(
            "/v1/tokens",
            headers={"X-API-Secret": API_SECRET},
            json={"identity": f"edge-{station_id}", "grants": ["station"], "station_id": station_id, "ttl_s": ttl_s},
        )
        assert r.status_code == 201, r.text
        return str(r.json()["token"])


def write_config(
    path: Path,
    *,
    station_id: str,
    api: str,
    token: str,
    state_dir: Path,
    cameras: tuple[tuple[str, str], ...] = (),
    gates: tuple[str, ...] = ("g1",),
    faults: dict[str, bool] | None = None,
    health_port: int = 0,
    forbid_codecs: bool = False,
) -> Path:
    lines = [
        "[station]",
        f'id = "{station_id}"',
        f'name = "Station {station_id}"',
        'site = "Beijing"',
        f'api_url = "{api}"',
        f'token = "{token}"',
        f'state_dir = "{state_dir}"',
        "[reconnect]",
        "initial_s = 0.2",
        "max_s = 2.0",
        "[health]",
        f"port = {health_port}",
    ]
    for camera_id, url in cameras:
        lines += ["[[cameras]]", f'id = "{camera_id}"', f'name = "Camera {camera_id}"', f'rtsp_url = "{url}"']
    for gate in gates:
        lines += ["[[gates]]", f'id = "{gate}"', f'state_file = "{state_dir / (gate + ".state")}"']
    if forbid_codecs:
        lines += ["[media]", "forbid_codecs = true"]
    if faults:
        lines += ["[faults]"] + [f"{k} = {str(v).lower()}" for k, v in faults.items()]
    path.write_text("\n".join(lines) + "\n")
    return path


def edge_service(config: Path, log_dir: Path, name: str = "edge") -> Service:
    return Service(name, "edge", {}, log_dir / f"{name}.log", ["--config", str(config)])


def gate_openings(state_dir: Path, gate: str = "g1") -> list[dict[str, Any]]:
    path = state_dir / f"{gate}.state"
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def station_status(client: httpx.AsyncClient, token: str, station_id: str) -> str | None:
    r = await client.get(f"/v1/stations/{station_id}", headers=bearer(token))
    return str(r.json()["status"]) if r.status_code == 200 else None


async def wait_status(
    client: httpx.AsyncClient, token: str, station_id: str, status: str, timeout: float, edge: Service | None = None
) -> None:
    async def check() -> bool:
        if edge is not None and status == "online" and not edge.alive():
            raise AssertionError(f"edge agent exited:\n{edge.tail()}")
        return await station_status(client, token, station_id) == status

    await wait_for(check, timeout, f"station {station_id} {status}", interval=0.2)


class Operator:
    """An operator's ``/v1/rtc`` socket: every message kept, waits by predicate."""

    def __init__(self, base: str, token: str) -> None:
        self.url = base.replace("http://", "ws://") + f"/v1/rtc?token={token}"
        self.messages: list[dict[str, Any]] = []
        self.ws: Any = None

    async def __aenter__(self) -> Operator:
        self.ws = await websockets.connect(self.url)
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.ws.close()

    async def send(self, message: dict[str, Any]) -> None:
        await self.ws.send(json.dumps(message))

    async def wait(self, predicate: Any, timeout: float, what: str) -> dict[str, Any]:
        import asyncio

        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            for m in self.messages:
                if predicate(m):
                    return m
            left = deadline - loop.time()
            if left <= 0:
                raise AssertionError(f"timed out waiting for {what}; got {self.messages[-10:]}")
            try:
                self.messages.append(json.loads(await asyncio.wait_for(self.ws.recv(), left)))
            except TimeoutError:
                continue
