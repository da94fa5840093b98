"""Which event types each topic of the registry carries, and what each type is.

The topic registry (``topics.py``) says how a topic is keyed and kept; this module says
what is on it, for readers outside the code: the AsyncAPI document
(``producers/asyncapi.py``) is generated from both. ``tests/unit/test_asyncapi.py``
checks every type is on some topic, and the outside-consumer e2e test
(``tests/e2e/test_outside_consumer.py``) that every record of a real run is one of its
topic's types.

A topic's ``role`` and a type's ``kind`` use the same words:

- ``intent``: a request from outside (a client through a gateway, an operator); a
  decision may refuse it. Not the truth: read the facts it led to.
- ``fact``: a decision of a streams agent; the source of truth. Replaying a facts topic
  from offset 0 rebuilds its state.
- ``command``: an instruction to one executor (a media node, the recorder, an edge agent,
  a user's sessions); it may expire or fail.
- ``report``: what an executor or a gateway observed (an answer, a heartbeat, a sample,
  a socket opening); facts may follow from it.
- ``notification``: a message for one client session, through its gateway.
- ``tick``: time on the log (``Tick``), only where a timer is due; skip it.

A topic whose records are of more than one kind has the role ``mixed``.
"""

from __future__ import annotations

from typing import Literal

from producers.catalog import EVENT_TYPES
from producers.topics import REGISTRY

Kind = Literal["intent", "fact", "command", "report", "notification", "tick"]
Role = Literal["intent", "fact", "command", "report", "notification", "mixed"]

_ROOM_INTENTS = (
    "CreateRoomRequested",
    "DeleteRoomRequested",
    "JoinRequested",
    "LeaveRequested",
    "ConnectionLost",
    "ResumeRequested",
    "MuteRequested",
    "PublishRequested",
    "UnpublishRequested",
    "SubscribeRequested",
    "UnsubscribeRequested",
    "SubscriberAnswerSubmitted",
    "PeerSignalRequested",
    "ChatMessageRequested",
    "RoomPlaced",
    "Tick",
)
_ROOM_FACTS = (
    "RoomCreated",
    "RoomClosed",
    "RoomPlaced",
    "PeerJoined",
    "PeerLeft",
    "PeerDisconnected",
    "PeerResumed",
    "PeerUpdated",
    "PublisherClaimed",
    "ChatMessagePosted",
    "RequestRejected",
    "TrackPublished",
    "TrackUnpublished",
    "SubscriptionAdded",
    "SubscriptionRemoved",
    "LayerChanged",
)
_MEDIA_COMMANDS = (
    "OpenPublisher",
    "OpenSubscriber",
    "AddSubscription",
    "RemoveSubscription",
    "ApplySubscriberAnswer",
    "RemoveSource",
    "SetLayer",
    "SetPaused",
    "ClosePeer",
    "CloseRoom",
)
_MEDIA_RESULTS = ("PublisherAnswered", "SubscriberOffered", "TrackStarted", "TrackEnded", "CommandFailed")
_STATION_EVENTS = (
    "StationRegistered",
    "StationHeartbeat",
    "StationWentOnline",
    "StationWentOffline",
    "StreamRequested",
    "StationCommandRequested",
    "StationCommandRejected",
    "StationCommandAcked",
    "StationCommandCompleted",
    "StationCommandOutcome",
    "StationCommandTimedOut",
    "StreamReady",
    "StreamFailed",
    "StreamStopped",
    "StationStreamEnded",
    "StationViewersChanged",
    "Tick",
)
_CALL_EVENTS = (
    "CallInviteRequested",
    "CallInvited",
    "CallRinging",
    "CallRefused",
    "CallAnswerRequested",
    "CallAccepted",
    "CallRejected",
    "CallCancelled",
    "CallTimedOut",
    "CallEnded",
    "Tick",
)
_RECORDING_EVENTS = (
    "RecordingStarted",
    "RecordingSegmentUploaded",
    "RecordingCompleted",
    "RecordingFailed",
    "CompositeProgress",
    "CompositeRendered",
    "CompositeFailed",
)

