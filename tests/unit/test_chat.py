"""In-room chat in the room decision, with plain data: who may post, the text rule,
the fact and the notifications, and deduplication by event id."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from producers.errors import InvalidChatText
from producers.fields import CHAT_MAX_CHARS, Grant, chat_text
from producers.rtc import (
    ChatMessagePosted,
    ChatMessageRequested,
    DeleteRoomRequested,
    JoinRequested,
    LeaveRequested,
    Notification,
    RequestRejected,
    RoomPlaced,
)
from streams.room_state import RoomState, fold
from streams.rooms import RoomConfig, handle

T0 = datetime(2026, 1, 1, tzinfo=UTC)
CFG = RoomConfig()
GRANTS = [Grant.JOIN, Grant.PUBLISH, Grant.SUBSCRIBE]


def join(peer: str, identity: str, name: str, gateway: str = "gw1") -> JoinRequested:
    return JoinRequested.new(
        room_id="r1",
        peer_id=peer,
        identity=identity,
        name=name,
        session_id=f"s-{peer}",
        gateway_id=gateway,
        grants=GRANTS,
        occurred_at=T0,
    )


def chat(
    peer: str, text: str, request_id: str = "c1", at: datetime = T0 + timedelta(seconds=5)
) -> ChatMessageRequested:
    return ChatMessageRequested.new(
        room_id="r1",
        peer_id=peer,
        text=text,
        gateway_id="gw9",
        session_id=f"s-{peer}",
        occurred_at=at,
        correlation_id=request_id,
    )


def run(state: RoomState | None, *events: Any) -> tuple[RoomState | None, list[Any]]:
    outputs: list[Any] = []
    for event in events:
        state, out = handle(state, event, CFG)
        outputs += [o.event for o in out.items]
    return state, outputs


def room_of_three() -> RoomState:
    state, _ = run(
        None,
        join("p1", "alice", "Alice"),
        join("p2", "bob", "Bob", gateway="gw2"),
        join("p3", "carol", "Carol", gateway="gw2"),
        RoomPlaced.new(room_id="r1", node_id="n1"),
    )
    assert state is not None
    return state


def notes(outputs: list[Any], kind: str) -> list[Notification]:
    return [o for o in outputs if isinstance(o, Notification) and o.message["type"] == kind]


def test_a_member_posts_a_fact_and_every_peer_is_told() -> None:
    before = room_of_three()
    intent = chat("p1", "  hello, <b>room</b>\n")
    state, out = run(before, intent)
    posted = [o for o in out if isinstance(o, ChatMessagePosted)]
    assert len(posted) == 1
    fact = posted[0]
    assert (fact.room_id, fact.peer_id, fact.identity, fact.name, fact.text) == (
        "r1",
        "p1",
        "alice",
        "Alice",
        "hello, <b>room</b>",
    )
    assert fact.occurred_at == intent.occurred_at and fact.causation_id == intent.event_id
    expected = {
        "type": "chat",
        "id": str(fact.event_id),
        "room": "r1",
        "peer_id": "p1",
        "identity": "alice",
        "name": "Alice",
        "text": "hello, <b>room</b>",
        "at": intent.occurred_at.isoformat(),
    }
    told = notes(out, "chat")
    # the sender's copy answers its request; the others get one notification per gateway
    assert [(n.gateway_id, n.sessions(), n.message) for n in told] == [
        ("gw1", ["s-p1"], {**expected, "request_id": "c1"}),
        ("gw2", ["s-p2", "s-p3"], expected),
    ]
    assert not [o for o in out if isinstance(o, RequestRejected)]
    # chat is not room state: only the seen-set moved
    assert state is not None and state.view() == before.view()
    assert str(intent.event_id) in state.seen


def test_output_ids_are_derived_from_the_intent() -> None:
    intent = chat("p1", "same")
    _, first = run(room_of_three(), intent)
    _, again = run(room_of_three(), intent)
    assert [o.event_id for o in first] == [o.event_id for o in again]
    other = chat("p1", "same")
    _, third = run(room_of_three(), other)
    assert {o.event_id for o in third}.isdisjoint(o.event_id for o in first)


def test_a_duplicate_event_id_posts_nothing_new() -> None:
    intent = chat("p2", "once")
    state, out = run(room_of_three(), intent)
    assert len([o for o in out if isinstance(o, ChatMessagePosted)]) == 1
    assert len(notes(out, "chat")) == 3  # the sender, then the others on gw1 and gw2
    again, repeated = run(state, intent)  # at-least-once: the same intent delivered again
    assert repeated == [] and again == state
    # a re-sent message with a new event id is a new message
    state, more = run(state, chat("p2", "once"))
    assert len([o for o in more if isinstance(o, ChatMessagePosted)]) == 1


@pytest.mark.parametrize("peer", ["p9", "p1"])
def test_a_non_member_is_refused_and_posts_nothing(peer: str) -> None:
    state = room_of_three()
    if peer == "p1":  # a peer that was in the room and left
        state, _ = run(state, LeaveRequested.new(room_id="r1", peer_id="p1", occurred_at=T0))
    _, out = run(state, chat(peer, "let me in", request_id="c9"))
    assert not [o for o in out if isinstance(o, ChatMessagePosted)]
    rejected = [o for o in out if isinstance(o, RequestRejected)]
    assert [(r.code, r.peer_id, r.request_type) for r in rejected] == [("not_joined", peer, "ChatMessageRequested")]
    errors = notes(out, "error")
    # the refusal goes to the socket the intent came from; nobody else hears anything
    assert [(n.gateway_id, n.session_id, n.message["code"], n.message["request_id"]) for n in errors] == [
        ("gw9", f"s-{peer}", "not_joined", "c9")
    ]
    assert not notes(out, "chat")


def test_no_room_or_a_closed_room_has_no_members() -> None:
    _, out = run(None, chat("p1", "anyone?"))
    assert [type(o).__name__ for o in out] == ["RequestRejected", "Notification"]
    assert out[0].code == "not_joined"
    closed, _ = run(room_of_three(), DeleteRoomRequested.new(room_id="r1", occurred_at=T0))
    _, out = run(closed, chat("p1", "still here?"))
    assert [o.code for o in out if isinstance(o, RequestRejected)] == ["not_joined"]
    assert not [o for o in out if isinstance(o, ChatMessagePosted)]


@pytest.mark.parametrize(
    ("text", "code"),
    [
        ("", "chat_empty"),
        ("   \n\t ", "chat_empty"),
        ("x" * (CHAT_MAX_CHARS + 1), "chat_too_long"),
        (" " + "é" * (CHAT_MAX_CHARS + 1) + " ", "chat_too_long"),
    ],
)
def test_invalid_text_is_refused_to_the_sender_and_posts_nothing(text: str, code: str) -> None:
    _, out = run(room_of_three(), chat("p2", text, request_id="bad"))
    assert not [o for o in out if isinstance(o, ChatMessagePosted)]
    assert [(r.code, r.peer_id) for r in out if isinstance(r, RequestRejected)] == [(code, "p2")]
    errors = notes(out, "error")
    # to the member's own session (from room state), not to the others
    assert [(n.gateway_id, n.session_id, n.message["request_id"]) for n in errors] == [("gw2", "s-p2", "bad")]
    assert not notes(out, "chat")


def test_the_limit_counts_characters_after_stripping() -> None:
    exact = "ü" * CHAT_MAX_CHARS
    _, out = run(room_of_three(), chat("p3", f"  {exact}\n\n"))
    posted = [o for o in out if isinstance(o, ChatMessagePosted)]
    assert [p.text for p in posted] == [exact]
    assert (posted[0].name, posted[0].identity) == ("Carol", "carol")


def test_a_disconnected_member_still_posts_but_hears_nothing() -> None:
    from producers.rtc import ConnectionLost

    state, _ = run(room_of_three(), ConnectionLost.new(room_id="r1", peer_id="p3", session_id="s-p3", occurred_at=T0))
    _, out = run(state, chat("p1", "are you there?"))
    assert len([o for o in out if isinstance(o, ChatMessagePosted)]) == 1
    others = [n for n in notes(out, "chat") if "request_id" not in n.message]
    assert [n.sessions() for n in others] == [["s-p2"]]  # p3's socket is gone


def test_replaying_the_facts_gives_the_same_room() -> None:
    state, outputs = run(
        None,
        join("p1", "alice", "Alice"),
        join("p2", "bob", "Bob"),
        RoomPlaced.new(room_id="r1", node_id="n1"),
        chat("p1", "hi"),
        chat("p2", "hey"),
    )
    facts = [o for o in outputs if not isinstance(o, Notification) and o.type != "PlacementRequested"]
    assert [f.type for f in facts].count("ChatMessagePosted") == 2
    replayed = fold(facts)
    assert state is not None and replayed is not None and replayed.view() == state.view()


def test_chat_text_rule() -> None:
    assert chat_text("  hi \n") == "hi"
    assert chat_text("line one\nline two") == "line one\nline two"
    for bad, code in (("", "chat_empty"), ("\u00a0\u2003", "chat_empty"), ("y" * 2001, "chat_too_long")):
        with pytest.raises(InvalidChatText) as info:
            chat_text(bad)
        assert info.value.code == code
