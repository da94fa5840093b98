"""Media nodes: commands (streams → one node), results (node → streams), heartbeats,
node liveness facts and quality samples/decisions."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from producers.envelope import Event
from producers.fields import Id, Layer, NodeLoad, Sdp, TrackInfo

# --- commands (topic media.commands, keyed by node id) ----------------------------


class NodeCommand(Event):
    """Base of commands for one media node. An expired command is ignored."""

    KEY_FIELD = "node_id"
    node_id: Id
    room_id: Id
    deadline: datetime


class OpenPublisher(NodeCommand):
    type: Literal["OpenPublisher"] = "OpenPublisher"
    peer_id: Id
    sdp: Sdp
    tracks: list[TrackInfo]


class OpenSubscriber(NodeCommand):
    type: Literal["OpenSubscriber"] = "OpenSubscriber"
    peer_id: Id


class AddSubscription(NodeCommand):
    type: Literal["AddSubscription"] = "AddSubscription"
    peer_id: Id
    publisher_peer_id: Id
    source_id: Id
    layer: Layer = "high"


class RemoveSubscription(NodeCommand):
    type: Literal["RemoveSubscription"] = "RemoveSubscription"
    peer_id: Id
    source_id: Id


class RemoveSource(NodeCommand):
    """A publisher unpublished a source: stop forwarding it, drop every subscriber's leg
    for it (their connections renegotiate the transceiver to inactive). If the publisher's
    transceiver carries media again, the node announces the source anew (``TrackStarted``)."""

    type: Literal["RemoveSource"] = "RemoveSource"
    peer_id: Id
    source_id: Id


class ApplySubscriberAnswer(NodeCommand):
    type: Literal["ApplySubscriberAnswer"] = "ApplySubscriberAnswer"
    peer_id: Id
    sdp: Sdp


class SetLayer(NodeCommand):
    """Move one subscriber of a source to another encoding at its next keyframe."""

    type: Literal["SetLayer"] = "SetLayer"
    peer_id: Id
    source_id: Id
    layer: Layer


class ClosePeer(NodeCommand):
    type: Literal["ClosePeer"] = "ClosePeer"
    peer_id: Id


class CloseRoom(NodeCommand):
    type: Literal["CloseRoom"] = "CloseRoom"


# --- results (topic media.results, keyed by room id) -------------------------------


class PublisherAnswered(Event):
    type: Literal["PublisherAnswered"] = "PublisherAnswered"
    room_id: Id
    peer_id: Id
    node_id: Id
    sdp: Sdp


class OfferedSource(BaseModel):
    """Which subscriber transceiver (mid) carries which published source."""

    model_config = ConfigDict(frozen=True, extra="ignore")

    source_id: str
    peer_id: str
    kind: str
    layer: str
    mid: str | None = None


class SubscriberOffered(Event):
    type: Literal["SubscriberOffered"] = "SubscriberOffered"
    room_id: Id
    peer_id: Id
    node_id: Id
    sdp: Sdp
    sources: list[OfferedSource] = Field(default_factory=list)


class TrackStarted(Event):
    type: Literal["TrackStarted"] = "TrackStarted"
    room_id: Id
    peer_id: Id
    node_id: Id
    track: TrackInfo


class TrackEnded(Event):
    type: Literal["TrackEnded"] = "TrackEnded"
    room_id: Id
    peer_id: Id
    node_id: Id
    source_id: Id


class CommandFailed(Event):
    type: Literal["CommandFailed"] = "CommandFailed"
    room_id: Id
    node_id: Id
    command_type: str
    peer_id: str | None = None
    code: str
    message: str


# --- node registry (topic media.nodes in, node.facts out) ------------------------


class NodeHeartbeat(Event):
    KEY_FIELD = "node_id"
    type: Literal["NodeHeartbeat"] = "NodeHeartbeat"
    node_id: Id
    address: str = Field(default="", max_length=256)
    started_at: datetime
    load: NodeLoad = Field(default_factory=NodeLoad)


class NodeStopped(Event):
    KEY_FIELD = "node_id"
    type: Literal["NodeStopped"] = "NodeStopped"
    node_id: Id


class PlacementRequested(Event):
    """The room agent asks the node registry for a media node for a room."""

    KEY_FIELD = "registry_key"
    type: Literal["PlacementRequested"] = "PlacementRequested"
    registry_key: str = "placement"
    room_id: Id


class RoomReleased(Event):
    """The room agent tells the node registry a room has closed."""

    KEY_FIELD = "registry_key"
    type: Literal["RoomReleased"] = "RoomReleased"
    registry_key: str = "placement"
    room_id: Id
    node_id: str | None = None


class NodeMarkedAlive(Event):
    KEY_FIELD = "node_id"
    type: Literal["NodeMarkedAlive"] = "NodeMarkedAlive"
    node_id: Id
    address: str = ""


class NodeMarkedDead(Event):
    KEY_FIELD = "node_id"
    type: Literal["NodeMarkedDead"] = "NodeMarkedDead"
    node_id: Id
    reason: str
    last_seen_at: datetime | None = None


# --- quality (topic quality.samples, keyed by room id) ---------------------------


class QualitySample(Event):
    type: Literal["QualitySample"] = "QualitySample"
    room_id: Id
    peer_id: Id
    leg: str = Field(max_length=128)
    source: Literal["node", "client"] = "node"
    loss_pct: float = Field(ge=0, le=100)
    rtt_ms: float = Field(default=0.0, ge=0)
    jitter_ms: float = Field(default=0.0, ge=0)
    bitrate_kbps: float = Field(default=0.0, ge=0)


class QualityDecided(Event):
    type: Literal["QualityDecided"] = "QualityDecided"
    room_id: Id
    peer_id: Id
    source_id: Id
    layer: Literal["low", "mid", "high", "paused"]
    loss_pct: float
