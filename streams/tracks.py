"""Publishing and subscribing: intents from clients and results from media nodes.

publish → ``OpenPublisher`` → node answers (``PublisherAnswered``) → the client gets
``publisher-answer``; the node sees media (``TrackStarted``) → ``TrackPublished`` and
every other peer is subscribed (auto-subscribe) → ``AddSubscription`` → the node
offers on the subscriber connection (``SubscriberOffered``) → ``subscriber-offer`` →
the client answers → ``ApplySubscriberAnswer``. Pure.
"""

from __future__ import annotations

from producers.fields import RoomType
from producers.media import (
    AddSubscription,
    ApplySubscriberAnswer,
    CommandFailed,
    OpenPublisher,
    PublisherAnswered,
    RemoveSource,
    RemoveSubscription,
    SetLayer,
    SubscriberOffered,
    TrackEnded,
    TrackStarted,
)
from producers.rtc import (
    PublisherClaimed,
    PublishRequested,
    SubscriberAnswerSubmitted,
    SubscribeRequested,
    SubscriptionAdded,
    SubscriptionRemoved,
    TrackPublished,
    TrackUnpublished,
    UnpublishRequested,
    UnsubscribeRequested,
)
from streams.decision import Decision
from streams.errors import Rejection
from streams.room_state import PeerState, track_key


def _ready_peer(
    d: Decision,
    intent: PublishRequested
    | SubscribeRequested
    | UnsubscribeRequested
    | SubscriberAnswerSubmitted
    | UnpublishRequested,
) -> PeerState | None:
    peer = d.peer(intent.peer_id)
    if peer is None:
        d.reject(intent, Rejection.NOT_JOINED, f"peer {intent.peer_id} is not in the room", peer_id=intent.peer_id)
        return None
    if d.state is not None and d.state.room_type == RoomType.P2P:
        d.reject_to(intent, peer, Rejection.UNSUPPORTED, "p2p rooms carry media peer to peer: use p2p-offer")
        return None
    if d.state is None or d.state.node_id is None:
        d.reject_to(intent, peer, Rejection.UNAVAILABLE, "the room has no media node yet")
        return None
    return peer


def subscribe(d: Decision, subscriber: PeerState, publisher: PeerState, source_id: str, layer: str = "high") -> None:
    if subscriber.peer_id == publisher.peer_id or not subscriber.can_subscribe:
        return
    if subscriber.subscriptions.get(source_id) == layer:
        return
    d.fact(SubscriptionAdded, peer_id=subscriber.peer_id, source_id=source_id, layer=layer)
    d.command(
        AddSubscription,
        peer_id=subscriber.peer_id,
        publisher_peer_id=publisher.peer_id,
        source_id=source_id,
        layer=layer,
        from_start=subscriber.hidden,  # the recorder: a track is recorded from its first frame
    )


def subscribe_to_room(d: Decision, subscriber: PeerState) -> None:
    """Auto-subscribe a (new) peer to every source already published in the room."""
    assert d.state is not None
    for publisher in list(d.state.peers.values()):
        for source_id in publisher.source_ids():
            subscribe(d, d.state.peers[subscriber.peer_id], publisher, source_id)


def unpublish(d: Decision, peer: PeerState, source_id: str) -> None:
    """A source goes away: record it, drop its subscriptions, tell the others."""
    assert d.state is not None
    d.fact(TrackUnpublished, peer_id=peer.peer_id, source_id=source_id)
    for other in list(d.state.peers.values()):
        if source_id in other.subscriptions:
            d.fact(SubscriptionRemoved, peer_id=other.peer_id, source_id=source_id)
    d.notify_others(peer.peer_id, {"type": "track-unpublished", "peer_id": peer.peer_id, "source_id": source_id})


def unpublish_all(d: Decision, peer: PeerState) -> None:
    for source_id in peer.source_ids():
        unpublish(d, peer, source_id)


def on_publish(d: Decision, intent: PublishRequested) -> None:
    peer = _ready_peer(d, intent)
    if peer is None:
        return
    if not peer.can_publish:
        d.reject_to(intent, peer, Rejection.FORBIDDEN, "token does not grant publish")
        return
    assert d.state is not None
    if d.state.room_type == RoomType.BROADCAST:
        holder = d.state.publisher_peer_id
        if holder is not None and holder != peer.peer_id:
            d.reject_to(
                intent,
                peer,
                Rejection.PUBLISHER_EXISTS,
                f"broadcast room {d.room_id} already has a publisher ({holder}); it has one",
            )
            return
        if holder is None:
            d.fact(PublisherClaimed, peer_id=peer.peer_id)
    d.command(OpenPublisher, peer_id=peer.peer_id, sdp=intent.sdp, tracks=intent.tracks)


