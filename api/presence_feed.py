"""Every gateway's reader of ``presence.facts``: pushes each ``PresenceChanged`` as a
``presence`` message to the sockets that sent ``presence-subscribe`` (a ``Fanout``,
``api/hub.py``)."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from api.hub import Deliver, Fanout
from producers.envelope import Event
from producers.sessions import PresenceChanged

__all__ = ["Deliver", "PresenceFeed"]


class PresenceFeed(Fanout):
    """Reads ``presence.facts`` and pushes each change to the watching sockets."""

    name = "presence"

    def watch(self, session_id: str, deliver: Deliver) -> None:
        self.register(session_id, deliver)

    def unwatch(self, session_id: str) -> None:
        self.unregister(session_id)

    def route(self, event: Event) -> Iterable[tuple[str, dict[str, Any]]]:
        if not isinstance(event, PresenceChanged):
            return ()
        user = {
            "user_id": event.user_id,
            "name": event.name,
            "status": event.status,
            "changed_at": event.occurred_at.isoformat(),
        }
        message = {"type": "presence", "users": [user]}
        return [(session_id, message) for session_id in list(self._sessions)]
