"""The room decision: ``handle(state, intent, config) -> (state, outputs)``.

Pure: no Kafka, no clock, no randomness. Time comes from the intent (or a ``Tick``);
output ids are derived from the intent's id. Every fact emitted is also folded into
the returned state with ``evolve``, so state is always the fold of the facts.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

from producers.envelope import Event
from producers.fields import Grant, RoomType
from producers.media import (
    ClosePeer,
    CloseRoom,
    CommandFailed,
    PlacementRequested,
    PublisherAnswered,
    RoomReleased,
    SubscriberOffered,
    TrackEnded,
    TrackStarted,
)
from producers.rtc import (
    ChatMessageRequested,
    ConnectionLost,
    CreateRoomRequested,
    DeleteRoomRequested,
    JoinRequested,
    LeaveRequested,
    MuteRequested,
    PeerDisconnected,
    PeerJoined,
    PeerLeft,
    PeerResumed,
    PeerSignalRequested,
    PeerUpdated,
    PublishRequested,
    ResumeRequested,
    RoomClosed,
    RoomCreated,
    RoomPlaced,
    SubscriberAnswerSubmitted,
    SubscribeRequested,
    Tick,
    UnpublishRequested,
    UnsubscribeRequested,
)
from streams import chat, p2p, tracks
from streams.decision import Decision, RoomConfig, at_of, dispatch, peer_summary, track_summary
from streams.errors import Rejection
from streams.outputs import Outputs
from streams.room_state import PeerState, RoomState


def remove_peer(
    d: Decision, peer: PeerState, reason: str, *, tell_peer: bool = False, request_id: str | None = None
) -> None:
    tracks.unpublish_all(d, peer)
    d.fact(PeerLeft, peer_id=peer.peer_id, reason=reason)
    d.command(ClosePeer, peer_id=peer.peer_id)
    if not peer.hidden:
        d.notify_others(peer.peer_id, {"type": "peer-left", "peer_id": peer.peer_id, "reason": reason})
    if tell_peer:
        left: dict[str, Any] = {"type": "left", "peer_id": peer.peer_id, "reason": reason}
        if request_id:  # the answer to the peer's own `leave` (the SDK waits for it)
            left["request_id"] = request_id
        d.notify(peer, left)


def close_room(d: Decision, reason: str) -> None:
    assert d.state is not None
    node_id = d.state.node_id
    for peer in list(d.state.peers.values()):
        remove_peer(d, peer, reason, tell_peer=True)
    d.command(CloseRoom)
    d.fact(RoomClosed, reason=reason)
    d.out.add("media.nodes", RoomReleased, room_id=d.room_id, node_id=node_id)


# --- intent handlers ------------------------------------------------------------


def on_create(d: Decision, intent: CreateRoomRequested) -> None:
    if d.state is not None and d.state.is_open:
        d.reject(intent, Rejection.ROOM_EXISTS, f"room {intent.room_id} already exists")
        return
    d.fact(
        RoomCreated,
        room_type=intent.room_type,
        max_participants=p2p.capacity(intent.room_type, intent.max_participants),
        empty_timeout_s=intent.empty_timeout_s,
        creator=intent.creator,
        metadata=intent.metadata,
        allowed_identities=intent.allowed_identities,
    )


def on_delete(d: Decision, intent: DeleteRoomRequested) -> None:
    if d.state is None or not d.state.is_open:
        d.reject(intent, Rejection.ROOM_NOT_FOUND, f"room {intent.room_id} does not exist")
        return
    close_room(d, "deleted")


def on_join(d: Decision, intent: JoinRequested) -> None:
    where = {"peer_id": intent.peer_id, "gateway_id": intent.gateway_id, "session_id": intent.session_id}
    if Grant.JOIN not in intent.grants:
        d.reject(intent, Rejection.FORBIDDEN, "token does not grant join", **where)
        return
    if d.state is None or not d.state.is_open:
        room_type = intent.room_type or RoomType.SFU
        d.fact(
            RoomCreated,
            room_type=room_type,
            max_participants=p2p.capacity(room_type, 50),
            empty_timeout_s=300,
            creator=intent.identity,
        )
    assert d.state is not None
    if intent.peer_id in d.state.peers:
        return  # the same peer id joined already (a re-sent intent with a new event id)
    if d.state.allowed_identities and intent.identity not in d.state.allowed_identities:
        d.reject(intent, Rejection.FORBIDDEN, f"room {intent.room_id} is private to its call", **where)
        return
    older = d.state.peer_by_identity(intent.identity)
    if older is not None:
        remove_peer(d, older, "replaced", tell_peer=True)
    if len(d.state.peers) >= d.state.max_participants:
        d.reject(intent, Rejection.ROOM_FULL, f"room {intent.room_id} is full", **where)
        return
    peer = d.fact(
        PeerJoined,
        peer_id=intent.peer_id,
        identity=intent.identity,
        name=intent.name,
        session_id=intent.session_id,
        gateway_id=intent.gateway_id,
        can_publish=Grant.PUBLISH in intent.grants,
        can_subscribe=Grant.SUBSCRIBE in intent.grants,
        hidden=Grant.RECORD in intent.grants and Grant.PUBLISH not in intent.grants,
    )
    me = d.state.peers[peer.peer_id]
    if not me.hidden:
        d.notify_others(me.peer_id, {"type": "peer-joined", "peer": peer_summary(me)})
    if d.state.node_id is None and d.state.room_type != RoomType.P2P:
        # `joined` is sent once the room is placed on a media node (see on_placed)
        d.out.add("media.nodes", PlacementRequested, room_id=d.room_id)
        return
    send_joined(d, me)
    tracks.subscribe_to_room(d, me)


def send_joined(d: Decision, me: PeerState) -> None:
    assert d.state is not None
    d.notify(
        me,
        {
            "type": "joined",
            "request_id": me.join_request_id,
            "room": d.room_id,
            "room_type": d.state.room_type.value,
            "peer_id": me.peer_id,
            "peers": [peer_summary(p) for p in d.state.visible_peers() if p.peer_id != me.peer_id],
        },
    )


def on_leave(d: Decision, intent: LeaveRequested) -> None:
    peer = d.state.peers.get(intent.peer_id) if d.state else None
    if peer is not None:
        remove_peer(d, peer, intent.reason, tell_peer=True, request_id=intent.correlation_id)


def on_connection_lost(d: Decision, intent: ConnectionLost) -> None:
    peer = d.state.peers.get(intent.peer_id) if d.state else None
    if peer is not None and peer.state == "joined" and peer.session_id == intent.session_id:
        d.fact(PeerDisconnected, peer_id=peer.peer_id)


def on_resume(d: Decision, intent: ResumeRequested) -> None:
    peer = d.state.peers.get(intent.peer_id) if d.state else None
    if peer is None or (intent.identity is not None and intent.identity != peer.identity):
        d.reject(
            intent,
            Rejection.PEER_NOT_FOUND,
            "peer is gone; join again",
            peer_id=intent.peer_id,
            gateway_id=intent.gateway_id,
            session_id=intent.session_id,
        )
        return
    d.fact(PeerResumed, peer_id=peer.peer_id, session_id=intent.session_id, gateway_id=intent.gateway_id)
    assert d.state is not None
    me = d.state.peers[peer.peer_id]
    d.notify(
        me,
        {
            "type": "resumed",
            "request_id": intent.correlation_id,
            "peer_id": me.peer_id,
            "peers": [peer_summary(p) for p in d.state.visible_peers() if p is not me],
            "tracks": track_summary(me),
        },
    )
    # the node makes no new offer until its last one is answered; that one may have gone to the
    # socket this peer lost (e.g. the offer for a newcomer's tracks while a gateway restarted)
    if me.offer is not None and me.offer.get("node_id") == d.state.node_id:
        d.notify(me, me.offer["message"])


def on_mute(d: Decision, intent: MuteRequested) -> None:
    peer = d.state.peers.get(intent.peer_id) if d.state else None
    if peer is None:
        return
    audio = intent.muted if intent.source_kind == "microphone" else peer.audio_muted
    video = intent.muted if intent.source_kind != "microphone" else peer.video_muted
    d.fact(PeerUpdated, peer_id=peer.peer_id, audio_muted=audio, video_muted=video)
    assert d.state is not None
    d.notify_others(peer.peer_id, {"type": "peer-updated", "peer": peer_summary(d.state.peers[peer.peer_id])})


def on_placed(d: Decision, intent: RoomPlaced) -> None:
    if d.state is None or not d.state.is_open:
        d.out.add("media.nodes", RoomReleased, room_id=intent.room_id, node_id=intent.node_id)
        return
    if d.state.node_id == intent.node_id:
        return
    moved = d.state.node_id is not None or intent.previous_node_id is not None
    d.fact(RoomPlaced, node_id=intent.node_id, previous_node_id=intent.previous_node_id, reason=intent.reason)
    for peer in list(d.state.peers.values()):
        if moved:
            d.notify(peer, {"type": "reconnect", "reason": intent.reason})
        else:
            send_joined(d, peer)


def on_tick(d: Decision, tick: Tick) -> None:
    if d.state is None or not d.state.is_open:
        return
    grace = timedelta(seconds=d.config.disconnect_grace_s)
    for peer in list(d.state.peers.values()):
        if (
            peer.state == "disconnected"
            and peer.disconnected_at is not None
            and (tick.now - peer.disconnected_at >= grace)
        ):
            remove_peer(d, peer, "disconnect-timeout")
    empty_since = d.state.empty_since
    if (
        not d.state.visible_peers()
        and empty_since is not None
        and (tick.now - empty_since >= timedelta(seconds=d.state.empty_timeout_s))
    ):
        close_room(d, "empty-timeout")


HANDLERS: dict[type[Event], Callable[[Decision, Any], None]] = {
    CreateRoomRequested: on_create,
    DeleteRoomRequested: on_delete,
    JoinRequested: on_join,
    LeaveRequested: on_leave,
    ConnectionLost: on_connection_lost,
    ResumeRequested: on_resume,
    MuteRequested: on_mute,
    RoomPlaced: on_placed,
    PeerSignalRequested: p2p.on_signal,
    ChatMessageRequested: chat.on_chat,
    PublishRequested: tracks.on_publish,
    UnpublishRequested: tracks.on_unpublish,
    SubscribeRequested: tracks.on_subscribe,
    UnsubscribeRequested: tracks.on_unsubscribe,
    SubscriberAnswerSubmitted: tracks.on_subscriber_answer,
    PublisherAnswered: tracks.on_publisher_answered,
    SubscriberOffered: tracks.on_subscriber_offered,
    TrackStarted: tracks.on_track_started,
    TrackEnded: tracks.on_track_ended,
    CommandFailed: tracks.on_command_failed,
}


def next_deadline(state: RoomState | None, config: RoomConfig) -> datetime | None:
    """When a tick may next change this room (a grace period or the empty timeout)."""
    if state is None or not state.is_open:
        return None
    times = [
        p.disconnected_at + timedelta(seconds=config.disconnect_grace_s)
        for p in state.peers.values()
        if p.disconnected_at is not None
    ]
    if not state.visible_peers() and state.empty_since is not None:
        times.append(state.empty_since + timedelta(seconds=state.empty_timeout_s))
    return min(times, default=None)


def unsupported(d: Decision, intent: Event) -> None:
    d.reject(intent, Rejection.UNSUPPORTED, f"{intent.type} is not handled by the room agent")


def handle(
    state: RoomState | None, intent: Event, config: RoomConfig, room_id: str | None = None
) -> tuple[RoomState | None, Outputs]:
    """Apply one input to one room. Returns the new state and the outputs."""
    room_id = room_id or str(getattr(intent, "room_id"))  # noqa: B009
    d = Decision(state, intent, room_id, at_of(intent), config)
    dispatch(d, intent, HANDLERS, on_tick, unsupported)
    return d.state, d.out
