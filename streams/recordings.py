"""The recording decision: ``handle(state, event, config) -> (state, outputs)``, per room.

Reads ``recording.intents`` (the api's start/stop requests), ``recording.events`` (what
the recorder reports) and ``rtc.facts`` (room opened/closed, who is in it: every peer
is told when the room is being recorded). All three are keyed by room id and have the
same partition count, so a room's inputs meet in one partition.

Decides:
- start: the room must be open (``room_not_found``), and not already being recorded
  unless the request asks for a ``concurrent`` recording (``recording_active``) →
  ``RecordingAccepted`` (``recording.facts``) + ``StartRecording`` (``recording.commands``);
  a room created with ``metadata.auto_record`` true is recorded from its creation;
- stop: the recording must be active (``recording_not_found``) → ``RecordingStopping`` +
  ``StopRecording``; a room that closes stops its recordings (reason ``room-closed``);
- composite: a completed recording (``recording_not_completed`` otherwise) →
  ``CompositeAccepted`` + ``RenderComposite``;
- what peers see: a ``recording`` message (``active``, ``recording_ids``) to every visible
  peer when the set of active recordings changes, and to each peer that joins while it is
  not empty. The recorder itself (a hidden peer) is not told.

Pure: no Kafka, no clock. State is the fold of the facts and recorder reports (``evolve``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from producers.envelope import Event, derived_id
from producers.recordings import (
    CompositeAccepted,
    CompositeRequested,
    RecordingAccepted,
    RecordingRequested,
    RecordingStopping,
    RecordingStopRequested,
    RenderComposite,
)
from producers.rtc import (
    Notification,
    PeerJoined,
    PeerLeft,
    PeerResumed,
    RequestRejected,
    RoomClosed,
    RoomCreated,
)
from producers.sessions import (
    RecordingCompleted,
    RecordingFailed,
    RecordingStarted,
    StartRecording,
    StopRecording,
)
from streams.decision import KeyedDecision
from streams.errors import Rejection
from streams.outputs import Outputs

SEEN_LIMIT = 256
COMPLETED_LIMIT = 256


@dataclass(frozen=True)
class RecordingConfig:
    #: Segment length the recorder is told when a request does not say (None: its default).
    segment_s: float | None = None


class PeerAddress(BaseModel):
    model_config = ConfigDict(extra="ignore")

    gateway_id: str
    session_id: str
    hidden: bool = False


class RecordingEntry(BaseModel):
    model_config = ConfigDict(extra="ignore")

    status: Literal["accepted", "recording", "stopping"] = "accepted"
    requested_by: str = ""
    accepted_at: datetime


class RoomRecordings(BaseModel):
    """One room as the recording agent sees it."""

    model_config = ConfigDict(extra="ignore")

    room_id: str
    room_open: bool = False
    peers: dict[str, PeerAddress] = Field(default_factory=dict)
    #: Recordings not yet completed or failed, by id.
    active: dict[str, RecordingEntry] = Field(default_factory=dict)
    #: The latest completed recordings (a composite may be rendered from them).
    completed: list[str] = Field(default_factory=list)
    seen: list[str] = Field(default_factory=list)

    def view(self) -> dict[str, Any]:
        return self.model_dump(mode="json", exclude={"seen"})


# --- the fold --------------------------------------------------------------------------


def _with(state: RoomRecordings, **changes: Any) -> RoomRecordings:
    return state.model_copy(update=changes)


def _without(active: dict[str, RecordingEntry], recording_id: str) -> dict[str, RecordingEntry]:
    return {k: v for k, v in active.items() if k != recording_id}


def _status(state: RoomRecordings, recording_id: str, status: str) -> RoomRecordings:
    entry = state.active.get(recording_id)
    if entry is None:
        return state
    return _with(state, active={**state.active, recording_id: entry.model_copy(update={"status": status})})


EVOLVERS: dict[type[Event], Callable[[RoomRecordings, Any], RoomRecordings]] = {
    RoomCreated: lambda s, f: _with(s, room_open=True, peers={}),
    RoomClosed: lambda s, f: _with(s, room_open=False, peers={}),
    PeerJoined: lambda s, f: _with(
        s, peers={**s.peers, f.peer_id: PeerAddress(gateway_id=f.gateway_id, session_id=f.session_id, hidden=f.hidden)}
    ),
    PeerLeft: lambda s, f: _with(s, peers={k: v for k, v in s.peers.items() if k != f.peer_id}),
    PeerResumed: lambda s, f: (
        s
        if f.peer_id not in s.peers
        else _with(
            s,
            peers={
                **s.peers,
                f.peer_id: s.peers[f.peer_id].model_copy(
                    update={"gateway_id": f.gateway_id, "session_id": f.session_id}
                ),
            },
        )
    ),
    RecordingAccepted: lambda s, f: _with(
        s, active={**s.active, f.recording_id: RecordingEntry(requested_by=f.requested_by, accepted_at=f.occurred_at)}
    ),
    RecordingStarted: lambda s, f: (
        s
        if s.active.get(f.recording_id, None) is None or s.active[f.recording_id].status != "accepted"
        else _status(s, f.recording_id, "recording")
    ),
    RecordingStopping: lambda s, f: _status(s, f.recording_id, "stopping"),
    RecordingCompleted: lambda s, f: _with(
        s,
        active=_without(s.active, f.recording_id),
        completed=[*[r for r in s.completed if r != f.recording_id][-(COMPLETED_LIMIT - 1) :], f.recording_id],
    ),
    RecordingFailed: lambda s, f: _with(s, active=_without(s.active, f.recording_id)),
}


def evolve(state: RoomRecordings | None, fact: Event) -> RoomRecordings | None:
    handler = EVOLVERS.get(type(fact))
    if handler is None:
        return state
    room_id = str(getattr(fact, "room_id"))  # noqa: B009
    return handler(state or RoomRecordings(room_id=room_id), fact)


# --- the decision ----------------------------------------------------------------------


class Decision(KeyedDecision[RoomRecordings, RecordingConfig]):
    seen_limit = SEEN_LIMIT
    state: RoomRecordings

    def __init__(self, state: RoomRecordings, cause: Event, config: RecordingConfig) -> None:
        super().__init__(state, cause, f"recording:{state.room_id}", cause.occurred_at, config)

    def fold(self, state: RoomRecordings | None, event: Event) -> RoomRecordings | None:
        return evolve(state or self.state, event) or self.state

    def fact(self, cls: type[Any], **fields: Any) -> Any:
        return self.fact_on("recording.facts", cls, room_id=self.state.room_id, **fields)

    def command(self, cls: type[Any], **fields: Any) -> None:
        self.out.add("recording.commands", cls, room_id=self.state.room_id, **fields)

    def reject(self, intent: Event, code: str, message: str) -> None:
        self.out.add(
            "recording.facts",
            RequestRejected,
            room_id=self.state.room_id,
            request_type=intent.type,
            code=code,
            message=message,
        )

    def tell(self, peer_ids: list[str]) -> None:
        """Send the room's recording status to ``peer_ids`` (visible, joined peers only)."""
        message = {
            "type": "recording",
            "room": self.state.room_id,
            "active": bool(self.state.active),
            "recording_ids": sorted(self.state.active),
        }
        for peer_id in sorted(peer_ids):
            peer = self.state.peers.get(peer_id)
            if peer is not None and not peer.hidden:
                self.out.add(
                    "gateway.notifications",
                    Notification,
                    gateway_id=peer.gateway_id,
                    session_id=peer.session_id,
                    room_id=self.state.room_id,
                    peer_id=peer_id,
                    message=message,
                )

    def tell_everyone(self) -> None:
        self.tell(list(self.state.peers))

    def accept(
        self, recording_id: str, requested_by: str, segment_s: float | None, origin: Literal["request", "auto"]
    ) -> None:
        segment_s = segment_s if segment_s is not None else self.config.segment_s
        self.fact(
            RecordingAccepted, recording_id=recording_id, requested_by=requested_by, segment_s=segment_s, origin=origin
        )
        self.command(StartRecording, recording_id=recording_id, segment_s=segment_s)
        self.tell_everyone()

    def stop(self, recording_id: str, reason: str) -> None:
        self.fact(RecordingStopping, recording_id=recording_id, reason=reason)
        self.command(StopRecording, recording_id=recording_id, reason=reason)


