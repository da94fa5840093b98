"""Room state and ``evolve``: the fold of room facts.

The room agent applies its own facts to its state with ``evolve``; replay applies the
same function to the facts topic. So live state and replayed state are equal by
construction, and the projection writes rows derived from this state.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from producers.envelope import Event
from producers.fields import RoomType, TrackInfo
from producers.rtc import (
    LayerChanged,
    PeerDisconnected,
    PeerJoined,
    PeerLeft,
    PeerResumed,
    PeerUpdated,
    PublisherClaimed,
    RoomClosed,
    RoomCreated,
    RoomPlaced,
    SubscriptionAdded,
    SubscriptionRemoved,
    TrackPublished,
    TrackUnpublished,
)

#: How many recent input ids a room remembers for deduplication: re-deliveries after a
#: crash come from the offset-commit window (1 s by default), far below this per room.
SEEN_LIMIT = 256


class PeerState(BaseModel):
    model_config = ConfigDict(extra="ignore")

    peer_id: str
    identity: str
    name: str = ""
    session_id: str
    gateway_id: str
    state: Literal["joined", "disconnected"] = "joined"
    joined_at: datetime
    disconnected_at: datetime | None = None
    can_publish: bool = True
    can_subscribe: bool = True
    audio_muted: bool = False
    video_muted: bool = False
    #: Published encodings keyed by ``track_key(source_id, layer)``.
    tracks: dict[str, TrackInfo] = Field(default_factory=dict)
    #: Subscribed sources: source id -> requested layer.
    subscriptions: dict[str, str] = Field(default_factory=dict)
    #: The request id of the join, for the ``joined`` answer sent once the room is placed.
    join_request_id: str | None = None
    #: A recorder: other peers are not told about it and it does not keep the room open.
    hidden: bool = False
    #: The media node's last ``subscriber-offer`` this peer has not answered yet, with the node
    #: that made it (``{"node_id", "message"}``). Bookkeeping, not part of the fold of facts: the
    #: node makes no new offer until this one is answered, and the first copy may have gone to a
    #: socket the peer lost, so a resume sends it again (``streams.rooms.on_resume``).
    offer: dict[str, Any] | None = None

    def source_ids(self) -> list[str]:
        return sorted({t.source_id for t in self.tracks.values()})


def track_key(source_id: str, layer: str) -> str:
    return f"{source_id}/{layer}"


class RoomState(BaseModel):
    model_config = ConfigDict(extra="ignore")

    room_id: str
    room_type: RoomType = RoomType.SFU
    max_participants: int = 50
    empty_timeout_s: int = 300
    creator: str | None = None
    metadata: dict[str, Any] = Field(default_factory=dict)
    status: Literal["open", "closed"] = "open"
    node_id: str | None = None
    created_at: datetime
    closed_at: datetime | None = None
    empty_since: datetime | None = None
    peers: dict[str, PeerState] = Field(default_factory=dict)
    #: When not empty, only these identities may join (a call's p2p room).
    allowed_identities: list[str] = Field(default_factory=list)
    #: Broadcast rooms: the one peer that may publish (the first to publish).
    publisher_peer_id: str | None = None
    #: Recent input event ids (dedupe); not part of the fold of facts.
    seen: list[str] = Field(default_factory=list)

    @property
    def is_open(self) -> bool:
        return self.status == "open"

    def visible_peers(self) -> list[PeerState]:
        """The peers other peers are told about (every one but a recorder)."""
        return [p for p in self.peers.values() if not p.hidden]

    def peer_by_identity(self, identity: str) -> PeerState | None:
        return next((p for p in self.peers.values() if p.identity == identity), None)

    def view(self) -> dict[str, Any]:
        """The state without bookkeeping: what replay must reproduce."""
        return self.model_dump(mode="json", exclude={"seen": True, "peers": {"__all__": {"offer"}}})


Evolver = Callable[[RoomState | None, Any], RoomState | None]


def _created(state: RoomState | None, f: RoomCreated) -> RoomState:
    return RoomState(
        room_id=f.room_id,
        room_type=f.room_type,
        max_participants=f.max_participants,
        empty_timeout_s=f.empty_timeout_s,
        creator=f.creator,
        metadata=dict(f.metadata),
        created_at=f.occurred_at,
        empty_since=f.occurred_at,
        allowed_identities=list(f.allowed_identities),
        seen=state.seen if state else [],
    )


def _closed(state: RoomState, f: RoomClosed) -> RoomState:
    return state.model_copy(
        update={
            "status": "closed",
            "closed_at": f.occurred_at,
            "peers": {},
            "node_id": None,
            "empty_since": None,
            "publisher_peer_id": None,
        }
    )


def _placed(state: RoomState, f: RoomPlaced) -> RoomState:
    if state.node_id is None and f.previous_node_id is None:
        return state.model_copy(update={"node_id": f.node_id})
    # moved: tracks and subscriptions lived on the old node; clients publish again
    peers = {k: p.model_copy(update={"tracks": {}, "subscriptions": {}}) for k, p in state.peers.items()}
    return state.model_copy(update={"node_id": f.node_id, "peers": peers})


def _joined(state: RoomState, f: PeerJoined) -> RoomState:
    peer = PeerState(
        peer_id=f.peer_id,
        identity=f.identity,
        name=f.name,
        session_id=f.session_id,
        gateway_id=f.gateway_id,
        joined_at=f.occurred_at,
        can_publish=f.can_publish,
        can_subscribe=f.can_subscribe,
        join_request_id=f.correlation_id,
        hidden=f.hidden,
    )
    empty_since = state.empty_since if f.hidden else None
    return state.model_copy(update={"peers": {**state.peers, f.peer_id: peer}, "empty_since": empty_since})


def _left(state: RoomState, f: PeerLeft) -> RoomState:
    peers = {k: v for k, v in state.peers.items() if k != f.peer_id}
    visible = any(not p.hidden for p in peers.values())
    empty_since = state.empty_since if visible or state.empty_since is not None else f.occurred_at
    publisher = None if state.publisher_peer_id == f.peer_id else state.publisher_peer_id
    return state.model_copy(update={"peers": peers, "empty_since": empty_since, "publisher_peer_id": publisher})


def _claimed(state: RoomState, f: PublisherClaimed) -> RoomState:
    return state.model_copy(update={"publisher_peer_id": f.peer_id})


def _with_peer(room: RoomState, peer_id: str, **changes: Any) -> RoomState:
    peer = room.peers.get(peer_id)
    if peer is None:
        return room
    return room.model_copy(update={"peers": {**room.peers, peer_id: peer.model_copy(update=changes)}})


def _disconnected(state: RoomState, f: PeerDisconnected) -> RoomState:
    return _with_peer(state, f.peer_id, state="disconnected", disconnected_at=f.occurred_at)


def _resumed(state: RoomState, f: PeerResumed) -> RoomState:
    return _with_peer(
        state, f.peer_id, state="joined", disconnected_at=None, session_id=f.session_id, gateway_id=f.gateway_id
    )


def _updated(state: RoomState, f: PeerUpdated) -> RoomState:
    return _with_peer(state, f.peer_id, audio_muted=f.audio_muted, video_muted=f.video_muted)


def _track_published(state: RoomState, f: TrackPublished) -> RoomState:
    peer = state.peers.get(f.peer_id)
    if peer is None:
        return state
    return _with_peer(state, f.peer_id, tracks={**peer.tracks, track_key(f.track.source_id, f.track.layer): f.track})


def _track_unpublished(state: RoomState, f: TrackUnpublished) -> RoomState:
    peer = state.peers.get(f.peer_id)
    if peer is None:
        return state
    tracks = {k: v for k, v in peer.tracks.items() if v.source_id != f.source_id}
    return _with_peer(state, f.peer_id, tracks=tracks)


def _subscribed(state: RoomState, f: SubscriptionAdded | LayerChanged) -> RoomState:
    peer = state.peers.get(f.peer_id)
    if peer is None:
        return state
    return _with_peer(state, f.peer_id, subscriptions={**peer.subscriptions, f.source_id: f.layer})


def _unsubscribed(state: RoomState, f: SubscriptionRemoved) -> RoomState:
    peer = state.peers.get(f.peer_id)
    if peer is None:
        return state
    subs = {k: v for k, v in peer.subscriptions.items() if k != f.source_id}
    return _with_peer(state, f.peer_id, subscriptions=subs)


EVOLVERS: dict[type[Event], Callable[[Any, Any], RoomState]] = {
    RoomClosed: _closed,
    RoomPlaced: _placed,
    PeerJoined: _joined,
    PeerLeft: _left,
    PeerDisconnected: _disconnected,
    PeerResumed: _resumed,
    PeerUpdated: _updated,
    PublisherClaimed: _claimed,
    TrackPublished: _track_published,
    TrackUnpublished: _track_unpublished,
    SubscriptionAdded: _subscribed,
    LayerChanged: _subscribed,
    SubscriptionRemoved: _unsubscribed,
}


def evolve(state: RoomState | None, fact: Event) -> RoomState | None:
    """Apply one fact. Facts that do not change room state leave it as is."""
    if isinstance(fact, RoomCreated):
        return _created(state, fact)
    handler = EVOLVERS.get(type(fact))
    if handler is None or state is None:
        return state
    return handler(state, fact)


def fold(facts: Iterable[Event], state: RoomState | None = None) -> RoomState | None:
    for fact in facts:
        state = evolve(state, fact)
    return state
