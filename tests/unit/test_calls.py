"""The call decision with plain data: invite, ring, accept into a p2p room, reject,
cancel, hang up, the 30 s timeout from ticks and the 60 s invite expiry."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from producers.fields import RoomType
from producers.rtc import CreateRoomRequested, DeleteRoomRequested, Notification, Tick
from producers.sessions import (
    CallAccepted,
    CallAnswerRequested,
    CallCancelled,
    CallEnded,
    CallInvited,
    CallInviteRequested,
    CallRefused,
    CallRejected,
    CallRinging,
    CallTimedOut,
    NotifyCallParty,
)
from streams.call_state import CallState, evolve
from streams.calls import CallConfig, handle, next_deadline

T0 = datetime(2026, 1, 1, tzinfo=UTC)
CFG = CallConfig()  # the contract: 30 s


def at(s: float) -> datetime:
    return T0 + timedelta(seconds=s)


def run(state: CallState | None, *events: Any) -> tuple[CallState | None, list[Any]]:
    out: list[Any] = []
    for event in events:
        state, o = handle(state, event, CFG, call_id="c1")
        out += [i.event for i in o.items]
    return state, out


def invite() -> CallInviteRequested:
    return CallInviteRequested.new(
        call_id="c1", caller="alice", callee="bob", expires_at=at(60), caller_name="Alice", occurred_at=at(0)
    )


def answer(user: str, kind: str, t: float = 5) -> CallAnswerRequested:
    return CallAnswerRequested.new(
        call_id="c1",
        user_id=user,
        answer=kind,
        gateway_id="gw1",
        session_id=f"s-{user}",
        occurred_at=at(t),
        correlation_id=f"req-{kind}",
    )


def told(out: list[Any]) -> list[tuple[str, str, str]]:
    return [(e.user_id, e.state, e.message["type"]) for e in out if isinstance(e, NotifyCallParty)]


def errors(out: list[Any]) -> list[str]:
    return [e.message["code"] for e in out if isinstance(e, Notification) and e.message["type"] == "error"]


def ringing() -> CallState:
    state, out = run(None, invite(), CallRinging.new(call_id="c1", callee="bob", sessions=2, occurred_at=at(0.1)))
    assert state is not None and state.status == "ringing"
    return state


def test_invite_rings_the_callee_and_tells_the_caller() -> None:
    state, out = run(None, invite())
    invited = [e for e in out if isinstance(e, CallInvited)]
    assert len(invited) == 1 and invited[0].ring_until == at(30) and invited[0].expires_at == at(60)
    assert told(out) == [("bob", "ringing", "call-incoming")]
    assert next_deadline(state, CFG) == at(30)
    state, out = run(state, CallRinging.new(call_id="c1", callee="bob", sessions=2, occurred_at=at(0.1)))
    assert told(out) == [("alice", "calling", "call-ringing")]
    # the same invite again changes nothing
    _, out = run(state, invite())
    assert out == []


def test_accept_creates_a_private_p2p_room_for_both() -> None:
    state, out = run(ringing(), answer("bob", "accept"))
    rooms = [e for e in out if isinstance(e, CreateRoomRequested)]
    assert len(rooms) == 1 and rooms[0].room_id == "call-c1" and rooms[0].room_type == RoomType.P2P
    assert rooms[0].max_participants == 2 and rooms[0].allowed_identities == ["alice", "bob"]
    accepted = [e for e in out if isinstance(e, CallAccepted)]
    assert [(e.room_id, e.by) for e in accepted] == [("call-c1", "bob")]
    assert told(out) == [("alice", "connected", "call-accepted"), ("bob", "connected", "call-accepted")]
    to_bob = [e for e in out if isinstance(e, NotifyCallParty) and e.user_id == "bob"][0]
    assert to_bob.message["answered_session_id"] == "s-bob" and to_bob.message["room"] == "call-c1"
    assert state is not None and state.status == "connected" and next_deadline(state, CFG) is None
    # no timeout once connected
    _, out = run(state, Tick.new(now=at(31), occurred_at=at(31)))
    assert out == []
    # hang-up ends it for both and closes the room, at any time
    state, out = run(state, answer("alice", "hangup", t=300))
    assert [(e.by, e.reason) for e in out if isinstance(e, CallEnded)] == [("alice", "hangup")]
    assert [e.room_id for e in out if isinstance(e, DeleteRoomRequested)] == ["call-c1"]
    assert told(out) == [("alice", "over", "call-ended"), ("bob", "over", "call-ended")]
    # a second hang-up is a no-op
    _, out = run(state, answer("bob", "hangup", t=301))
    assert out == []


def test_reject_and_cancel() -> None:
    _, out = run(ringing(), answer("bob", "reject"))
    assert [e.by for e in out if isinstance(e, CallRejected)] == ["bob"]
    assert told(out) == [("alice", "over", "call-rejected"), ("bob", "over", "call-rejected")]
    state, out = run(ringing(), answer("alice", "cancel"))
    assert len([e for e in out if isinstance(e, CallCancelled)]) == 1
    assert told(out) == [("alice", "over", "call-cancelled"), ("bob", "over", "call-cancelled")]
    # answering a cancelled call: a clear error to the answering session only
    _, out = run(state, answer("bob", "accept", t=6))
    assert errors(out) == ["call_over"] and [e.session_id for e in out] == ["s-bob"]


def test_only_the_right_party_may_answer() -> None:
    state = ringing()
    _, out = run(state, answer("alice", "accept"))
    assert errors(out) == ["forbidden"]
    _, out = run(state, answer("mallory", "hangup"))
    assert errors(out) == ["forbidden"]
    _, out = run(state, answer("bob", "cancel"))
    assert errors(out) == ["forbidden"]
    _, out = run(None, answer("bob", "accept"))
    assert errors(out) == ["call_not_found"]


def test_unanswered_times_out_after_30_s_of_ticks() -> None:
    state = ringing()
    _, out = run(state, Tick.new(now=at(29.9), occurred_at=at(29.9)))
    assert out == []
    state, out = run(state, Tick.new(now=at(30), occurred_at=at(30)))
    assert len([e for e in out if isinstance(e, CallTimedOut)]) == 1
    assert told(out) == [("alice", "over", "call-timed-out"), ("bob", "over", "call-timed-out")]
    # before the invite expires: the call is over; after 60 s: the invite expired
    _, out = run(state, answer("bob", "accept", t=45))
    assert errors(out) == ["call_over"]
    _, out = run(state, answer("bob", "accept", t=60))
    assert errors(out) == ["invite_expired"]


def test_a_finished_call_is_forgotten_after_its_retention() -> None:
    state, _ = run(ringing(), answer("bob", "reject"))
    assert state is not None and next_deadline(state, CFG) == at(60 + 3600)
    state, out = run(state, Tick.new(now=at(3659), occurred_at=at(3659)))
    assert state is not None and out == []
    state, out = run(state, Tick.new(now=at(3660), occurred_at=at(3660)))
    assert state is None and out == []
    _, out = run(state, answer("bob", "accept", t=3661))
    assert errors(out) == ["call_not_found"]


def test_refused_by_the_callee_side() -> None:
    state, out = run(
        None, invite(), CallRefused.new(call_id="c1", reason="callee_offline", callee="bob", occurred_at=at(0.1))
    )
    assert state is not None and state.status == "refused"
    assert told(out)[-1] == ("alice", "over", "call-refused")
    # a rate-limited attempt never became a call: nothing to do
    state, out = run(None, CallRefused.new(call_id="c1", reason="rate_limited", caller="alice", occurred_at=at(0)))
    assert state is None and out == []


def test_state_is_the_fold_of_the_facts() -> None:
    rang = CallRinging.new(call_id="c1", callee="bob", occurred_at=at(0.1))
    log: list[Any] = []  # call.events as the log has it: the agent's facts and the ringing
    state: CallState | None = None
    for event in (invite(), rang, answer("bob", "accept"), answer("bob", "hangup", t=9)):
        state, out = run(state, event)
        log += [rang] if event is rang else [e for e in out if e.type.startswith("Call")]
    folded: CallState | None = None
    for fact in log:
        folded = evolve(folded, fact)
    assert state is not None and folded is not None and folded.view() == state.view()
    assert state.status == "ended" and state.room_id == "call-c1"
