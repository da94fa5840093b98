"""Every gateway's reader of ``station.events``: pushes each registry change
(``StationWentOnline``, ``StationWentOffline``) as a ``stations`` message to the sockets
that sent ``stations-subscribe`` (the operator pages), like ``api/presence_feed.py``."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from producers.kafka import EventConsumer
from producers.sessions import StationWentOffline
from producers.stations import StationWentOnline

log = logging.getLogger(__name__)

Deliver = Callable[[dict[str, Any]], Awaitable[None]]


def change(event: StationWentOnline | StationWentOffline) -> dict[str, Any]:
    """One station as a ``stations`` message carries it (offline: only the status)."""
    out: dict[str, Any] = {
        "station_id": event.station_id,
        "status": "online" if isinstance(event, StationWentOnline) else "offline",
        "changed_at": event.occurred_at.isoformat(),
    }
    if isinstance(event, StationWentOnline):
        out |= {
            "name": event.name,
            "site": event.site,
            "cameras": [c.model_dump() for c in event.cameras],
            "gates": list(event.gates),
        }
    return out


class StationsFeed:
    def __init__(self, bootstrap: str, topic: str, gateway_id: str) -> None:
        self._consumer = EventConsumer(bootstrap, [topic], group_id=None, client_id=f"{gateway_id}-stations")
        self._watchers: dict[str, Deliver] = {}
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        await self._consumer.start()
        self._task = asyncio.create_task(self._run(), name="stations")

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
            if not isinstance(event, StationWentOnline | StationWentOffline) or not self._watchers:
                continue
            message = {"type": "stations", "stations": [change(event)]}
            for session_id, deliver in list(self._watchers.items()):
                try:
                    await deliver(message)
                except Exception:  # noqa: BLE001 - one broken socket must not stop the others
                    log.exception("stations delivery failed", extra={"session_id": session_id})
