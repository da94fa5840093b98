"""Every gateway's reader of ``station.events``: pushes each registry change
(``StationWentOnline``, ``StationWentOffline``) as a ``stations`` message to the sockets
that sent ``stations-subscribe`` (the operator pages): a ``Broadcast``, ``api/hub.py``."""

from __future__ import annotations

from typing import Any

from api.hub import Broadcast
from producers.envelope import Event
from producers.sessions import StationWentOffline
from producers.stations import StationWentOnline


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


class StationsFeed(Broadcast):
    """Reads ``station.events`` and pushes each registry change to the watching sockets."""

    name = "stations"
    #: Heartbeats are most of ``station.events``: not decoded here.
    types = frozenset({"StationWentOnline", "StationWentOffline"})

    def message(self, event: Event) -> dict[str, Any] | None:
        if not isinstance(event, StationWentOnline | StationWentOffline):
            return None
        return {"type": "stations", "stations": [change(event)]}
