"""Every gateway's reader of ``presence.facts``: pushes each ``PresenceChanged`` as a
``presence`` message to the sockets that sent ``presence-subscribe``."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from producers.kafka import EventConsumer
from producers.sessions import PresenceChanged

log = logging.getLogger(__name__)

Deliver = Callable[[dict[str, Any]], Awaitable[None]]


class PresenceFeed:
    """Reads ``presence.facts`` and pushes each change to the watching sockets."""

    def __init__(self, bootstrap: str, topic: str, gateway_id: str) -> None:
        self._consumer = EventConsumer(bootstrap, [topic], group_id=None, client_id=f"{gateway_id}-presence")
        self._watchers: dict[str, Deliver] = {}
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        await self._consumer.start()
        self._task = asyncio.create_task(self._run(), name="presence")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        await self._consumer.stop()

    def watch(self, session_id: str, deliver: Deliver) -> None:
        self._watchers[session_id] = deliver

    def unwatch(self, session_id: str) -> None:
        self._watchers.pop(session_id, None)

    async def _run(self) -> None:
        async for received in self._consumer:
            event = received.event
            if not isinstance(event, PresenceChanged):
                continue
            message = {
                "type": "presence",
                "users": [
                    {
                        "user_id": event.user_id,
                        "name": event.name,
                        "status": event.status,
                        "changed_at": event.occurred_at.isoformat(),
                    }
                ],
            }
            for session_id, deliver in list(self._watchers.items()):
                try:
                    await deliver(message)
                except Exception:  # noqa: BLE001 - one broken socket must not stop the others
                    log.exception("presence delivery failed", extra={"session_id": session_id})
