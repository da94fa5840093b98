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
    SubscriberOffered,
    TrackStarted,
)
from producers.rtc import (
    JoinRequested,
    LeaveRequested,
    Notification,
    PublishRequested,
    RequestRejected,
    RoomPlaced,
    SubscriberAnswerSubmitted,
    SubscriptionRemoved,
    TrackPublished,
    TrackUnpublished,
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
    return JoinRequested.new(room_id="r", peer_id=peer, identity=peer, session_id=f"s-{peer}", gateway_id="gw",
                             grants=grants, correlation_id=f"join-{peer}")


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
        {"source_id": "cam-a", "kind": "camera", "layer": "single"}]


def test_subscriber_offer_and_answer_round_trip() -> None:
    state = placed_room()
    offer = SubscriberOffered.new(room_id="r", peer_id="b", node_id="n1", sdp="v=0\r\noffer",
                                  sources=[OfferedSource(source_id="cam-a", peer_id="a", kind="camera",
                                                         layer="high", mid="0")])
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
