"""Server → client messages of the signaling protocol (docs/protocol.md), typed.

Every message the gateway sends on a socket is one of these frozen models: what streams
address to a session (``gateway.notifications``) is validated here before it is sent
(``api.rtc.Connection.deliver``), and the gateway's own answers (``pong``, ``error``) are
built from them. The Python SDK parses what it receives with the same ``parse_server``.
A unit test checks docs/protocol.md and the web SDK against ``SERVER_TYPES`` and
``SocketError``.

This module needs only pydantic: the SDK imports it without the api's dependencies.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated, Any, Literal, Union, get_args

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter


class SocketError(StrEnum):
    # the gateway's own checks (api/signaling.py, api/rtc.py): nothing is written
    INVALID_MESSAGE = "invalid_message"
    UNKNOWN_TYPE = "unknown_type"
    INVALID_SDP = "invalid_sdp"
    ALREADY_JOINED = "already_joined"
    UNSUPPORTED_ROOM_TYPE = "unsupported_room_type"
    UNAUTHORIZED = "unauthorized"
    TOKEN_EXPIRED = "token_expired"
    # the gateway's or streams' (streams.errors.Rejection)
    FORBIDDEN = "forbidden"
    NOT_JOINED = "not_joined"
    CHAT_EMPTY = "chat_empty"
    CHAT_TOO_LONG = "chat_too_long"
    SOURCE_NOT_FOUND = "source_not_found"
    UNSUPPORTED = "unsupported"
    UNAVAILABLE = "unavailable"
    RATE_LIMITED = "rate_limited"
    # streams only
    ROOM_FULL = "room_full"
    PEER_NOT_FOUND = "peer_not_found"
    PUBLISHER_EXISTS = "publisher_exists"
    CALL_NOT_FOUND = "call_not_found"
    CALL_OVER = "call_over"
    INVITE_EXPIRED = "invite_expired"
    # the media node's failures (media_node.errors.NodeError), passed on by streams
    SOURCE_NOT_ON_NODE = "source_not_on_node"
    NO_OFFER_PENDING = "no_offer_pending"
    NOT_SUBSCRIBED = "not_subscribed"
    MEDIA_FAILED = "media_failed"


class _Model(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", populate_by_name=True)


class TrackSummary(_Model):
    source_id: str
    kind: str
    layer: str


class PeerSummary(_Model):
    peer_id: str
    identity: str
    name: str
    audio_muted: bool
    video_muted: bool
    tracks: list[TrackSummary]


class IceServer(_Model):
    urls: list[str]
    username: str | None = None
    credential: str | None = None


class OfferedSource(_Model):
    source_id: str
    peer_id: str
    kind: str
    layer: str
    mid: str | None = None


class UserPresence(_Model):
    user_id: str
    name: str
    status: str
    changed_at: str


class ServerMessage(_Model):
    """Every server message; ``request_id`` echoes the request it answers, if any."""

    request_id: str | None = None

    def wire(self) -> dict[str, Any]:
        """The JSON object sent: the fields that were given, ``from`` by its name."""
        return self.model_dump(mode="json", by_alias=True, exclude_unset=True) | {"type": self.type}

    type: str


class Joined(ServerMessage):
    type: Literal["joined"] = "joined"
    room: str
    room_type: str
    peer_id: str
    peers: list[PeerSummary]
    ice_servers: list[IceServer] = Field(default_factory=list)


class Resumed(ServerMessage):
    type: Literal["resumed"] = "resumed"
    peer_id: str
    peers: list[PeerSummary]
    tracks: list[TrackSummary]
    ice_servers: list[IceServer] = Field(default_factory=list)


class PublisherAnswer(ServerMessage):
    type: Literal["publisher-answer"] = "publisher-answer"
    sdp: str


class Unpublished(ServerMessage):
    type: Literal["unpublished"] = "unpublished"
    source_id: str


class SubscriberOffer(ServerMessage):
    type: Literal["subscriber-offer"] = "subscriber-offer"
    sdp: str
    sources: list[OfferedSource]


class TrackPublished(ServerMessage):
    type: Literal["track-published"] = "track-published"
    peer_id: str
    track: TrackSummary


class TrackUnpublished(ServerMessage):
    type: Literal["track-unpublished"] = "track-unpublished"
    peer_id: str
    source_id: str


class PeerJoined(ServerMessage):
    type: Literal["peer-joined", "peer-updated"] = "peer-joined"
    peer: PeerSummary


class PeerLeft(ServerMessage):
    """``peer-left`` (another peer) or ``left`` (this one; the socket stays open)."""

    type: Literal["peer-left", "left"] = "peer-left"
    peer_id: str
    reason: str


class Pong(ServerMessage):
    type: Literal["pong"] = "pong"


class P2PDescription(ServerMessage):
    type: Literal["p2p-offer", "p2p-answer"] = "p2p-offer"
    from_: str = Field(alias="from")
    sdp: str


class P2PCandidate(ServerMessage):
    type: Literal["ice-candidate"] = "ice-candidate"
    from_: str = Field(alias="from")
    candidate: dict[str, Any] | str


class CallIncoming(ServerMessage):
    type: Literal["call-incoming"] = "call-incoming"
    call_id: str
    caller: str
    caller_name: str
    expires_at: str
    ring_until: str


class CallRinging(ServerMessage):
    type: Literal["call-ringing"] = "call-ringing"
    call_id: str
    callee: str
    sessions: int


class CallAccepted(ServerMessage):
    type: Literal["call-accepted"] = "call-accepted"
    call_id: str
    room: str
    caller: str
    callee: str
    #: The callee's sessions only: whether this session answered.
    answered_here: bool | None = None


class CallAnswered(ServerMessage):
    """``call-rejected`` (by the callee) or ``call-cancelled`` (by the caller)."""

    type: Literal["call-rejected", "call-cancelled"] = "call-rejected"
    call_id: str
    by: str


class CallTimedOut(ServerMessage):
    type: Literal["call-timed-out"] = "call-timed-out"
    call_id: str


class CallEnded(ServerMessage):
    type: Literal["call-ended"] = "call-ended"
    call_id: str
    by: str
    reason: str


class CallRefused(ServerMessage):
    type: Literal["call-refused"] = "call-refused"
    call_id: str
    reason: str
    callee: str


class Presence(ServerMessage):
    type: Literal["presence"] = "presence"
    users: list[UserPresence]
    snapshot: bool | None = None


class Chat(ServerMessage):
    type: Literal["chat"] = "chat"
    id: str
    room: str
    peer_id: str
    identity: str
    name: str
    text: str
    at: str


class Reconnect(ServerMessage):
    type: Literal["reconnect"] = "reconnect"
    reason: str


class Quality(ServerMessage):
    type: Literal["quality"] = "quality"
    peer_id: str
    source_id: str
    layer: str
    previous: str | None
    level: int
    reason: str
    loss_pct: float


class Encodings(ServerMessage):
    type: Literal["encodings"] = "encodings"
    source_id: str
    active: list[str]


class Recording(ServerMessage):
    type: Literal["recording"] = "recording"
    room: str
    active: bool
    recording_ids: list[str]


class Error(ServerMessage):
    type: Literal["error"] = "error"
    code: SocketError
    message: str
    #: A refused ``call-*`` answer names its call.
    call_id: str | None = None


ServerMessageUnion = Annotated[
    Union[  # noqa: UP007
        Joined,
        Resumed,
        PublisherAnswer,
        Unpublished,
        SubscriberOffer,
        TrackPublished,
        TrackUnpublished,
        PeerJoined,
        PeerLeft,
        Pong,
        P2PDescription,
        P2PCandidate,
        CallIncoming,
        CallRinging,
        CallAccepted,
        CallAnswered,
        CallTimedOut,
        CallEnded,
        CallRefused,
        Presence,
        Chat,
        Reconnect,
        Quality,
        Encodings,
        Recording,
        Error,
    ],
    Field(discriminator="type"),
]
_ADAPTER: TypeAdapter[ServerMessage] = TypeAdapter(ServerMessageUnion)
#: Every ``type`` a server message may have.
SERVER_MODELS: tuple[type[ServerMessage], ...] = get_args(get_args(ServerMessageUnion)[0])
SERVER_TYPES: frozenset[str] = frozenset(
    t for model in SERVER_MODELS for t in get_args(model.model_fields["type"].annotation)
)


def parse_server(message: dict[str, Any]) -> ServerMessage:
    """A server message from its JSON object; ``pydantic.ValidationError`` if it is none."""
    return _ADAPTER.validate_python(message)
