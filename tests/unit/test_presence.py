"""The users decision with plain data: sessions, presence, TTL, resume grace, the call
rate limit and ringing."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from producers.rtc import Notification, Tick
from producers.sessions import (
    CallAnswerRequested,
    CallInviteRequested,
    CallRefused,
    CallRequested,
    CallRinging,
    NotifyCallParty,
    PresenceChanged,
    SessionClosed,
    SessionExpired,
    SessionOpened,
    SessionPinged,
)
from streams.user_state import UserState
from streams.users import UserConfig, handle, next_deadline

T0 = datetime(2026, 1, 1, tzinfo=UTC)
CFG = UserConfig(presence_ttl_s=90, resume_grace_s=30, max_call_attempts=10, attempt_window_s=60)


def at(s: float) -> datetime:
    return T0 + timedelta(seconds=s)


def opened(session: str, t: float = 0, user: str = "alice", gateway: str = "gw1") -> SessionOpened:
    return SessionOpened.new(user_id=user, session_id=session, gateway_id=gateway, name="Alice", occurred_at=at(t))


def tick(t: float) -> Tick:
    return Tick.new(now=at(t), occurred_at=at(t))


def run(state: UserState | None, *events: Any, user: str = "alice") -> tuple[UserState | None, list[Any]]:
    out: list[Any] = []
    for event in events:
        state, o = handle(state, event, CFG, user_id=user)
        out += [i.event for i in o.items]
    return state, out


def presence(out: list[Any]) -> list[str]:
    return [e.status for e in out if isinstance(e, PresenceChanged)]


def test_online_with_a_session_offline_when_it_closes() -> None:
    state, out = run(None, opened("s1"))
    assert presence(out) == ["online"] and out[0].name == "Alice"
    state, out = run(state, opened("s2", 1))
    assert presence(out) == []  # still online: no change, no fact
    state, out = run(state, SessionClosed.new(user_id="alice", session_id="s1", reason="closed", occurred_at=at(2)))
    assert presence(out) == []
    state, out = run(state, SessionClosed.new(user_id="alice", session_id="s2", reason="closed", occurred_at=at(3)))
    assert presence(out) == ["offline"] and state is not None and state.sessions == {}


def test_ttl_expires_a_silent_session() -> None:
    state, _ = run(None, opened("s1"), SessionPinged.new(user_id="alice", session_id="s1", occurred_at=at(60)))
    assert next_deadline(state, CFG) == at(150)
    state, out = run(state, tick(149))
    assert out == []
    state, out = run(state, tick(150))
    expired = [e for e in out if isinstance(e, SessionExpired)]
    assert [(e.session_id, e.reason) for e in expired] == [("s1", "ttl")] and presence(out) == ["offline"]
    # a ping from a session streams expired (socket still open) brings it back
    state, out = run(state, SessionPinged.new(user_id="alice", session_id="s1", gateway_id="gw1", occurred_at=at(151)))
    assert presence(out) == ["online"]


def test_a_lost_session_is_kept_for_the_resume_grace() -> None:
    state, _ = run(None, opened("s1"))
    state, out = run(state, SessionClosed.new(user_id="alice", session_id="s1", reason="lost", occurred_at=at(10)))
    assert presence(out) == [] and next_deadline(state, CFG) == at(40)
    # back within 30 s on another gateway: never offline
    state, out = run(state, opened("s2", 25, gateway="gw2"), tick(41))
    assert presence(out) == [] and state is not None and list(state.sessions) == ["s2"]
    assert [e.reason for e in out if isinstance(e, SessionExpired)] == ["grace"]


def test_not_back_within_the_grace_goes_offline_and_hangs_up_calls() -> None:
    state, _ = run(
        None, opened("s1"), NotifyCallParty.new(user_id="alice", call_id="c1", state="connected", occurred_at=at(1))
    )
    assert state is not None and state.status == "busy"
    state, out = run(
        state, SessionClosed.new(user_id="alice", session_id="s1", reason="lost", occurred_at=at(5)), tick(35)
    )
    assert presence(out) == ["offline"]
    hangups = [e for e in out if isinstance(e, CallAnswerRequested)]
    assert [(e.call_id, e.answer, e.user_id) for e in hangups] == [("c1", "hangup", "alice")]


def request(call: str, t: float, gateway: str = "gw1") -> CallRequested:
    return CallRequested.new(
        user_id="alice",
        call_id=call,
        callee="bob",
        expires_at=at(t + 60),
        occurred_at=at(t),
        gateway_id=gateway,
        reply_session_id=f"R{call}",
    )


def test_rate_limit_is_ten_attempts_per_minute_across_gateways() -> None:
    state: UserState | None = None
    for i in range(10):
        state, out = run(state, request(f"c{i}", i, gateway=f"gw{i % 2}"))
        assert [type(e).__name__ for e in out] == ["CallInviteRequested", "Notification"]
        assert out[1].message["type"] == "call-requested" and out[1].gateway_id == f"gw{i % 2}"
    state, out = run(state, request("c10", 30))
    refused = [e for e in out if isinstance(e, CallRefused)]
    assert [(e.call_id, e.reason) for e in refused] == [("c10", "rate_limited")]
    reply = next(e for e in out if isinstance(e, Notification))
    assert reply.session_id == "Rc10" and reply.message["code"] == "rate_limited"
    assert reply.message["retry_after_s"] == 30  # the first attempt (t=0) leaves the window at t=60
    assert not [e for e in out if isinstance(e, CallInviteRequested)]
    # a minute after the first attempt, one more is allowed
    state, out = run(state, request("c11", 60))
    assert [e.call_id for e in out if isinstance(e, CallInviteRequested)] == ["c11"]


def test_a_redelivered_request_counts_once() -> None:
    first = request("c0", 0)
    state, _ = run(None, first)
    state, out = run(state, first)
    assert out == [] and state is not None and len(state.attempts) == 1


def test_ring_reaches_every_live_session_or_is_refused() -> None:
    ring = NotifyCallParty.new(
        user_id="bob",
        call_id="c1",
        state="ringing",
        occurred_at=at(1),
        message={"type": "call-incoming", "call_id": "c1"},
    )
    _, out = run(None, ring, user="bob")
    assert [(type(e).__name__, e.reason) for e in out if isinstance(e, CallRefused)] == [
        ("CallRefused", "callee_offline")
    ]
    state, _ = run(
        None,
        opened("b1", user="bob", gateway="gw1"),
        opened("b2", user="bob", gateway="gw2"),
        opened("b3", user="bob", gateway="gw1"),
        user="bob",
    )
    state, out = run(state, ring, user="bob")
    ringing = [e for e in out if isinstance(e, CallRinging)]
    assert [e.sessions for e in ringing] == [3]
    notes = {(n.gateway_id, tuple(n.sessions())) for n in out if isinstance(n, Notification)}
    assert notes == {("gw1", ("b1", "b3")), ("gw2", ("b2",))}
    # busy in a connected call: a second ring is refused
    state, _ = run(
        state, NotifyCallParty.new(user_id="bob", call_id="c1", state="connected", occurred_at=at(2)), user="bob"
    )
    assert state is not None and state.status == "busy"
    _, out = run(
        state, NotifyCallParty.new(user_id="bob", call_id="c2", state="ringing", occurred_at=at(3)), user="bob"
    )
    assert [e.reason for e in out if isinstance(e, CallRefused)] == ["callee_busy"]


def test_outputs_are_deterministic() -> None:
    cause = opened("s1")
    _, first = run(None, cause)
    _, again = run(None, cause)
    assert first and [e.model_dump() for e in first] == [e.model_dump() for e in again]