def on_unpublish(d: Decision, intent: UnpublishRequested) -> None:
    """The peer stops publishing one of its sources (e.g. stops sharing its screen).

    Recorded (``TrackUnpublished``, a ``SubscriptionRemoved`` per subscriber), every other
    peer gets ``track-unpublished``, the node drops the source and its subscriber legs
    (``RemoveSource``) and the requester gets ``unpublished``. The gateway refuses unknown
    sources and other peers' sources; refusals here are the backstop (``source_not_found``,
    ``forbidden``). A re-delivered intent is dropped by event id before this runs.
    """
    peer = _ready_peer(d, intent)
    if peer is None:
        return
    if intent.source_id not in peer.source_ids():
        owner = _publisher_of(d, intent.source_id)
        if owner is not None:
            d.reject_to(intent, peer, Rejection.FORBIDDEN, f"source {intent.source_id} is another peer's")
        else:
            d.reject_to(intent, peer, Rejection.SOURCE_NOT_FOUND, f"you publish no source {intent.source_id}")
        return
    unpublish(d, peer, intent.source_id)
    d.command(RemoveSource, peer_id=peer.peer_id, source_id=intent.source_id)
    d.notify(peer, {"type": "unpublished", "request_id": intent.correlation_id, "source_id": intent.source_id})


def _publisher_of(d: Decision, source_id: str) -> PeerState | None:
    assert d.state is not None
    return next((p for p in d.state.peers.values() if source_id in p.source_ids()), None)


def on_subscribe(d: Decision, intent: SubscribeRequested) -> None:
    peer = _ready_peer(d, intent)
    if peer is None:
        return
    if not peer.can_subscribe:
        d.reject_to(intent, peer, Rejection.FORBIDDEN, "token does not grant subscribe")
        return
    publisher = _publisher_of(d, intent.source_id)
    if publisher is None:
        d.reject_to(intent, peer, Rejection.SOURCE_NOT_FOUND, f"no published source {intent.source_id}")
        return
    current = peer.subscriptions.get(intent.source_id)
    if current is not None and current != intent.layer:
        d.fact(SubscriptionAdded, peer_id=peer.peer_id, source_id=intent.source_id, layer=intent.layer)
        d.command(SetLayer, peer_id=peer.peer_id, source_id=intent.source_id, layer=intent.layer)
        return
    subscribe(d, peer, publisher, intent.source_id, intent.layer)


def on_unsubscribe(d: Decision, intent: UnsubscribeRequested) -> None:
    peer = _ready_peer(d, intent)
    if peer is not None and intent.source_id in peer.subscriptions:
        d.fact(SubscriptionRemoved, peer_id=peer.peer_id, source_id=intent.source_id)
        d.command(RemoveSubscription, peer_id=peer.peer_id, source_id=intent.source_id)


def on_subscriber_answer(d: Decision, intent: SubscriberAnswerSubmitted) -> None:
    peer = _ready_peer(d, intent)
    if peer is not None:
        d.keep_offer(peer.peer_id, None)
        d.command(ApplySubscriberAnswer, peer_id=peer.peer_id, sdp=intent.sdp)


# --- results from the media node ---------------------------------------------------


def _current_node(d: Decision, node_id: str) -> bool:
    """Results from a node the room has moved away from are stale."""
    return d.state is not None and d.state.node_id == node_id


def on_publisher_answered(d: Decision, result: PublisherAnswered) -> None:
    peer = d.peer(result.peer_id)
    if peer is not None and _current_node(d, result.node_id):
        d.notify(peer, {"type": "publisher-answer", "request_id": result.correlation_id, "sdp": result.sdp})


def on_subscriber_offered(d: Decision, result: SubscriberOffered) -> None:
    peer = d.peer(result.peer_id)
    if peer is not None and _current_node(d, result.node_id):
        message = {
            "type": "subscriber-offer",
            "sdp": result.sdp,
            "sources": [s.model_dump(mode="json") for s in result.sources],
        }
        # kept until answered: a peer whose socket is gone gets it again when it resumes
        d.keep_offer(peer.peer_id, {"node_id": result.node_id, "message": message})
        d.notify(peer, message)


def on_track_started(d: Decision, result: TrackStarted) -> None:
    peer = d.peer(result.peer_id)
    if peer is None or not _current_node(d, result.node_id):
        return
    if track_key(result.track.source_id, result.track.layer) in peer.tracks:
        return
    first_encoding = result.track.source_id not in peer.source_ids()
    d.fact(TrackPublished, peer_id=peer.peer_id, track=result.track)
    d.notify_others(
        peer.peer_id,
        {
            "type": "track-published",
            "peer_id": peer.peer_id,
            "track": {
                "source_id": result.track.source_id,
                "kind": result.track.kind.value,
                "layer": result.track.layer,
            },
        },
    )
    if first_encoding:
        assert d.state is not None
        publisher = d.state.peers[peer.peer_id]
        for other in list(d.state.peers.values()):
            subscribe(d, other, publisher, result.track.source_id)


def on_track_ended(d: Decision, result: TrackEnded) -> None:
    peer = d.peer(result.peer_id)
    if peer is not None and _current_node(d, result.node_id) and result.source_id in peer.source_ids():
        unpublish(d, peer, result.source_id)


def on_command_failed(d: Decision, result: CommandFailed) -> None:
    peer = d.peer(result.peer_id) if result.peer_id else None
    if peer is not None:
        d.notify(
            peer, {"type": "error", "code": result.code, "message": result.message, "request_id": result.correlation_id}
        )
