"""Publish / subscribe decisions and media-node results, with plain data."""

from __future__ import annotations

from producers.fields import Grant, SourceKind, TrackInfo
from producers.media import (
    AddSubscription,
    ApplySubscriberAnswer,
    ClosePeer,
    OfferedSource,
    OpenPublisher,
    PublisherAnswered,
    RemoveSource,
    SubscriberOffered,
    TrackStarted,
)
from producers.rtc import (
    JoinRequested,
    LeaveRequested,
    Notification,
    PublishRequested,
    RequestRejected,
    ResumeRequested,
    RoomPlaced,
    SubscriberAnswerSubmitted,
    SubscriptionRemoved,
    TrackPublished,
    TrackUnpublished,
    UnpublishRequested,
)
from streams.room_state import RoomState
from streams.rooms import RoomConfig, handle

CFG = RoomConfig()
ALL = [Grant.JOIN, Grant.PUBLISH, Grant.SUBSCRIBE]
CAM = TrackInfo(source_id="cam-a", kind=SourceKind.CAMERA, mid="0")


def feed(state: RoomState | None, *events: object) -> tuple[RoomState | None, list[object]]:
    out: list[object] = []
    for event in events:
        state, o = handle(state, event, CFG)  # type: ignore[arg-type]
        out += [x.event for x in o.items]
    return state, out


def join(peer: str, grants: list[Grant] = ALL) -> JoinRequested:
    return JoinRequested.new(
        room_id="r",
        peer_id=peer,
        identity=peer,
        session_id=f"s-{peer}",
        gateway_id="gw",
        grants=grants,
        correlation_id=f"join-{peer}",
    )


def placed_room() -> RoomState:
    state, _ = feed(None, join("a"), join("b"), RoomPlaced.new(room_id="r", node_id="n1"))
    assert state is not None
    return state


def notes(out: list[object], type_: str) -> list[Notification]:
    return [o for o in out if isinstance(o, Notification) and o.message["type"] == type_]


def test_publish_goes_to_the_rooms_node_and_answer_back_to_the_client() -> None:
    state = placed_room()
    publish = PublishRequested.new(room_id="r", peer_id="a", sdp="v=0\r\n", tracks=[CAM], correlation_id="pub-1")
    state, out = feed(state, publish)
    cmd = [o for o in out if isinstance(o, OpenPublisher)][0]
    assert (cmd.node_id, cmd.peer_id, cmd.tracks, cmd.correlation_id) == ("n1", "a", [CAM], "pub-1")
    answer = PublisherAnswered.caused_by(cmd, room_id="r", peer_id="a", node_id="n1", sdp="v=0\r\nanswer")
    state, out = feed(state, answer)
    assert [(n.session_id, n.message["request_id"]) for n in notes(out, "publisher-answer")] == [("s-a", "pub-1")]


def test_track_started_publishes_and_auto_subscribes_others() -> None:
    state = placed_room()
    state, out = feed(state, TrackStarted.new(room_id="r", peer_id="a", node_id="n1", track=CAM))
    assert [o.track.source_id for o in out if isinstance(o, TrackPublished)] == ["cam-a"]
    assert [n.sessions() for n in notes(out, "track-published")] == [["s-b"]]
    subs = [o for o in out if isinstance(o, AddSubscription)]
    assert [(s.peer_id, s.publisher_peer_id, s.source_id) for s in subs] == [("b", "a", "cam-a")]
    assert state is not None and state.peers["b"].subscriptions == {"cam-a": "high"}
    # the same track reported again changes nothing
    _, again = feed(state, TrackStarted.new(room_id="r", peer_id="a", node_id="n1", track=CAM))
    assert again == []


def test_late_joiner_is_subscribed_to_existing_sources() -> None:
    state = placed_room()
    state, _ = feed(state, TrackStarted.new(room_id="r", peer_id="a", node_id="n1", track=CAM))
    state, out = feed(state, join("c"))
    assert [(s.peer_id, s.source_id) for s in out if isinstance(s, AddSubscription)] == [("c", "cam-a")]
    assert notes(out, "joined")[0].message["peers"][0]["tracks"] == [
        {"source_id": "cam-a", "kind": "camera", "layer": "single"}
    ]


