"""The edge agent: one WebSocket to the gateway (``/v1/station``), registration, heartbeats,
and the station's commands, each run at most once by its id.

Connection: connect, ``register-station`` (with the camera streams still running), wait for
``registered`` (it gives the heartbeat interval), then heartbeats until the socket drops;
reconnect with exponential backoff and full jitter (reset once registered again).

Commands (``command`` messages): ``open-gate`` is recorded in the sqlite store before the
gate driver runs and its outcome after (``edge/store.py``); a command id seen before is
never run again, its recorded outcome is reported instead (a redelivery, a retry, a
command delivered again after a reconnect). Outcomes not yet accepted by the gateway
(``accepted``) are reported again after each registration, so a result lost with a socket,
or with the process, still arrives. ``start-stream`` / ``stop-stream`` start or stop the
camera's one stream (``edge/cameras.py``); they are idempotent by camera. Every command is
acknowledged (``command-ack``) when received and answered (``command-result``).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import random
import signal
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

import websockets

from edge.cameras import Cameras
from edge.config import EdgeConfig
from edge.errors import EdgeError, UnknownGate
from edge.gates import GateDriver
from edge.store import CommandStore, Outcome
from observability import tracing

log = logging.getLogger(__name__)
FATAL_CODES = {"unauthorized", "token_expired", "forbidden", "station_mismatch"}


def backoff(attempt: int, initial_s: float, max_s: float, rng: random.Random) -> float:
    """Full jitter: uniform in [0, min(max, initial * 2^attempt)], at least 50 ms."""
    return max(0.05, rng.uniform(0, min(max_s, initial_s * 2**attempt)))


class EdgeAgent:
    def __init__(
        self,
        config: EdgeConfig,
        store: CommandStore,
        gates: dict[str, GateDriver],
        cameras: Cameras,
        *,
        rng: random.Random | None = None,
    ) -> None:
        self.config = config
        self.store = store
        self.gates = gates
        self.cameras = cameras
        self.rng = rng or random.Random()
        self.station_id = config.station.id
        self.connected = False
        self.registered = False
        self.session_id: str | None = None
        self.heartbeat_s = 2.0
        self.connects = 0
        self._ws: Any = None
        self._send_lock = asyncio.Lock()
        self._executing: set[str] = set()
        self._tasks: set[asyncio.Task[None]] = set()
        self.handlers: dict[str, Callable[[str, dict[str, Any]], Awaitable[None]]] = {
            "open-gate": self.open_gate,
            "start-stream": self.start_stream,
            "stop-stream": self.stop_stream,
        }

    # --- connection ------------------------------------------------------------------

    async def run(self, stop: asyncio.Event) -> None:
        for outcome in self.store.interrupted():
            log.warning("command interrupted by a restart", extra={"command_id": outcome.command_id})
        attempt = 0
        url = f"{self.config.socket_url()}?token={self.config.token()}"
        while not stop.is_set():
            try:
                async with websockets.connect(url, max_size=2**20, open_timeout=10, ping_interval=10) as ws:
                    self._ws, self.connected = ws, True
                    self.connects += 1
                    log.info("connected", extra={"reason": self.config.socket_url()})
                    if await self._session(ws, stop):
                        attempt = 0
            except (OSError, TimeoutError, websockets.WebSocketException) as exc:
                log.warning("connection failed", extra={"reason": f"{type(exc).__name__}: {exc}"})
            finally:
                self._ws, self.connected, self.registered = None, False, False
            if stop.is_set():
                break
            delay = backoff(attempt, self.config.reconnect.initial_s, self.config.reconnect.max_s, self.rng)
            attempt += 1
            log.info("reconnecting", extra={"reason": f"in {delay:.2f}s (attempt {attempt})"})
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), delay)
        await self.shutdown()

    async def _session(self, ws: Any, stop: asyncio.Event) -> bool:
        """One connection: register, then read until it closes or ``stop``. True if it registered."""
        await self.send(self._registration())
        heartbeat: asyncio.Task[None] | None = None
        stopper = asyncio.create_task(stop.wait())
        registered = False
        try:
            while True:
                receive = asyncio.create_task(ws.recv())
                done, _ = await asyncio.wait({receive, stopper}, return_when=asyncio.FIRST_COMPLETED)
                if stopper in done:
                    receive.cancel()
                    await ws.close()
                    return registered
                try:
                    message = json.loads(receive.result())
                except websockets.ConnectionClosed:
                    log.warning("socket closed")
                    return registered
                kind = message.get("type")
                if kind == "registered":
                    registered = self.registered = True
                    self.session_id = message.get("session_id")
                    self.heartbeat_s = float(message.get("heartbeat_s", self.heartbeat_s))
                    log.info("registered", extra={"session_id": self.session_id})
                    if heartbeat is None:
                        heartbeat = asyncio.create_task(self._heartbeats())
                    await self.report_unreported()
                elif kind == "command":
                    self._spawn(self.command(message))
                elif kind == "accepted":
                    known = self.store.get(str(message.get("command_id")))
                    if known is not None and known.status == "done":
                        self.store.mark_reported(known.command_id)
                elif kind == "error":
                    log.warning("gateway error", extra={"reason": f"{message.get('code')}: {message.get('message')}"})
                    if message.get("code") in FATAL_CODES and not registered:
                        return False
        finally:
            stopper.cancel()
            if heartbeat is not None:
                heartbeat.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await heartbeat

    def _registration(self) -> dict[str, Any]:
        s = self.config.station
        return {
            "type": "register-station",
            "station_id": s.id,
            "name": s.name,
            "site": s.site,
            "cameras": [{"camera_id": c.id, "name": c.name, "codec": c.codec} for c in self.config.cameras],
            "gates": [g.id for g in self.config.gates],
            "live_cameras": self.cameras.live(),
        }

    async def _heartbeats(self) -> None:
        while True:
            await asyncio.sleep(self.heartbeat_s)
            with contextlib.suppress(websockets.ConnectionClosed):
                await self.send({"type": "heartbeat"})

    async def send(self, message: dict[str, Any]) -> None:
        ws = self._ws
        if ws is None:
            return
        async with self._send_lock:
            await ws.send(json.dumps(message))

    def _spawn(self, coro: Awaitable[None]) -> None:
        task: asyncio.Task[None] = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def shutdown(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        await self.cameras.stop_all()

    # --- commands --------------------------------------------------------------------

    async def command(self, message: dict[str, Any]) -> None:
        command_id, kind = str(message.get("command_id", "")), str(message.get("kind", ""))
        payload = message.get("payload") or {}
        log.info("command received", extra={"command_id": command_id, "reason": kind})
        if self.config.faults.never_answer:
            log.warning("fault: not answering", extra={"command_id": command_id})
            return
        handler = self.handlers.get(kind)
        if not command_id or handler is None:
            await self.send(
                {"type": "command-result", "command_id": command_id, "ok": False, "error": f"unknown {kind}"}
            )
            return
        if message.get("token"):
            payload = {**payload, "token": message["token"]}
        try:
            # tracing on: in the trace the gateway's `traceparent` carries (api/station_socket.py)
            with tracing.span(f"edge {kind}", parent=tracing.context_of_text(message.get("traceparent")), root=True):
                await handler(command_id, payload | {"deadline": message.get("deadline")})
        except websockets.ConnectionClosed:
            log.warning("socket closed during a command", extra={"command_id": command_id})

    async def report(self, outcome: Outcome) -> None:
        await self.send(
            {
                "type": "command-result",
                "command_id": outcome.command_id,
                "ok": bool(outcome.ok),
                "error": outcome.error,
                "result": outcome.result,
            }
        )

    async def report_unreported(self) -> None:
        for outcome in self.store.unreported():
            log.info("reporting an earlier outcome", extra={"command_id": outcome.command_id})
            await self.report(outcome)

    async def open_gate(self, command_id: str, payload: dict[str, Any]) -> None:
        known = self.store.get(command_id)
        if known is not None:
            if known.status == "done":
                log.info("command seen before: reporting its outcome", extra={"command_id": command_id})
                await self.report(known)
            return  # running here now: its result follows
        if _expired(payload.get("deadline")):
            log.warning("expired command ignored", extra={"command_id": command_id})
            return
        if not self.store.begin(command_id, "open-gate"):
            return
        self._executing.add(command_id)
        await self.send({"type": "command-ack", "command_id": command_id})
        gate_id = str(payload.get("gate_id", ""))
        try:
            gate = self.gates.get(gate_id)
            if gate is None:
                raise UnknownGate(f"no gate {gate_id!r} at this station")
            outcome = self.store.finish(command_id, True, None, await gate.open(command_id))
            log.info("gate opened", extra={"command_id": command_id, "reason": gate_id})
        except EdgeError as exc:
            outcome = self.store.finish(command_id, False, f"{exc.code}: {exc.message}", {})
        except Exception as exc:  # noqa: BLE001 - a driver failure is an outcome, never a crash
            outcome = self.store.finish(command_id, False, f"gate_failed: {exc}", {})
        finally:
            self._executing.discard(command_id)
        if self.config.faults.exit_after_execute:
            log.warning("fault: killed after executing, before reporting", extra={"command_id": command_id})
            os.kill(os.getpid(), signal.SIGKILL)
        await self.report(outcome)

    async def start_stream(self, command_id: str, payload: dict[str, Any]) -> None:
        await self.send({"type": "command-ack", "command_id": command_id})
        try:
            result = await self.cameras.start(
                str(payload.get("camera_id", "")),
                str(payload.get("room_id", "")),
                str(payload.get("source_id", "camera")),
                str(payload.get("token", "")),
            )
        except EdgeError as exc:
            await self.send({"type": "command-result", "command_id": command_id, "ok": False, "error": exc.message})
            return
        await self.send({"type": "command-result", "command_id": command_id, "ok": True, "result": result})

    async def stop_stream(self, command_id: str, payload: dict[str, Any]) -> None:
        await self.send({"type": "command-ack", "command_id": command_id})
        result = await self.cameras.stop(str(payload.get("camera_id", "")))
        await self.send({"type": "command-result", "command_id": command_id, "ok": True, "result": result})

    async def stream_ended(self, camera_id: str, reason: str) -> None:
        """A camera stream failed after its retries: tell the gateway."""
        await self.send({"type": "stream-ended", "camera_id": camera_id, "reason": reason[:500]})

    def health(self) -> dict[str, Any]:
        return {
            "station_id": self.station_id,
            "connected": self.connected,
            "registered": self.registered,
            "session_id": self.session_id,
            "connects": self.connects,
            "streams": self.cameras.live(),
        }


def _expired(deadline: Any) -> bool:
    if not isinstance(deadline, str):
        return False
    try:
        return datetime.fromisoformat(deadline) < datetime.now(UTC)
    except ValueError:
        return False
