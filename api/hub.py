"""The gateway's one notification fan-out: a log reader that pushes messages to sockets.

``Fanout`` is the shape: it reads one topic from its end, asks ``route`` which registered
sessions get which message, and delivers each (one broken socket does not stop the
others). Two readers use it:

- ``Hub`` reads the partition of ``gateway.notifications`` that its gateway id maps to,
  drops what is addressed to other gateways, and hands each message to the socket of its
  session (or sessions);
- ``PresenceFeed`` (``api/presence_feed.py``) reads ``presence.facts`` and pushes each
  ``PresenceChanged`` to every socket that sent ``presence-subscribe``.

A new push (a station feed, say) subclasses ``Fanout`` and writes ``route``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Iterable
from typing import Any

from observability import tracing
from producers.envelope import Event
from producers.kafka import EventConsumer
from producers.rtc import Notification

log = logging.getLogger(__name__)

Deliver = Callable[[dict[str, Any]], Awaitable[None]]


class Fanout:
    """Reads ``topic`` (from its end) and delivers what ``route`` returns to the registered sessions."""

    name = "fanout"
    #: Skip what is already in the assigned partition (a reader with an ``address``: it is
    #: assigned one partition at start); a subscribed reader starts at the latest offset anyway.
    seek_end = False
    #: The event types ``route`` can use (``None``: all); others are skipped undecoded.
    types: frozenset[str] | None = None

    def __init__(self, bootstrap: str, topic: str, gateway_id: str, *, address: str | None = None) -> None:
        self._consumer = EventConsumer(
            bootstrap,
            [topic],
            group_id=None,
            address=address,
            client_id=f"{gateway_id}-{self.name}",
            types=self.types,
        )
        self.gateway_id = gateway_id
        self._sessions: dict[str, Deliver] = {}
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        await self._consumer.start()
        if self.seek_end:
            await self._consumer.seek_to_end()
        self._task = asyncio.create_task(self._run(), name=self.name)

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

    def route(self, event: Event) -> Iterable[tuple[str, dict[str, Any]]]:
        """``(session_id, message)`` pairs for one event (sessions not registered are skipped)."""
        return ()

    async def _run(self) -> None:
        async for received in self._consumer:
            routed = self.route(received.event)
            if not tracing.enabled():
                await self._deliver(routed)
                continue
            routed = list(routed)
            if not routed:
                continue
            kind = routed[0][1].get("type")  # the answer is sent in the trace its record carries
            with tracing.consumed(f"notify {kind}", received.headers, received.event, topic=received.topic):
                await self._deliver(routed)

    async def _deliver(self, routed: Iterable[tuple[str, dict[str, Any]]]) -> None:
        for session_id, message in routed:
            deliver = self._sessions.get(session_id)
            if deliver is None:
                continue
            try:
                await deliver(message)
            except Exception:  # noqa: BLE001 - one broken socket must not stop the others
                log.exception("%s delivery failed", self.name, extra={"session_id": session_id})


class Hub(Fanout):
    """``gateway.notifications`` → the sessions a ``Notification`` names, on this gateway."""

    name = "notifications"
    seek_end = True

    def __init__(self, bootstrap: str, topic: str, gateway_id: str) -> None:
        super().__init__(bootstrap, topic, gateway_id, address=gateway_id)

    def route(self, event: Event) -> Iterable[tuple[str, dict[str, Any]]]:
        if not isinstance(event, Notification) or event.gateway_id != self.gateway_id:
            return ()
        return [(session_id, event.message) for session_id in event.sessions()]


class Broadcast(Fanout):
    """A topic's changes to every socket that asked to watch them (the lobby's presence,
    the operators' stations): ``message`` turns an event into the pushed message, or ``None``."""

    def watch(self, session_id: str, deliver: Deliver) -> None:
        self.register(session_id, deliver)

    def unwatch(self, session_id: str) -> None:
        self.unregister(session_id)

    def message(self, event: Event) -> dict[str, Any] | None:
        return None

    def route(self, event: Event) -> Iterable[tuple[str, dict[str, Any]]]:
        message = self.message(event) if self._sessions else None
        if message is None:
            return ()
        return [(session_id, message) for session_id in list(self._sessions)]
