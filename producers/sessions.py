"""Sessions and presence, calls (invites), IoT stations and recordings."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from producers.envelope import Event
from producers.fields import Id

# --- sessions (topic session.events, keyed by user id) ---------------------------


class SessionOpened(Event):
    """A client's socket opened on a gateway (the user is reachable there)."""

    KEY_FIELD = "user_id"
    type: Literal["SessionOpened"] = "SessionOpened"
    user_id: Id
    session_id: Id
    gateway_id: Id
    #: Display name from the token, shown in the lobby.
    name: str = Field(default="", max_length=128)


class SessionPinged(Event):
    """The gateway still holds the session's socket (sent periodically)."""

    KEY_FIELD = "user_id"
    type: Literal["SessionPinged"] = "SessionPinged"
    user_id: Id
    session_id: Id
    #: Lets streams re-open a session they had expired while its socket was alive.
    gateway_id: str | None = None


class SessionClosed(Event):
    """A socket closed: ``closed`` (clean close by the client: gone at once) or ``lost``
    (dropped: the session is kept for the resume grace period)."""

    KEY_FIELD = "user_id"
    type: Literal["SessionClosed"] = "SessionClosed"
    user_id: Id
    session_id: Id
    reason: str = ""


class PresenceChanged(Event):
    """Fact (topic presence.facts): a user's presence as streams derive it."""

    KEY_FIELD = "user_id"
    type: Literal["PresenceChanged"] = "PresenceChanged"
    user_id: Id
    status: Literal["online", "busy", "offline"]
    name: str = ""


class SessionExpired(Event):
    """Fact (topic presence.facts): streams dropped a session: ``ttl`` (no ping for the
    presence TTL) or ``grace`` (lost and not back within the resume grace period)."""

    KEY_FIELD = "user_id"
    type: Literal["SessionExpired"] = "SessionExpired"
    user_id: Id
    session_id: Id
    reason: str


class CallRequested(Event):
    """A caller asks to call someone (``POST /v1/calls``). Keyed by the caller so one
    partition sees all of a user's attempts: the rate limit is decided there. The
    answer goes to ``reply_session_id`` on ``gateway_id`` (the waiting REST request)."""

    KEY_FIELD = "user_id"
    type: Literal["CallRequested"] = "CallRequested"
    user_id: Id
    call_id: Id
    callee: Id
    expires_at: datetime
    name: str = Field(default="", max_length=128)
    gateway_id: str | None = None
    reply_session_id: str | None = None


class NotifyCallParty(Event):
    """Command from the call agent to the users agent of one party: record the party's
    call state (``over`` releases it) and push ``message`` to every session it has."""

    KEY_FIELD = "user_id"
    type: Literal["NotifyCallParty"] = "NotifyCallParty"
    user_id: Id
    call_id: Id
    state: Literal["calling", "ringing", "connected", "over"]
    message: dict[str, Any] = Field(default_factory=dict)


# --- calls (topic call.events, keyed by call id) ---------------------------------


class CallInviteRequested(Event):
    """An invite that passed the caller's rate limit (written by the users agent)."""

    KEY_FIELD = "call_id"
    type: Literal["CallInviteRequested"] = "CallInviteRequested"
    call_id: Id
    caller: Id
    callee: Id
    expires_at: datetime
    caller_name: str = ""


class CallInvited(Event):
    """Fact: the call exists and the callee is being rung until ``ring_until``."""

    KEY_FIELD = "call_id"
    type: Literal["CallInvited"] = "CallInvited"
    call_id: Id
    caller: Id
    callee: Id
    expires_at: datetime
    ring_until: datetime
    caller_name: str = ""


class CallRinging(Event):
    """The callee's users agent alerted ``sessions`` sessions of the callee."""

    KEY_FIELD = "call_id"
    type: Literal["CallRinging"] = "CallRinging"
    call_id: Id
    callee: Id
    sessions: int = 0