def test_subscriber_offer_and_answer_round_trip() -> None:
    state = placed_room()
    offer = SubscriberOffered.new(
        room_id="r",
        peer_id="b",
        node_id="n1",
        sdp="v=0\r\noffer",
        sources=[OfferedSource(source_id="cam-a", peer_id="a", kind="camera", layer="high", mid="0")],
    )
    state, out = feed(state, offer)
    msg = notes(out, "subscriber-offer")[0].message
    assert msg["sources"][0]["mid"] == "0" and msg["sdp"] == "v=0\r\noffer"
    _, out = feed(state, SubscriberAnswerSubmitted.new(room_id="r", peer_id="b", sdp="v=0\r\nans"))
    assert [o.sdp for o in out if isinstance(o, ApplySubscriberAnswer)] == ["v=0\r\nans"]


def test_publish_without_grant_is_refused() -> None:
    state, _ = feed(None, join("v", grants=[Grant.JOIN, Grant.SUBSCRIBE]), RoomPlaced.new(room_id="r", node_id="n1"))
    _, out = feed(state, PublishRequested.new(room_id="r", peer_id="v", sdp="v=0\r\n", tracks=[CAM]))
    assert [o.code for o in out if isinstance(o, RequestRejected)] == ["forbidden"]
    assert not [o for o in out if isinstance(o, OpenPublisher)]
    assert notes(out, "error")[0].session_id == "s-v"


def test_leaving_publisher_unpublishes_its_sources() -> None:
    state = placed_room()
    state, _ = feed(state, TrackStarted.new(room_id="r", peer_id="a", node_id="n1", track=CAM))
    state, out = feed(state, LeaveRequested.new(room_id="r", peer_id="a"))
    assert [o.source_id for o in out if isinstance(o, TrackUnpublished)] == ["cam-a"]
    assert [n.sessions() for n in notes(out, "track-unpublished")] == [["s-b"]]
    assert [o.peer_id for o in out if isinstance(o, ClosePeer)] == ["a"]
    assert state is not None and state.peers["b"].subscriptions == {}
    assert [(o.peer_id, o.source_id) for o in out if isinstance(o, SubscriptionRemoved)] == [("b", "cam-a")]


def test_results_from_a_node_the_room_left_are_ignored() -> None:
    state = placed_room()
    _, out = feed(state, TrackStarted.new(room_id="r", peer_id="a", node_id="old-node", track=CAM))
    assert out == []


SCREEN = TrackInfo(source_id="screen-a", kind=SourceKind.SCREEN, mid="1")


def sharing_room() -> RoomState:
    """a publishes a camera and a screen; b and c are subscribed to both."""
    state = placed_room()
    state, _ = feed(
        state,
        join("c"),
        TrackStarted.new(room_id="r", peer_id="a", node_id="n1", track=CAM),
        TrackStarted.new(room_id="r", peer_id="a", node_id="n1", track=SCREEN),
    )
    assert state is not None
    assert state.peers["b"].subscriptions == state.peers["c"].subscriptions == {"cam-a": "high", "screen-a": "high"}
    return state


def unpublish_intent(peer: str, source: str, request_id: str = "unpub-1") -> UnpublishRequested:
    return UnpublishRequested.new(room_id="r", peer_id=peer, source_id=source, correlation_id=request_id)


def test_unpublish_records_it_tells_the_others_the_node_and_the_requester() -> None:
    state = sharing_room()
    intent = unpublish_intent("a", "screen-a")
    state, out = feed(state, intent)
    assert [(o.peer_id, o.source_id) for o in out if isinstance(o, TrackUnpublished)] == [("a", "screen-a")]
    assert sorted((o.peer_id, o.source_id) for o in out if isinstance(o, SubscriptionRemoved)) == [
        ("b", "screen-a"),
        ("c", "screen-a"),
    ]
    told = notes(out, "track-unpublished")
    assert [sorted(n.sessions()) for n in told] == [["s-b", "s-c"]]
    assert told[0].message == {"type": "track-unpublished", "peer_id": "a", "source_id": "screen-a"}
    commands = [o for o in out if isinstance(o, RemoveSource)]
    assert [(c.node_id, c.room_id, c.peer_id, c.source_id, c.correlation_id, c.causation_id) for c in commands] == [
        ("n1", "r", "a", "screen-a", "unpub-1", intent.event_id)
    ]
    answer = notes(out, "unpublished")
    assert [(n.session_id, n.message) for n in answer] == [
        ("s-a", {"type": "unpublished", "request_id": "unpub-1", "source_id": "screen-a"})
    ]
    assert not [o for o in out if isinstance(o, RequestRejected)]
    assert state is not None
    assert list(state.peers["a"].source_ids()) == ["cam-a"]
    assert state.peers["b"].subscriptions == state.peers["c"].subscriptions == {"cam-a": "high"}
    # the same intent delivered again (same event id) changes nothing
    again_state, again = feed(state, intent)
    assert again == [] and again_state == state


