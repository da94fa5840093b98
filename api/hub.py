"""The gateway's sockets and the notifications addressed to this gateway.

A gateway holds only sockets. It reads the partition of ``gateway.notifications``
that its gateway id maps to, drops what is addressed to other gateways, and hands
each message to the socket of its session.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from producers.kafka import EventConsumer
from producers.rtc import Notification

log = logging.getLogger(__name__)

Deliver = Callable[[dict[str, Any]], Awaitable[None]]


class Hub:
    def __init__(self, bootstrap: str, topic: str, gateway_id: str) -> None:
        self._consumer = EventConsumer(
            bootstrap, [topic], group_id=None, address=gateway_id, client_id=f"{gateway_id}-notifications"
        )
        self.gateway_id = gateway_id
        self._sessions: dict[str, Deliver] = {}
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        await self._consumer.start()
        await self._consumer.seek_to_end()
        self._task = asyncio.create_task(self._run(), name="notifications")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        await self._consumer.stop()

    def register(self, session_id: str, deliver: Deliver) -> None:
        self._sessions[session_id] = deliver

    def unregister(self, session_id: str) -> None:
        self._sessions.pop(session_id, None)

    async def _run(self) -> None:
        async for received in self._consumer:
            event = received.event
            if not isinstance(event, Notification) or event.gateway_id != self.gateway_id:
                continue
            for session_id in event.sessions():
                deliver = self._sessions.get(session_id)
                if deliver is None:
                    continue
                try:
                    await deliver(event.message)
                except Exception:  # noqa: BLE001 - one broken socket must not stop the others
                    log.exception("delivery failed", extra={"session_id": session_id})
