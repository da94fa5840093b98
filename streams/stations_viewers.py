"""Who watches a station room: ``handle(state, fact) -> (state, outputs)``, per room.

Reads ``rtc.facts`` (keyed by room id). For rooms named ``station:<station>:<camera>``
it keeps the peers that watch (every visible peer but the station's own publisher,
whose identity is ``station:<station>``) and writes ``StationViewersChanged`` to
``station.events`` (keyed by station id) when their number changes: the station
agent, on another partition, decides from it when an unwatched stream stops.

Pure: no Kafka, no clock.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from producers.envelope import Event
from producers.rtc import PeerJoined, PeerLeft, RoomClosed
from producers.stations import STATION_PREFIX, StationViewersChanged, station_publisher
from streams.outputs import Outputs

SEEN_LIMIT = 256
PREFIX = STATION_PREFIX


def parse_room(room_id: str) -> tuple[str, str] | None:
    """``station:<station>:<camera>`` → (station, camera); None for other rooms."""
    if not room_id.startswith(PREFIX):
        return None
    station_id, _, camera_id = room_id.removeprefix(PREFIX).partition(":")
    if not station_id or not camera_id or ":" in camera_id:
        return None
    return station_id, camera_id


class RoomViewers(BaseModel):
    model_config = ConfigDict(extra="ignore")

    room_id: str
    peers: list[str] = Field(default_factory=list)
    seen: list[str] = Field(default_factory=list)


def handle(state: RoomViewers | None, event: Event, room_id: str) -> tuple[RoomViewers | None, Outputs]:
    out = Outputs(event, f"viewers:{room_id}", event.occurred_at)
    parsed = parse_room(room_id)
    if parsed is None or not isinstance(event, PeerJoined | PeerLeft | RoomClosed):
        return state, out
    station_id, camera_id = parsed
    current = state or RoomViewers(room_id=room_id)
    event_id = str(event.event_id)
    if event_id in current.seen:
        return state, out
    peers = list(current.peers)
    if isinstance(event, PeerJoined):
        if not event.hidden and event.identity != station_publisher(station_id) and event.peer_id not in peers:
            peers.append(event.peer_id)
    elif isinstance(event, PeerLeft):
        peers = [p for p in peers if p != event.peer_id]
    else:
        peers = []
    if len(peers) != len(current.peers):
        out.add(
            "station.events",
            StationViewersChanged,
            station_id=station_id,
            camera_id=camera_id,
            room_id=room_id,
            viewers=len(peers),
        )
    seen = [*current.seen[-(SEEN_LIMIT - 1) :], event_id]
    return current.model_copy(update={"peers": peers, "seen": seen}), out