def test_unpublish_output_ids_are_derived_from_the_intent() -> None:
    intent = unpublish_intent("a", "screen-a")
    _, first = feed(sharing_room(), intent)
    _, second = feed(sharing_room(), intent)
    assert [o.event_id for o in first] == [o.event_id for o in second]  # type: ignore[attr-defined]


def test_publishing_the_source_again_after_unpublishing_resubscribes_the_others() -> None:
    state, _ = feed(sharing_room(), unpublish_intent("a", "screen-a"))
    state, out = feed(state, TrackStarted.new(room_id="r", peer_id="a", node_id="n1", track=SCREEN))
    assert [o.track.source_id for o in out if isinstance(o, TrackPublished)] == ["screen-a"]
    assert sorted((s.peer_id, s.source_id) for s in out if isinstance(s, AddSubscription)) == [
        ("b", "screen-a"),
        ("c", "screen-a"),
    ]


def test_unpublishing_an_unknown_source_is_refused() -> None:
    state = sharing_room()
    after, out = feed(state, unpublish_intent("a", "nope", "u-2"))
    assert [(o.peer_id, o.code) for o in out if isinstance(o, RequestRejected)] == [("a", "source_not_found")]
    assert [(n.session_id, n.message["code"], n.message["request_id"]) for n in notes(out, "error")] == [
        ("s-a", "source_not_found", "u-2")
    ]
    assert not [o for o in out if isinstance(o, (TrackUnpublished, SubscriptionRemoved, RemoveSource))]
    assert not notes(out, "track-unpublished") and not notes(out, "unpublished")
    assert after is not None and after.peers == state.peers


def test_unpublishing_another_peers_source_is_refused() -> None:
    state = sharing_room()
    after, out = feed(state, unpublish_intent("b", "screen-a"))
    assert [(o.peer_id, o.code) for o in out if isinstance(o, RequestRejected)] == [("b", "forbidden")]
    assert [n.session_id for n in notes(out, "error")] == ["s-b"]
    assert not [o for o in out if isinstance(o, (TrackUnpublished, SubscriptionRemoved, RemoveSource))]
    assert after is not None and after.peers == state.peers


def test_unpublishing_twice_is_refused_the_second_time() -> None:
    state, _ = feed(sharing_room(), unpublish_intent("a", "screen-a"))
    _, out = feed(state, unpublish_intent("a", "screen-a", "u-3"))
    assert [o.code for o in out if isinstance(o, RequestRejected)] == ["source_not_found"]
    assert not [o for o in out if isinstance(o, (TrackUnpublished, RemoveSource))]


def test_unpublish_from_a_peer_not_in_the_room_is_refused() -> None:
    _, out = feed(sharing_room(), unpublish_intent("zz", "screen-a"))
    assert [(o.peer_id, o.code) for o in out if isinstance(o, RequestRejected)] == [("zz", "not_joined")]
    assert not [o for o in out if isinstance(o, (TrackUnpublished, RemoveSource))]


def test_resumed_tells_the_peer_its_own_tracks() -> None:
    state = sharing_room()
    _, out = feed(state, ResumeRequested.new(room_id="r", peer_id="a", session_id="s-a2", gateway_id="gw"))
    resumed = notes(out, "resumed")[0].message
    assert resumed["tracks"] == [
        {"source_id": "cam-a", "kind": "camera", "layer": "single"},
        {"source_id": "screen-a", "kind": "screen", "layer": "single"},
    ]
