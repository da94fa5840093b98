"""Recording control: the api's intents (topic recording.intents) and the streams'
decisions about them (topic recording.facts), all keyed by room id.

The recorder's own reports (``RecordingStarted`` … ``RecordingFailed``) and the commands
it executes (``StartRecording``, ``StopRecording``) are in ``producers.sessions``.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from producers.envelope import Event
from producers.fields import Id

# --- intents (api → streams) --------------------------------------------------------


class RecordingRequested(Event):
    """Start recording a room (the requester holds the ``record`` grant). A second
    recording of a room that is being recorded is refused unless ``concurrent``."""

    type: Literal["RecordingRequested"] = "RecordingRequested"
    room_id: Id
    recording_id: Id
    requested_by: str = Field(default="", max_length=128)
    segment_s: float | None = Field(default=None, gt=0, le=600)
    concurrent: bool = False


class RecordingStopRequested(Event):
    type: Literal["RecordingStopRequested"] = "RecordingStopRequested"
    room_id: Id
    recording_id: Id
    requested_by: str = Field(default="", max_length=128)


# --- facts (streams) ----------------------------------------------------------------


class RecordingAccepted(Event):
    """Streams decided to record: the recorder is commanded (``StartRecording``) and
    every peer is told the room is being recorded."""

    type: Literal["RecordingAccepted"] = "RecordingAccepted"
    room_id: Id
    recording_id: Id
    requested_by: str = ""
    segment_s: float | None = None
    #: ``request`` (the api), ``auto`` (the room's ``auto_record`` option).
    origin: Literal["request", "auto"] = "request"


class RecordingStopping(Event):
    """Streams decided to stop a recording (``reason``: requested, room-closed)."""

    type: Literal["RecordingStopping"] = "RecordingStopping"
    room_id: Id
    recording_id: Id
    reason: str = "requested"
