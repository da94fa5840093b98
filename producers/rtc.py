"""Rooms, peers, tracks and subscriptions: intents (from gateways) and facts (from streams).

Intents are imperative requests (``JoinRequested``); facts are past-tense decisions
(``PeerJoined``). All are keyed by ``room_id``.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import Field

from producers.envelope import Event
from producers.fields import ChatText, Grant, Id, Layer, RoomType, Sdp, SourceKind, TrackInfo

# --- intents (topic rtc.intents) -------------------------------------------------


class CreateRoomRequested(Event):
    type: Literal["CreateRoomRequested"] = "CreateRoomRequested"
    room_id: Id
    room_type: RoomType = RoomType.SFU
    max_participants: int = Field(default=50, ge=1, le=1000)
    empty_timeout_s: int = Field(default=300, ge=1, le=86_400)
    creator: str | None = Field(default=None, max_length=128)
    metadata: dict[str, Any] = Field(default_factory=dict)
    #: When not empty, only these identities may join (a call's p2p room).
    allowed_identities: list[str] = Field(default_factory=list, max_length=16)


class DeleteRoomRequested(Event):
    type: Literal["DeleteRoomRequested"] = "DeleteRoomRequested"
    room_id: Id
    requested_by: str = Field(default="", max_length=128)


class JoinRequested(Event):
    """A client asks to join. The gateway has checked the token; ``grants`` travel
    along so streams can re-check them as a backstop."""

    type: Literal["JoinRequested"] = "JoinRequested"
    room_id: Id
    peer_id: Id
    identity: str = Field(min_length=1, max_length=128)
    name: str = Field(default="", max_length=128)
    session_id: Id
    gateway_id: Id
    grants: list[Grant] = Field(default_factory=list)
    #: The type of the room if this join creates it (default sfu).
    room_type: RoomType | None = None


class LeaveRequested(Event):
    type: Literal["LeaveRequested"] = "LeaveRequested"
    room_id: Id
    peer_id: Id
    reason: str = Field(default="client-leave", max_length=64)


class ConnectionLost(Event):
    """The gateway lost a peer's socket. Streams keep the peer for a grace period."""

    type: Literal["ConnectionLost"] = "ConnectionLost"
    room_id: Id
    peer_id: Id
    session_id: Id


class ResumeRequested(Event):
    """A client that lost its socket comes back and asks for its peer."""

    type: Literal["ResumeRequested"] = "ResumeRequested"
    room_id: Id
    peer_id: Id
    session_id: Id
    gateway_id: Id
    #: The token's identity; streams resume only a peer of the same identity.
    identity: str | None = Field(default=None, max_length=128)


class PublishRequested(Event):
    type: Literal["PublishRequested"] = "PublishRequested"
    room_id: Id
    peer_id: Id
    sdp: Sdp
    tracks: list[TrackInfo] = Field(min_length=1, max_length=16)


class UnpublishRequested(Event):
    type: Literal["UnpublishRequested"] = "UnpublishRequested"
    room_id: Id
    peer_id: Id
    source_id: Id


class SubscribeRequested(Event):
    type: Literal["SubscribeRequested"] = "SubscribeRequested"
    room_id: Id
    peer_id: Id
    source_id: Id
    layer: Layer = "high"


class UnsubscribeRequested(Event):
    type: Literal["UnsubscribeRequested"] = "UnsubscribeRequested"
    room_id: Id
    peer_id: Id
    source_id: Id


class SubscriberAnswerSubmitted(Event):
    type: Literal["SubscriberAnswerSubmitted"] = "SubscriberAnswerSubmitted"
    room_id: Id
    peer_id: Id
    sdp: Sdp


class MuteRequested(Event):
    type: Literal["MuteRequested"] = "MuteRequested"
    room_id: Id
    peer_id: Id
    source_kind: SourceKind
    muted: bool


class PeerSignalRequested(Event):
    """P2P rooms: relay an offer, answer or ICE candidate to the other peer."""

    type: Literal["PeerSignalRequested"] = "PeerSignalRequested"
    room_id: Id
    peer_id: Id
    to_peer_id: Id
    kind: Literal["offer", "answer", "candidate"]
    sdp: str | None = Field(default=None, max_length=60_000)
    candidate: dict[str, Any] | str | None = None


class ChatMessageRequested(Event):
    """A peer posts a text message to its room's chat. The gateway has checked that the
    socket joined and the text (``producers.fields.chat_text``); streams re-check both.
    ``gateway_id``/``session_id`` say where to send a refusal when the peer is gone."""

    type: Literal["ChatMessageRequested"] = "ChatMessageRequested"
    room_id: Id
    peer_id: Id
    text: ChatText
    gateway_id: Id | None = None
    session_id: Id | None = None


