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
    #: Start at the source's first packet if the node still keeps it (a recorder records a
    #: track published during the recording from its first frame); else at a keyframe.
    from_start: bool = False


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
    #: The node's next heartbeat comes within this many seconds (it beats seldom while idle);
    #: the registry waits two of these, or its node timeout if longer, before marking it dead.
    interval_s: float | None = Field(default=None, gt=0)


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


# --- quality (samples on quality.samples, decisions on quality.facts, keyed by room id) ---

#: What a decision can put a subscriber of a video source on: an encoding, or no video.
QualityLayer = Literal["low", "mid", "high", "paused"]


class ClientLeg(BaseModel):
    """One remote source as a client's getStats sees it (downlink), in a client sample."""

    model_config = ConfigDict(frozen=True, extra="ignore")

    peer_id: Id
    source_id: Id
    kind: Literal["audio", "video"] = "video"
    loss_pct: float = Field(default=0.0, ge=0, le=100, allow_inf_nan=False)
    jitter_ms: float = Field(default=0.0, ge=0, le=60_000, allow_inf_nan=False)
    bitrate_kbps: float = Field(default=0.0, ge=0, le=1_000_000, allow_inf_nan=False)
    packets: int = Field(default=0, ge=0, le=10_000_000)
    frames_decoded: int = Field(default=0, ge=0, le=10_000_000)
    #: Seconds since this leg's last packet (the client's level 6 "down" after 5 s).
    silent_s: float = Field(default=0.0, ge=0, le=86_400, allow_inf_nan=False)


class QualitySample(Event):
    """Stats of one leg over the last interval (every 2 s).

    ``source`` node: ``leg`` is ``pub/<source_id>/<layer>`` (a published encoding, as the
    node receives it) or ``sub/<source_id>`` (one subscriber's copy of a source, as the node
    sends it: loss and RTT from the subscriber's RTCP receiver reports). ``source`` client: a
    client's own getStats summary (``leg`` ``client``), sent over the socket as
    ``quality-report``; the uplink in the top-level fields, remote sources in ``downlink``.
    Optional fields were added after v1; old payloads parse unchanged.
    """

    type: Literal["QualitySample"] = "QualitySample"
    room_id: Id
    peer_id: Id
    leg: str = Field(max_length=128)
    source: Literal["node", "client"] = "node"
    loss_pct: float = Field(ge=0, le=100)
    rtt_ms: float = Field(default=0.0, ge=0)
    jitter_ms: float = Field(default=0.0, ge=0)
    bitrate_kbps: float = Field(default=0.0, ge=0)
    #: The source this leg carries (node samples).
    source_id: str | None = Field(default=None, max_length=64)
    #: The publisher of that source (subscriber legs).
    publisher_peer_id: str | None = Field(default=None, max_length=64)
    kind: Literal["audio", "video"] | None = None
    #: Published encoding (``pub/`` legs) or the encoding being forwarded (``sub/`` legs;
    #: None before the first keyframe or while paused).
    layer: str | None = Field(default=None, max_length=16)
    #: Encodings the source has on the node (``sub/`` legs): what a decision can choose from.
    layers: list[str] = Field(default_factory=list, max_length=4)
    paused: bool = False
    packets: int = Field(default=0, ge=0)
    nacks: int = Field(default=0, ge=0)
    plis: int = Field(default=0, ge=0)
    #: The subscriber's bandwidth estimate (its REMB), where it sends one.
    bandwidth_kbps: float | None = Field(default=None, ge=0)
    #: Client samples: the remote sources the client receives (bounded).
    downlink: list[ClientLeg] = Field(default_factory=list, max_length=64)
    #: Client samples: the network-quality level the client shows for its uplink (1-6).
    level: int | None = Field(default=None, ge=1, le=6)


class QualityDecided(Event):
    """Streams moved one subscriber of a video source to another layer, paused or resumed
    its video. ``previous`` is where it was; ``reason`` says why (``loss``, ``bandwidth``,
    ``recovered``, ``resumed``, ``subscribed``); ``level`` is the network-quality level
    (1-6) the subscriber is told."""

    type: Literal["QualityDecided"] = "QualityDecided"
    room_id: Id
    peer_id: Id
    source_id: Id
    layer: QualityLayer
    loss_pct: float
    previous: QualityLayer | None = None
    reason: str = ""
    publisher_peer_id: str | None = None
    level: int | None = None
    bandwidth_kbps: float | None = None


class EncodingsChanged(Event):
    """Dynacast: which encodings of a published source some subscriber receives. The
    publisher's client sends only these (``active``); the others are stopped until a
    subscriber needs them again."""

    type: Literal["EncodingsChanged"] = "EncodingsChanged"
    room_id: Id
    peer_id: Id
    source_id: Id
    active: list[Layer]
    reason: str = ""


class SetPaused(NodeCommand):
    """Stop forwarding one subscriber's video of a source (audio is a separate source and
    is never paused), or resume it at the subscriber's layer from its next keyframe."""

    type: Literal["SetPaused"] = "SetPaused"
    peer_id: Id
    source_id: Id
    paused: bool
