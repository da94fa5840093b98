"""The log side of one client socket: the user's session for presence and calls.

When a socket opens the gateway writes ``SessionOpened`` (``session.events``, keyed by
the token's identity), then ``SessionPinged`` every ``session_ping_s`` while it stays
open, and ``SessionClosed`` when it closes: ``closed`` for a clean close (code 1000),
``lost`` otherwise (streams keep a lost session for the resume grace period). Streams
derive presence from these; a gateway that dies writes nothing more, and the presence
TTL takes the session away.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re

from api.services import Services
from producers.sessions import SessionClosed, SessionOpened, SessionPinged

log = logging.getLogger(__name__)

_ID = re.compile(r"^[A-Za-z0-9_.:-]{1,64}$")


def is_user_id(identity: str) -> bool:
    """Presence and calls key users by identity; it must be a log id (``[A-Za-z0-9_.:-]``, ≤ 64)."""
    return bool(_ID.match(identity))


class SessionTracker:
    def __init__(self, svc: Services, user_id: str, session_id: str, name: str) -> None:
        self.svc = svc
        self.user_id = user_id
        self.session_id = session_id
        self.name = name
        self.enabled = is_user_id(user_id)
        self._task: asyncio.Task[None] | None = None

    async def open(self) -> None:
        if not self.enabled:
            return
        await self.svc.publish(
            "session.events",
            SessionOpened.new(
                user_id=self.user_id,
                session_id=self.session_id,
                gateway_id=self.svc.settings.gateway_id,
                name=self.name[:128],
            ),
        )
        self._task = asyncio.create_task(self._heartbeat(), name=f"session-{self.session_id}")

    async def _heartbeat(self) -> None:
        while True:
            await asyncio.sleep(self.svc.settings.session_ping_s)
            try:
                await self.svc.publish(
                    "session.events",
                    SessionPinged.new(
                        user_id=self.user_id, session_id=self.session_id, gateway_id=self.svc.settings.gateway_id
                    ),
                )
            except Exception:  # noqa: BLE001 - the broker may be briefly away; the next ping retries
                log.warning("session ping failed", extra={"session_id": self.session_id})

    async def close(self, code: int | None) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self.enabled:
            await self.svc.publish(
                "session.events",
                SessionClosed.new(
                    user_id=self.user_id, session_id=self.session_id, reason="closed" if code == 1000 else "lost"
                ),
            )