class Tick(Event):
    """Time on the log. Published to every partition of a topic; decisions that
    depend on time (grace periods, timeouts, liveness) read ``now`` from here."""

    KEY_FIELD = "tick_key"
    type: Literal["Tick"] = "Tick"
    tick_key: str = "tick"
    now: datetime


# --- facts (topic rtc.facts) -------------------------------------------------------


class RoomCreated(Event):
    type: Literal["RoomCreated"] = "RoomCreated"
    room_id: Id
    room_type: RoomType
    max_participants: int
    empty_timeout_s: int
    creator: str | None = None
    metadata: dict[str, Any] = Field(default_factory=dict)
    allowed_identities: list[str] = Field(default_factory=list)


class RoomClosed(Event):
    type: Literal["RoomClosed"] = "RoomClosed"
    room_id: Id
    reason: str


class RoomPlaced(Event):
    """The node registry placed (or re-placed) a room on a media node. It reaches the
    room's partition through rtc.intents and the room agent records it on rtc.facts."""

    type: Literal["RoomPlaced"] = "RoomPlaced"
    room_id: Id
    node_id: Id
    previous_node_id: str | None = None
    reason: str = "initial"


class PeerJoined(Event):
    type: Literal["PeerJoined"] = "PeerJoined"
    room_id: Id
    peer_id: Id
    identity: str
    name: str = ""
    session_id: Id
    gateway_id: Id
    can_publish: bool = True
    can_subscribe: bool = True
    #: A recorder (``record`` grant without ``publish``): not shown to the other peers.
    hidden: bool = False


class PeerLeft(Event):
    type: Literal["PeerLeft"] = "PeerLeft"
    room_id: Id
    peer_id: Id
    reason: str


class PeerDisconnected(Event):
    type: Literal["PeerDisconnected"] = "PeerDisconnected"
    room_id: Id
    peer_id: Id


class PeerResumed(Event):
    type: Literal["PeerResumed"] = "PeerResumed"
    room_id: Id
    peer_id: Id
    session_id: Id
    gateway_id: Id


class PeerUpdated(Event):
    type: Literal["PeerUpdated"] = "PeerUpdated"
    room_id: Id
    peer_id: Id
    audio_muted: bool
    video_muted: bool


class ChatMessagePosted(Event):
    """A chat message in a room: who (peer, identity, display name), what (the text,
    stripped) and when (``occurred_at``, the gateway's receipt time). Its ``event_id`` is
    the message id clients see. Not folded into room state: chat is not room state."""

    type: Literal["ChatMessagePosted"] = "ChatMessagePosted"
    room_id: Id
    peer_id: Id
    identity: str
    name: str = ""
    text: ChatText


class PublisherClaimed(Event):
    """Broadcast rooms: this peer is the room's one publisher until it leaves."""

    type: Literal["PublisherClaimed"] = "PublisherClaimed"
    room_id: Id
    peer_id: Id


class RequestRejected(Event):
    """An intent streams refused (room full, unknown peer, missing grant, ...)."""

    type: Literal["RequestRejected"] = "RequestRejected"
    room_id: Id
    peer_id: str | None = None
    request_type: str
    code: str
    message: str


class TrackPublished(Event):
    type: Literal["TrackPublished"] = "TrackPublished"
    room_id: Id
    peer_id: Id
    track: TrackInfo


class TrackUnpublished(Event):
    type: Literal["TrackUnpublished"] = "TrackUnpublished"
    room_id: Id
    peer_id: Id
    source_id: Id


class SubscriptionAdded(Event):
    type: Literal["SubscriptionAdded"] = "SubscriptionAdded"
    room_id: Id
    peer_id: Id
    source_id: Id
    layer: Layer = "high"


class SubscriptionRemoved(Event):
    type: Literal["SubscriptionRemoved"] = "SubscriptionRemoved"
    room_id: Id
    peer_id: Id
    source_id: Id


class LayerChanged(Event):
    type: Literal["LayerChanged"] = "LayerChanged"
    room_id: Id
    peer_id: Id
    source_id: Id
    layer: Layer
    reason: str = "quality"


class Notification(Event):
    """A message for one client, addressed to the gateway holding its socket
    (topic gateway.notifications, keyed by gateway id)."""

    KEY_FIELD = "gateway_id"
    type: Literal["Notification"] = "Notification"
    gateway_id: Id
    session_id: Id
    room_id: str | None = None
    peer_id: str | None = None
    message: dict[str, Any]
    #: The same message for several sessions on this gateway (``session_id`` is the first).
    session_ids: list[str] = Field(default_factory=list)

    def sessions(self) -> list[str]:
        return self.session_ids or [self.session_id]
