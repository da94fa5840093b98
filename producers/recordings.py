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


# --- composites (a rendered MP4 of a completed recording) -----------------------------


class CompositeRequested(Event):
    """Intent: render a completed recording into one MP4 (``grid`` or ``speaker`` layout)."""

    type: Literal["CompositeRequested"] = "CompositeRequested"
    room_id: Id
    recording_id: Id
    layout: Literal["grid", "speaker"] = "grid"
    requested_by: str = Field(default="", max_length=128)


class CompositeAccepted(Event):
    """Fact: streams commanded a render (``RenderComposite``)."""

    type: Literal["CompositeAccepted"] = "CompositeAccepted"
    room_id: Id
    recording_id: Id
    layout: Literal["grid", "speaker"] = "grid"


class RenderComposite(Event):
    """Command (recording.commands): render the recording's track files into one MP4."""

    type: Literal["RenderComposite"] = "RenderComposite"
    room_id: Id
    recording_id: Id
    layout: Literal["grid", "speaker"] = "grid"


class CompositeProgress(Event):
    """The render's progress (from ffmpeg's ``-progress`` output), in percent."""

    type: Literal["CompositeProgress"] = "CompositeProgress"
    room_id: Id
    recording_id: Id
    percent: float = Field(ge=0, le=100)


class CompositeRendered(Event):
    type: Literal["CompositeRendered"] = "CompositeRendered"
    room_id: Id
    recording_id: Id
    object_key: str
    size_bytes: int = Field(ge=0)
    duration_s: float = Field(ge=0)
    #: Wall time of the render (the benchmark's speed is duration / render time).
    render_s: float = Field(ge=0)
    layout: Literal["grid", "speaker"] = "grid"


class CompositeFailed(Event):
    type: Literal["CompositeFailed"] = "CompositeFailed"
    room_id: Id
    recording_id: Id
    error: str
