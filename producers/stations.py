"""Station events added with the station registry (topic ``station.events``, keyed by
station id). The first station types live in ``producers/sessions.py``; these complete
them: operator commands, registry facts, stream outcomes, viewers of a station room.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field

from producers.envelope import Event
from producers.fields import Id
from producers.sessions import StationCamera

#: Identities and room names the station flow shares (the gateway mints the agent's
#: publish token, streams count a room's viewers without it).
STATION_PREFIX = "station:"
CAMERA_SOURCE = "camera"


def station_room(station_id: str, camera_id: str) -> str:
    """The room a station camera is published into: ``station:<station>:<camera>``."""
    return f"{STATION_PREFIX}{station_id}:{camera_id}"


def station_publisher(station_id: str) -> str:
    """The identity of the token an edge agent publishes a camera with."""
    return f"{STATION_PREFIX}{station_id}"


class StationCommandRequested(Event):
    """An operator asks for a command on a station (``open-gate``), written by the gateway
    after checking the ``station_control`` grant. ``command_id`` is the operator's (a
    retry sends the same id); the outcome goes to ``session_id`` on ``gateway_id``."""

    KEY_FIELD = "station_id"
    type: Literal["StationCommandRequested"] = "StationCommandRequested"
    station_id: Id
    command_id: Id
    kind: Literal["open-gate"]
    payload: dict[str, Any] = Field(default_factory=dict)
    requested_by: str = ""
    gateway_id: str | None = None
    session_id: str | None = None


class StationWentOnline(Event):
    """Fact: the station is online, its socket on ``gateway_id`` (a registration, or
    heartbeats back after it was declared offline)."""

    KEY_FIELD = "station_id"
    type: Literal["StationWentOnline"] = "StationWentOnline"
    station_id: Id
    gateway_id: Id
    name: str = ""
    site: str = ""
    cameras: list[StationCamera] = Field(default_factory=list)
    gates: list[str] = Field(default_factory=list)


class StationCommandRejected(Event):
    """Fact: streams refused a request (``station_not_found``, ``station_offline``,
    ``camera_not_found``, ``gate_not_found``); nothing is sent to the station."""

    KEY_FIELD = "station_id"
    type: Literal["StationCommandRejected"] = "StationCommandRejected"
    station_id: Id
    command_id: Id
    kind: str
    code: str
    message: str = ""


class StationStreamEnded(Event):
    """The edge agent reports that a camera stream it ran stopped on its own (the RTSP
    source failed after its retries); written by the gateway holding the station."""

    KEY_FIELD = "station_id"
    type: Literal["StationStreamEnded"] = "StationStreamEnded"
    station_id: Id
    camera_id: Id
    reason: str = Field(default="", max_length=512)


class StreamFailed(Event):
    """Fact: a camera stream could not start or broke (``reason`` in words); its viewers
    are told ``stream-failed``."""

    KEY_FIELD = "station_id"
    type: Literal["StreamFailed"] = "StreamFailed"
    station_id: Id
    camera_id: Id
    reason: str
    room_id: str | None = None
    command_id: str | None = None


class StreamStopped(Event):
    """Fact: streams told the station to stop a camera stream (``idle``: nobody watched
    for the idle time; ``station-offline``)."""

    KEY_FIELD = "station_id"
    type: Literal["StreamStopped"] = "StreamStopped"
    station_id: Id
    camera_id: Id
    room_id: Id
    reason: str


class StationViewersChanged(Event):
    """How many peers watch a station room (``station:<station>:<camera>``), counted by
    streams from the room facts (the station's own publisher and hidden peers excluded)."""

    KEY_FIELD = "station_id"
    type: Literal["StationViewersChanged"] = "StationViewersChanged"
    station_id: Id
    camera_id: Id
    room_id: Id
    viewers: int = Field(ge=0)


class StationCommandOutcome(Event):
    """Fact: what streams took from the agent's reports for a command: ``acked``, then
    ``succeeded`` or ``failed`` (a report after the command timed out is not taken)."""

    KEY_FIELD = "station_id"
    type: Literal["StationCommandOutcome"] = "StationCommandOutcome"
    station_id: Id
    command_id: Id
    kind: str
    status: Literal["acked", "succeeded", "failed"]
    error: str | None = None
    result: dict[str, Any] = Field(default_factory=dict)
