"""The room decision, with plain data: no Kafka, no clock."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from producers.fields import Grant
from producers.media import ClosePeer, OfferedSource, PlacementRequested, SubscriberOffered
from producers.rtc import (
    ConnectionLost,
    CreateRoomRequested,
    JoinRequested,
    LeaveRequested,
    Notification,
    PeerJoined,
    PeerLeft,
    RequestRejected,
    ResumeRequested,
    RoomClosed,
    RoomCreated,
    RoomPlaced,
    SubscriberAnswerSubmitted,
    Tick,
)
from streams.room_state import RoomState, fold
from streams.rooms import RoomConfig, handle, next_deadline

T0 = datetime(2026, 1, 1, tzinfo=UTC)
CFG = RoomConfig(disconnect_grace_s=30)
GRANTS = [Grant.JOIN, Grant.PUBLISH, Grant.SUBSCRIBE]


def join(peer: str, identity: str, room: str = "r1", at: datetime = T0, grants: list[Grant] = GRANTS) -> JoinRequested:
    return JoinRequested.new(
        room_id=room,
        peer_id=peer,
        identity=identity,
        session_id=f"s-{peer}",
        gateway_id="gw1",
        grants=grants,
        occurred_at=at,
        correlation_id=f"req-{peer}",
    )


def run(state: RoomState | None, *events: object) -> tuple[RoomState | None, list[object]]:
    outputs: list[object] = []
    for event in events:
        state, out = handle(state, event, CFG)  # type: ignore[arg-type]
        outputs += [o.event for o in out.items]
    return state, outputs


def types(outputs: list[object]) -> list[str]:
    return [type(o).__name__ for o in outputs]


def test_join_creates_room_and_requests_placement() -> None:
    state, out = run(None, join("p1", "alice"))
    assert state is not None and list(state.peers) == ["p1"]
    assert types(out)[:2] == ["RoomCreated", "PeerJoined"]
    assert any(isinstance(o, PlacementRequested) for o in out)
    # `joined` waits for the room to be placed on a media node
    assert not [o for o in out if isinstance(o, Notification) and o.message["type"] == "joined"]
    state, out = run(state, RoomPlaced.new(room_id="r1", node_id="n1"))
    joined = [o for o in out if isinstance(o, Notification) and o.message["type"] == "joined"]
    assert joined[0].message["request_id"] == "req-p1" and joined[0].gateway_id == "gw1"


def test_second_peer_sees_first_and_first_is_told() -> None:
    state, out = run(None, join("p1", "alice"), join("p2", "bob"))
    assert state is not None and set(state.peers) == {"p1", "p2"}
    told = [o for o in out if isinstance(o, Notification) and o.message["type"] == "peer-joined"]
    assert [n.sessions() for n in told] == [["s-p1"]]


def test_duplicate_event_id_is_ignored_after_leave() -> None:
    first = join("p1", "alice")
    state, out = run(None, first, LeaveRequested.new(room_id="r1", peer_id="p1"), first)
    assert state is not None and state.peers == {}
    assert types(out).count("PeerJoined") == 1


def test_same_identity_replaces_older_session() -> None:
    state, out = run(None, join("p1", "alice"), join("p2", "alice"))
    assert state is not None and list(state.peers) == ["p2"]
    left = [o for o in out if isinstance(o, PeerLeft)]
    assert [(o.peer_id, o.reason) for o in left] == [("p1", "replaced")]


def test_room_full_is_rejected_with_error_to_the_client() -> None:
    create = CreateRoomRequested.new(room_id="r1", max_participants=1, occurred_at=T0)
    state, out = run(None, create, join("p1", "a"), join("p2", "b"))
    assert state is not None and list(state.peers) == ["p1"]
    rejected = [o for o in out if isinstance(o, RequestRejected)]
    assert rejected[0].code == "room_full"
    errors = [o for o in out if isinstance(o, Notification) and o.message["type"] == "error"]
    assert errors[0].session_id == "s-p2" and errors[0].message["code"] == "room_full"


def test_join_without_grant_is_refused() -> None:
    state, out = run(None, join("p1", "a", grants=[Grant.SUBSCRIBE]))
    assert state is None
    assert [o.code for o in out if isinstance(o, RequestRejected)] == ["forbidden"]


def test_disconnect_becomes_leave_after_grace_via_ticks() -> None:
    state, _ = run(None, join("p1", "a"), join("p2", "b"))
    lost = ConnectionLost.new(room_id="r1", peer_id="p1", session_id="s-p1", occurred_at=T0 + timedelta(seconds=1))
    state, _ = run(state, lost)
    assert state is not None and state.peers["p1"].state == "disconnected"
    assert next_deadline(state, CFG) == T0 + timedelta(seconds=31)
    early = Tick.new(now=T0 + timedelta(seconds=20), occurred_at=T0)
    state, out = handle(state, early, CFG, room_id="r1")
    assert out.items == []
    late = Tick.new(now=T0 + timedelta(seconds=31), occurred_at=T0)
    state, out = handle(state, late, CFG, room_id="r1")
    assert state is not None and list(state.peers) == ["p2"]
    assert [type(o.event).__name__ for o in out.items][:1] == ["PeerLeft"]


def test_resume_within_grace_keeps_peer() -> None:
    state, _ = run(None, join("p1", "a"))
    state, _ = run(state, ConnectionLost.new(room_id="r1", peer_id="p1", session_id="s-p1"))
    resume = ResumeRequested.new(room_id="r1", peer_id="p1", session_id="s-new", gateway_id="gw2")
    state, out = run(state, resume)
    assert state is not None and state.peers["p1"].state == "joined"
    assert state.peers["p1"].gateway_id == "gw2"
    assert any(isinstance(o, Notification) and o.message["type"] == "resumed" for o in out)


def test_resume_of_unknown_peer_tells_client_to_rejoin() -> None:
    resume = ResumeRequested.new(room_id="r1", peer_id="px", session_id="s", gateway_id="gw")
    _, out = run(None, resume)
    assert [o.code for o in out if isinstance(o, RequestRejected)] == ["peer_not_found"]


def test_replacement_on_node_failure_tells_clients_to_reconnect() -> None:
    state, _ = run(None, join("p1", "a"), RoomPlaced.new(room_id="r1", node_id="n1"))
    assert state is not None and state.node_id == "n1"
    state, out = run(state, RoomPlaced.new(room_id="r1", node_id="n2", previous_node_id="n1", reason="node-failed"))
    assert state is not None and state.node_id == "n2"
    assert [o.message["type"] for o in out if isinstance(o, Notification)] == ["reconnect"]


def test_left_answers_the_leave_request_by_its_id() -> None:
    state, _ = run(None, join("p1", "a"), RoomPlaced.new(room_id="r1", node_id="n1"))
    _, out = run(state, LeaveRequested.new(room_id="r1", peer_id="p1", correlation_id="req-7"))
    left = [o.message for o in out if isinstance(o, Notification) and o.message["type"] == "left"]
    assert left == [{"type": "left", "peer_id": "p1", "reason": "client-leave", "request_id": "req-7"}]


def test_leave_closes_peer_on_its_node() -> None:
    state, _ = run(None, join("p1", "a"), RoomPlaced.new(room_id="r1", node_id="n1"))
    _, out = run(state, LeaveRequested.new(room_id="r1", peer_id="p1"))
    cmds = [o for o in out if isinstance(o, ClosePeer)]
    assert cmds[0].node_id == "n1" and cmds[0].peer_id == "p1"


def test_empty_room_closes_after_timeout() -> None:
    create = CreateRoomRequested.new(room_id="r1", empty_timeout_s=10, occurred_at=T0)
    state, _ = run(None, create)
    state, out = handle(state, Tick.new(now=T0 + timedelta(seconds=11)), CFG, room_id="r1")
    assert state is not None and state.status == "closed"
    assert any(isinstance(o.event, RoomClosed) for o in out.items)


def test_output_ids_are_deterministic() -> None:
    intent = join("p1", "a")
    _, a = handle(None, intent, CFG)
    _, b = handle(None, intent, CFG)
    assert [o.event.event_id for o in a.items] == [o.event.event_id for o in b.items]
    assert all(o.event.causation_id == intent.event_id for o in a.items)


def test_state_is_the_fold_of_its_facts() -> None:
    events = [
        join("p1", "a"),
        join("p2", "b"),
        RoomPlaced.new(room_id="r1", node_id="n1"),
        LeaveRequested.new(room_id="r1", peer_id="p1"),
        join("p3", "c"),
    ]
    state: RoomState | None = None
    facts = []
    for event in events:
        state, out = handle(state, event, CFG)
        facts += out.facts()
    replayed = fold(facts)
    assert state is not None and replayed is not None
    assert replayed.view() == state.view()
    assert isinstance(facts[0], RoomCreated) and isinstance(facts[1], PeerJoined)


def offered(peer: str, node: str = "n1", sdp: str = "v=0 offer") -> SubscriberOffered:
    source = OfferedSource(source_id="cam-x", peer_id="p9", kind="video", layer="high", mid="0")
    return SubscriberOffered.new(room_id="r1", peer_id=peer, node_id=node, sdp=sdp, sources=[source])


def offers(outputs: list[object]) -> list[Notification]:
    return [o for o in outputs if isinstance(o, Notification) and o.message["type"] == "subscriber-offer"]


def test_a_resumed_peer_gets_the_offer_its_lost_socket_was_sent() -> None:
    """Issue 16 item 2: the node offered while the peer's gateway was down (the offer went to the
    lost socket) and makes no new offer until that one is answered: a resume sends it again."""
    state, _ = run(None, join("p1", "a"), RoomPlaced.new(room_id="r1", node_id="n1"))
    state, _ = run(state, ConnectionLost.new(room_id="r1", peer_id="p1", session_id="s-p1"))
    state, out = run(state, offered("p1"))
    assert [n.session_id for n in offers(out)] == ["s-p1"]
    resume = ResumeRequested.new(room_id="r1", peer_id="p1", session_id="s-new", gateway_id="gw2")
    state, out = run(state, resume)
    kinds = [o.message["type"] for o in out if isinstance(o, Notification)]
    assert kinds == ["resumed", "subscriber-offer"]
    again = offers(out)[0]
    assert (again.gateway_id, again.session_id) == ("gw2", "s-new")
    assert again.message == {
        "type": "subscriber-offer",
        "sdp": "v=0 offer",
        "sources": [{"source_id": "cam-x", "peer_id": "p9", "kind": "video", "layer": "high", "mid": "0"}],
    }
    # the offer is bookkeeping: replay of the facts does not (and need not) reproduce it
    assert state is not None and state.peers["p1"].offer is not None
    assert "offer" not in state.view()["peers"]["p1"]


def test_an_answered_offer_or_one_from_another_node_is_not_sent_again() -> None:
    state, _ = run(None, join("p1", "a"), RoomPlaced.new(room_id="r1", node_id="n1"), offered("p1"))
    answer = SubscriberAnswerSubmitted.new(room_id="r1", peer_id="p1", sdp="v=0 answer")
    state, out = run(state, answer)
    assert [type(o).__name__ for o in out] == ["ApplySubscriberAnswer"]
    assert state is not None and state.peers["p1"].offer is None
    lost = ConnectionLost.new(room_id="r1", peer_id="p1", session_id="s-p1")
    resume = ResumeRequested.new(room_id="r1", peer_id="p1", session_id="s-new", gateway_id="gw1")
    _, out = run(state, lost, resume)
    assert offers(out) == []
    # an offer the room's former node made is stale once the room moved
    state, _ = run(state, offered("p1"), RoomPlaced.new(room_id="r1", node_id="n2", previous_node_id="n1"))
    lost = ConnectionLost.new(room_id="r1", peer_id="p1", session_id="s-new")
    _, out = run(state, lost, ResumeRequested.new(room_id="r1", peer_id="p1", session_id="s-3", gateway_id="gw1"))
    assert [o.message["type"] for o in out if isinstance(o, Notification)] == ["resumed"]


def test_one_notification_per_gateway_lists_every_session() -> None:
    joins = [join(f"p{i}", f"u{i}") for i in range(4)]
    state, _ = run(None, *joins, RoomPlaced.new(room_id="r1", node_id="n1"))
    _, out = run(state, join("p9", "u9"))
    told = [o for o in out if isinstance(o, Notification) and o.message["type"] == "peer-joined"]
    assert len(told) == 1 and sorted(told[0].sessions()) == ["s-p0", "s-p1", "s-p2", "s-p3"]