class CallRefused(Event):
    """Fact: the call cannot go ahead: ``rate_limited`` (the caller's 11th attempt in a
    minute), ``callee_offline``, ``callee_busy``."""

    KEY_FIELD = "call_id"
    type: Literal["CallRefused"] = "CallRefused"
    call_id: Id
    reason: str
    caller: str | None = None
    callee: str | None = None


class CallAnswerRequested(Event):
    KEY_FIELD = "call_id"
    type: Literal["CallAnswerRequested"] = "CallAnswerRequested"
    call_id: Id
    user_id: Id
    answer: Literal["accept", "reject", "cancel", "hangup"]
    #: Where the answer came from: errors go back to this session only.
    gateway_id: str | None = None
    session_id: str | None = None


class CallAccepted(Event):
    KEY_FIELD = "call_id"
    type: Literal["CallAccepted"] = "CallAccepted"
    call_id: Id
    room_id: Id
    by: str | None = None


class CallRejected(Event):
    KEY_FIELD = "call_id"
    type: Literal["CallRejected"] = "CallRejected"
    call_id: Id
    by: Id


class CallCancelled(Event):
    KEY_FIELD = "call_id"
    type: Literal["CallCancelled"] = "CallCancelled"
    call_id: Id


class CallTimedOut(Event):
    KEY_FIELD = "call_id"
    type: Literal["CallTimedOut"] = "CallTimedOut"
    call_id: Id


class CallEnded(Event):
    KEY_FIELD = "call_id"
    type: Literal["CallEnded"] = "CallEnded"
    call_id: Id
    by: str | None = None
    reason: str = ""


# --- stations (station.events / station.commands, keyed by station id) ----------


class StationCamera(BaseModel):
    """A camera a station declares when it registers."""

    model_config = ConfigDict(frozen=True, extra="ignore")

    camera_id: Id
    name: str = Field(default="", max_length=128)
    codec: str = Field(default="h264", max_length=16)


class StationRegistered(Event):
    """An edge agent registered on the station socket of ``gateway_id`` (written by the
    gateway after checking the station token). ``session_id`` addresses that socket;
    ``heartbeat_s`` is the interval the gateway told the agent (streams declare the station
    offline after three of them without a heartbeat); ``live_cameras`` are the streams the
    agent still runs (a reconnect without a restart)."""

    KEY_FIELD = "station_id"
    type: Literal["StationRegistered"] = "StationRegistered"
    station_id: Id
    gateway_id: Id
    name: str = ""
    cameras: list[str] = Field(default_factory=list)
    metadata: dict[str, Any] = Field(default_factory=dict)
    session_id: str | None = None
    site: str = ""
    camera_info: list[StationCamera] = Field(default_factory=list)
    gates: list[str] = Field(default_factory=list)
    heartbeat_s: float | None = None
    live_cameras: list[str] = Field(default_factory=list)


class StationHeartbeat(Event):
    KEY_FIELD = "station_id"
    type: Literal["StationHeartbeat"] = "StationHeartbeat"
    station_id: Id
    #: The socket the heartbeat came from: a station marked offline whose heartbeats
    #: come back on a live socket is online again.
    gateway_id: str | None = None
    session_id: str | None = None


class StationWentOffline(Event):
    KEY_FIELD = "station_id"
    type: Literal["StationWentOffline"] = "StationWentOffline"
    station_id: Id
    reason: str


class StreamRequested(Event):
    KEY_FIELD = "station_id"
    type: Literal["StreamRequested"] = "StreamRequested"
    station_id: Id
    camera_id: Id
    viewer_id: Id
    command_id: Id
    #: Where ``stream-ready`` / ``stream-failed`` go (the requesting socket), when known.
    gateway_id: str | None = None
    session_id: str | None = None


