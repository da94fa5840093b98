"""Every gateway's reader of ``presence.facts``: pushes each ``PresenceChanged`` as a
``presence`` message to the sockets that sent ``presence-subscribe`` (a ``Broadcast``,
``api/hub.py``)."""

from __future__ import annotations

from typing import Any

from api.hub import Broadcast, Deliver
from producers.envelope import Event
from producers.sessions import PresenceChanged

__all__ = ["Deliver", "PresenceFeed"]


class PresenceFeed(Broadcast):
    """Reads ``presence.facts`` and pushes each change to the watching sockets."""

    name = "presence"

    def message(self, event: Event) -> dict[str, Any] | None:
        if not isinstance(event, PresenceChanged):
            return None
        user = {
            "user_id": event.user_id,
            "name": event.name,
            "status": event.status,
            "changed_at": event.occurred_at.isoformat(),
        }
        return {"type": "presence", "users": [user]}