def on_requested(d: Decision, intent: RecordingRequested) -> None:
    if not d.state.room_open:
        d.reject(intent, Rejection.ROOM_NOT_FOUND, f"room {intent.room_id} does not exist or is closed")
    elif intent.recording_id in d.state.active:
        return  # the same request again
    elif d.state.active and not intent.concurrent:
        d.reject(intent, Rejection.RECORDING_ACTIVE, f"room {intent.room_id} is already being recorded")
    else:
        d.accept(intent.recording_id, intent.requested_by, intent.segment_s, "request")


def on_stop_requested(d: Decision, intent: RecordingStopRequested) -> None:
    entry = d.state.active.get(intent.recording_id)
    if entry is None:
        d.reject(intent, Rejection.RECORDING_NOT_FOUND, f"recording {intent.recording_id} is not active")
    elif entry.status != "stopping":
        d.stop(intent.recording_id, "requested")


def on_composite_requested(d: Decision, intent: CompositeRequested) -> None:
    if intent.recording_id not in d.state.completed:
        d.reject(intent, Rejection.RECORDING_NOT_COMPLETED, f"recording {intent.recording_id} is not completed")
        return
    d.fact(CompositeAccepted, recording_id=intent.recording_id, layout=intent.layout)
    d.command(RenderComposite, recording_id=intent.recording_id, layout=intent.layout)


