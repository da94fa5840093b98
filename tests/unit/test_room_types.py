"""Room types in the room decision: p2p (two peers, no media node, signals relayed),
broadcast (one publisher) and private call rooms."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from producers.fields import Grant, RoomType, SourceKind, TrackInfo
from producers.media import OpenPublisher, PlacementRequested
from producers.rtc import (
    CreateRoomRequested,
    JoinRequested,
    LeaveRequested,
    Notification,
    PeerSignalRequested,
    PublisherClaimed,
    PublishRequested,
    RequestRejected,
    RoomPlaced,
)
from streams.room_state import RoomState, fold
from streams.rooms import RoomConfig, handle

T0 = datetime(2026, 1, 1, tzinfo=UTC)
ALL = [Grant.JOIN, Grant.PUBLISH, Grant.SUBSCRIBE]
SDP = "v=0\r\no=- 0 0 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\n"


def join(
    peer: str, identity: str, room: str = "r1", grants: list[Grant] = ALL, room_type: RoomType | None = None
) -> JoinRequested:
    return JoinRequested.new(
        room_id=room,
        peer_id=peer,
        identity=identity,
        session_id=f"s-{peer}",
        gateway_id="gw1",
        grants=grants,
        occurred_at=T0,
        room_type=room_type,
    )


def run(state: RoomState | None, *events: Any) -> tuple[RoomState | None, list[Any]]:
    out: list[Any] = []
    for event in events:
        state, o = handle(state, event, RoomConfig())
        out += [i.event for i in o.items]
    return state, out


def messages(out: list[Any], session: str) -> list[dict[str, Any]]:
    return [n.message for n in out if isinstance(n, Notification) and session in n.sessions()]


def test_p2p_room_has_two_peers_and_no_media_node() -> None:
    state, out = run(None, CreateRoomRequested.new(room_id="r1", room_type=RoomType.P2P, max_participants=50))
    assert state is not None and state.max_participants == 2
    state, out = run(state, join("p1", "alice"), join("p2", "bob"))
    assert not [e for e in out if isinstance(e, PlacementRequested)]
    assert [m["type"] for m in messages(out, "s-p1")] == ["joined", "peer-joined"]
    assert messages(out, "s-p2")[0]["room_type"] == "p2p"
    state, out = run(state, join("p3", "carol"))
    assert [(e.code, e.peer_id) for e in out if isinstance(e, RequestRejected)] == [("room_full", "p3")]


def test_p2p_signals_are_relayed_to_the_other_peer_only() -> None:
    state, _ = run(None, join("p1", "alice", room_type=RoomType.P2P), join("p2", "bob"))
    assert state is not None and state.room_type == RoomType.P2P
    offer = PeerSignalRequested.new(room_id="r1", peer_id="p1", to_peer_id="p2", kind="offer", sdp=SDP)
    _, out = run(state, offer)
    assert [(n.session_id, n.message) for n in out] == [("s-p2", {"type": "p2p-offer", "from": "p1", "sdp": SDP})]
    cand = PeerSignalRequested.new(
        room_id="r1",
        peer_id="p2",
        to_peer_id="p1",
        kind="candidate",
        candidate={"candidate": "candidate:1 1 udp 1 127.0.0.2 5000 typ host", "sdpMid": "0"},
    )
    _, out = run(state, cand)
    assert out[0].session_id == "s-p1" and out[0].message["type"] == "ice-candidate"
    assert out[0].message["candidate"]["sdpMid"] == "0"
    # to someone not in the room: an error to the sender, recorded as a rejection
    _, out = run(state, PeerSignalRequested.new(room_id="r1", peer_id="p1", to_peer_id="ghost", kind="answer", sdp=SDP))
    assert [m["code"] for m in messages(out, "s-p1")] == ["peer_not_found"]
    # publishing through a media node makes no sense in p2p
    _, out = run(
        state,
        PublishRequested.new(
            room_id="r1", peer_id="p1", sdp=SDP, tracks=[TrackInfo(source_id="cam", kind=SourceKind.CAMERA, mid="0")]
        ),
    )
    assert [m["code"] for m in messages(out, "s-p1")] == ["unsupported"]


def test_signals_in_an_sfu_room_are_refused() -> None:
    state, _ = run(None, join("p1", "alice"), join("p2", "bob"))
    _, out = run(state, PeerSignalRequested.new(room_id="r1", peer_id="p1", to_peer_id="p2", kind="offer", sdp=SDP))
    assert [m["code"] for m in messages(out, "s-p1")] == ["unsupported"]
    assert not messages(out, "s-p2")


def publish(peer: str) -> PublishRequested:
    return PublishRequested.new(
        room_id="r1",
        peer_id=peer,
        sdp=SDP,
        tracks=[TrackInfo(source_id=f"{peer}-cam", kind=SourceKind.CAMERA, mid="0")],
    )


def test_broadcast_has_one_publisher() -> None:
    state, _ = run(
        None,
        CreateRoomRequested.new(room_id="r1", room_type=RoomType.BROADCAST),
        join("p1", "host"),
        join("p2", "cohost"),
        join("v1", "viewer", grants=[Grant.JOIN, Grant.SUBSCRIBE]),
        RoomPlaced.new(room_id="r1", node_id="n1"),
    )
    state, out = run(state, publish("p1"))
    assert [e.peer_id for e in out if isinstance(e, PublisherClaimed)] == ["p1"]
    assert len([e for e in out if isinstance(e, OpenPublisher)]) == 1
    state, out = run(state, publish("p1"))  # the publisher publishes again (another source): fine
    assert len([e for e in out if isinstance(e, OpenPublisher)]) == 1
    state, out = run(state, publish("p2"))
    assert [e.code for e in out if isinstance(e, RequestRejected)] == ["publisher_exists"]
    assert not [e for e in out if isinstance(e, OpenPublisher)]
    assert [m["code"] for m in messages(out, "s-p2")] == ["publisher_exists"]
    # a viewer without the publish grant: forbidden (the gateway refuses first; streams re-check)
    _, out = run(state, publish("v1"))
    assert [e.code for e in out if isinstance(e, RequestRejected)] == ["forbidden"]
    # when the publisher leaves, another may publish
    state, out = run(state, LeaveRequested.new(room_id="r1", peer_id="p1"), publish("p2"))
    assert [e.peer_id for e in out if isinstance(e, PublisherClaimed)] == ["p2"]
    assert state is not None and state.publisher_peer_id == "p2"


def test_call_rooms_admit_only_their_parties_and_replay_agrees() -> None:
    create = CreateRoomRequested.new(
        room_id="r1", room_type=RoomType.P2P, max_participants=2, allowed_identities=["alice", "bob"]
    )
    state, out = run(None, create, join("p1", "mallory"))
    assert [e.code for e in out if isinstance(e, RequestRejected)] == ["forbidden"]
    state, out2 = run(state, join("p2", "alice"), join("p3", "bob"))
    assert state is not None and sorted(p.identity for p in state.peers.values()) == ["alice", "bob"]
    facts = [
        e
        for e in out + out2
        if type(e).__module__ == "producers.rtc"
        and not isinstance(e, Notification)
        and not isinstance(e, RequestRejected)
    ]
    assert fold(facts) is not None and fold(facts).view() == state.view()  # type: ignore[union-attr]