#: Every registry topic (logical name): its role and the types written to it.
TOPIC_TYPES: dict[str, tuple[Role, tuple[str, ...]]] = {
    "rtc.intents": ("intent", _ROOM_INTENTS),
    "rtc.facts": ("fact", _ROOM_FACTS),
    "session.events": (
        "mixed",
        ("SessionOpened", "SessionPinged", "SessionClosed", "CallRequested", "NotifyCallParty", "Tick"),
    ),
    "presence.facts": ("fact", ("PresenceChanged", "SessionExpired")),
    "gateway.notifications": ("notification", ("Notification",)),
    "media.commands": ("command", _MEDIA_COMMANDS),
    "media.results": ("report", _MEDIA_RESULTS),
    "media.nodes": ("mixed", ("NodeHeartbeat", "NodeStopped", "PlacementRequested", "RoomReleased", "Tick")),
    "node.facts": ("fact", ("NodeMarkedAlive", "NodeMarkedDead")),
    "quality.samples": ("report", ("QualitySample",)),
    "quality.facts": ("fact", ("QualityDecided", "EncodingsChanged")),
    "station.events": ("mixed", _STATION_EVENTS),
    "station.commands": ("command", ("StationCommand",)),
    "call.events": ("mixed", _CALL_EVENTS),
    "recording.commands": ("command", ("StartRecording", "StopRecording", "RenderComposite")),
    "recording.events": ("report", _RECORDING_EVENTS),
    "recording.intents": ("intent", ("RecordingRequested", "RecordingStopRequested", "CompositeRequested")),
    "recording.facts": ("fact", ("RecordingAccepted", "RecordingStopping", "CompositeAccepted", "RequestRejected")),
}

#: Kinds that neither the type's name nor its topic's role tell.
_KIND_OF: dict[str, Kind] = {
    "Tick": "tick",
    "RoomPlaced": "fact",  # the node registry's decision, copied to rtc.intents for the room agent
    "ConnectionLost": "report",
    "SessionOpened": "report",
    "SessionPinged": "report",
    "SessionClosed": "report",
    "NotifyCallParty": "command",
    "NodeHeartbeat": "report",
    "NodeStopped": "report",
    "RoomReleased": "report",  # the room agent tells the registry a room closed
    "StationRegistered": "report",
    "StationHeartbeat": "report",
    "StationCommandAcked": "report",
    "StationCommandCompleted": "report",
    "StationStreamEnded": "report",
    "CallRinging": "fact",  # the users agent's decisions, read by the call agent
    "CallRefused": "fact",
}


def topics_of(type_: str) -> list[str]:
    """The topics ``type_`` is written to."""
    return [topic for topic, (_, types) in TOPIC_TYPES.items() if type_ in types]


def kind_of(type_: str) -> Kind:
    """What a type is: its override, else ``intent`` for ``*Requested``/``*Submitted``,
    else its (first) topic's role; on a mixed topic, a decision of streams (``fact``)."""
    if type_ in _KIND_OF:
        return _KIND_OF[type_]
    if type_.endswith(("Requested", "Submitted")):
        return "intent"
    role = TOPIC_TYPES[topics_of(type_)[0]][0]
    return "fact" if role == "mixed" else role


def problems() -> list[str]:
    """Every disagreement between this module, the catalog and the registry."""
    out = [f"{t}: on no topic" for t in sorted(EVENT_TYPES) if not topics_of(t)]
    for topic, (_, types) in TOPIC_TYPES.items():
        out += [f"{topic}: {t} is not in the catalog" for t in types if t not in EVENT_TYPES]
    registry = {s.name for s in REGISTRY}
    out += [f"{t}: not in the topic registry" for t in sorted(TOPIC_TYPES.keys() - registry)]
    out += [f"{t}: no types listed" for t in sorted(registry - TOPIC_TYPES.keys())]
    return out