def on_room_created(d: Decision, fact: RoomCreated) -> None:
    d.state = evolve(d.state, fact) or d.state
    if fact.metadata.get("auto_record") is True:
        recording_id = f"rec-{derived_id(fact.event_id, 0, 'auto-record').hex[:16]}"
        d.accept(recording_id, fact.creator or "", None, "auto")


def on_room_closed(d: Decision, fact: RoomClosed) -> None:
    d.state = evolve(d.state, fact) or d.state
    for recording_id, entry in sorted(d.state.active.items()):
        if entry.status != "stopping":
            d.stop(recording_id, "room-closed")


def on_peer_joined(d: Decision, fact: PeerJoined) -> None:
    d.state = evolve(d.state, fact) or d.state
    if d.state.active:
        d.tell([fact.peer_id])


def on_ended(d: Decision, fact: RecordingCompleted | RecordingFailed) -> None:
    was_active = fact.recording_id in d.state.active
    d.state = evolve(d.state, fact) or d.state
    if was_active:
        d.tell_everyone()


HANDLERS: dict[type[Event], Callable[[Decision, Any], None]] = {
    RecordingRequested: on_requested,
    RecordingStopRequested: on_stop_requested,
    CompositeRequested: on_composite_requested,
    RoomCreated: on_room_created,
    RoomClosed: on_room_closed,
    PeerJoined: on_peer_joined,
    RecordingCompleted: on_ended,
    RecordingFailed: on_ended,
}


def handle(
    state: RoomRecordings | None, event: Event, config: RecordingConfig, room_id: str | None = None
) -> tuple[RoomRecordings | None, Outputs]:
    """Apply one input to one room's recordings. Inputs it does not use leave the state
    as is (``None`` stays ``None``: a room the agent never needed is not stored)."""
    room_id = room_id or str(getattr(event, "room_id", ""))
    handler = HANDLERS.get(type(event))
    if handler is None and type(event) not in EVOLVERS:
        return state, Outputs(event, f"recording:{room_id}", event.occurred_at)
    current = state or RoomRecordings(room_id=room_id)
    d = Decision(current, event, config)
    event_id = str(event.event_id)
    if event_id in current.seen:
        return state, d.out
    if handler is None:
        d.state = evolve(d.state, event) or d.state
    else:
        handler(d, event)
    d.state = d.state.model_copy(update={"seen": [*d.state.seen[-(SEEN_LIMIT - 1) :], event_id]})
    return d.state, d.out
