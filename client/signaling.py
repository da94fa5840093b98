"""The signaling socket of the SDK: requests with ids, answers matched to them,
everything else delivered as events.

Every frame is parsed with the gateway's own server-message models (``api.messages``);
a frame that is not one (a newer server's message type, say) is logged and skipped."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import websockets
from pydantic import ValidationError

from api.messages import ServerMessage, parse_server

log = logging.getLogger(__name__)


class RoomError(Exception):
    def __init__(self, code: str, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message


Handler = Callable[[dict[str, Any]], Awaitable[None]]


class Signaling:
    def __init__(self, url: str, token: str, on_message: Handler, on_closed: Callable[[], Awaitable[None]]) -> None:
        self.url = url
        self.token = token
        self._on_message = on_message
        self._on_closed = on_closed
        self._ws: Any = None
        self._pending: dict[str, asyncio.Future[dict[str, Any]]] = {}
        self._reader: asyncio.Task[None] | None = None
        self.closing = False

    async def open(self) -> None:
        sep = "&" if "?" in self.url else "?"
        self._ws = await websockets.connect(f"{self.url}{sep}token={self.token}", max_size=2**20)
        self._reader = asyncio.create_task(self._read(), name="roomlog-signaling")

    async def close(self) -> None:
        self.closing = True
        if self._ws is not None:
            await self._ws.close()
        if self._reader is not None:
            self._reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reader

    @property
    def connected(self) -> bool:
        """The socket is open and read (not closed, not lost)."""
        return self._ws is not None and self._reader is not None and not self._reader.done() and not self.closing

    async def send(self, message: dict[str, Any]) -> None:
        await self._ws.send(json.dumps(message))

    async def request(self, message: dict[str, Any], answer: set[str], timeout: float = 15.0) -> dict[str, Any]:
        """Send a request and wait for the answer of one of the ``answer`` types (or an error)."""
        request_id = uuid.uuid4().hex[:12]
        future: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._pending[request_id] = future
        try:
            await self.send({**message, "request_id": request_id})
            reply = await asyncio.wait_for(future, timeout)
        finally:
            self._pending.pop(request_id, None)
        if reply["type"] == "error":
            raise RoomError(reply["code"], reply["message"])
        if reply["type"] not in answer:
            raise RoomError("unexpected", f"expected {answer}, got {reply['type']}")
        return reply

    @staticmethod
    def _parse(text: str) -> ServerMessage | None:
        try:
            return parse_server(json.loads(text))
        except (ValueError, ValidationError) as exc:
            log.warning("not a server message of this protocol version, skipped: %.200s (%s)", text, exc)
            return None

    async def _read(self) -> None:
        try:
            async for text in self._ws:
                parsed = self._parse(text)
                if parsed is None:
                    continue
                message = parsed.wire()
                future = self._pending.get(message.get("request_id") or "")
                if future is not None and not future.done():
                    future.set_result(message)
                    if message["type"] in ("error", "pong"):
                        continue
                await self._on_message(message)
        except websockets.ConnectionClosed:
            pass
        except Exception:  # noqa: BLE001
            log.exception("signaling reader failed")
        for future in self._pending.values():
            if not future.done():
                future.set_exception(RoomError("disconnected", "signaling connection closed"))
        if not self.closing:
            await self._on_closed()