class StationCommand(Event):
    """A command for the edge agent of one station; run at most once by command id."""

    KEY_FIELD = "station_id"
    type: Literal["StationCommand"] = "StationCommand"
    station_id: Id
    command_id: Id
    kind: Literal["start-stream", "stop-stream", "open-gate"]
    payload: dict[str, Any] = Field(default_factory=dict)
    gateway_id: Id
    deadline: datetime
    #: The station socket the command is delivered to.
    session_id: str | None = None


class StationCommandAcked(Event):
    KEY_FIELD = "station_id"
    type: Literal["StationCommandAcked"] = "StationCommandAcked"
    station_id: Id
    command_id: Id


class StationCommandCompleted(Event):
    KEY_FIELD = "station_id"
    type: Literal["StationCommandCompleted"] = "StationCommandCompleted"
    station_id: Id
    command_id: Id
    ok: bool
    error: str | None = None
    result: dict[str, Any] = Field(default_factory=dict)


class StationCommandTimedOut(Event):
    KEY_FIELD = "station_id"
    type: Literal["StationCommandTimedOut"] = "StationCommandTimedOut"
    station_id: Id
    command_id: Id


class StreamReady(Event):
    KEY_FIELD = "station_id"
    type: Literal["StreamReady"] = "StreamReady"
    station_id: Id
    camera_id: Id
    room_id: Id
    source_id: Id
    #: Where a WHEP player watches it (``/v1/whep/<room>/<source>``).
    whep_url: str | None = None
    command_id: str | None = None


# --- recordings (recording.commands / recording.events, keyed by room id) -------


class StartRecording(Event):
    """Command (topic recording.commands): record a room. ``segment_s`` is the segment
    length the recorder closes files at (its own default when None)."""

    type: Literal["StartRecording"] = "StartRecording"
    room_id: Id
    recording_id: Id
    segment_s: float | None = Field(default=None, gt=0, le=600)


class StopRecording(Event):
    """Command: stop a recording and assemble its files (``reason``: requested, room-closed)."""

    type: Literal["StopRecording"] = "StopRecording"
    room_id: Id
    recording_id: Id
    reason: str = Field(default="requested", max_length=64)


class RecordingStarted(Event):
    """The recorder joined the room (``recorder_id``: the instance; a takeover after a
    crash reports again with ``takeover`` true)."""

    type: Literal["RecordingStarted"] = "RecordingStarted"
    room_id: Id
    recording_id: Id
    recorder_id: str | None = None
    takeover: bool = False


class RecordingSegmentUploaded(Event):
    """One closed segment of one track is in MinIO at ``object_key``. ``track_id`` is
    ``<peer>/<source>`` with a ``#<n>`` suffix from the second publication on; ``index`` is
    the segment's number in its track (a gap in the numbers is a lost segment)."""

    type: Literal["RecordingSegmentUploaded"] = "RecordingSegmentUploaded"
    room_id: Id
    recording_id: Id
    object_key: str
    size_bytes: int = Field(ge=0)
    duration_s: float = Field(ge=0)
    track_id: str | None = None
    peer_id: str | None = None
    identity: str | None = None
    source_id: str | None = None
    kind: str | None = None
    codec: str | None = None
    index: int | None = Field(default=None, ge=0)
    #: Seconds from the recording's start to the segment's first frame.
    start_s: float | None = None
    frames: int | None = Field(default=None, ge=0)
    width: int | None = None
    height: int | None = None


class RecordingCompleted(Event):
    """Every track is assembled into one file and ``manifest_key`` lists them. ``tracks``
    are the manifest's track entries (key, codec, start offset, duration, size, gaps)."""

    type: Literal["RecordingCompleted"] = "RecordingCompleted"
    room_id: Id
    recording_id: Id
    duration_s: float
    size_bytes: int
    manifest_key: str | None = None
    tracks: list[dict[str, Any]] = Field(default_factory=list)
    participants: list[str] = Field(default_factory=list)
    codecs: list[str] = Field(default_factory=list)


class RecordingFailed(Event):
    type: Literal["RecordingFailed"] = "RecordingFailed"
    room_id: Id
    recording_id: Id
    error: str
