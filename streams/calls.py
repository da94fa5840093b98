"""The call decision (the Kurento plan's invite flow): ``handle(state, event, config)``.

Reads ``call.events`` (keyed by call id). An invite that passed the caller's rate limit
(``CallInviteRequested``) becomes ``CallInvited`` and a ring request to the callee's
users agent, which alerts every session of the callee (``CallRinging``) or refuses
(``CallRefused``). The callee accepts or rejects, the caller cancels, either hangs up;
unanswered after ``ring_timeout_s`` (from ticks) the call times out. On accept the
call gets a p2p room that only its two parties may join. Every outcome is a fact;
parties are told through their users agent (``NotifyCallParty``), which knows their
sessions. Pure: no Kafka, no clock.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from producers.envelope import Event
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
from streams.call_state import SEEN_LIMIT, CallState, evolve
from streams.decision import KeyedDecision, at_of, dispatch
from streams.errors import Rejection
from streams.outputs import Outputs


@dataclass(frozen=True)
class CallConfig:
    #: Unanswered for this long: ``CallTimedOut``.
    ring_timeout_s: float = 30.0
    #: A call's p2p room closes after this long without peers.
    room_empty_timeout_s: int = 60
    #: A finished call is forgotten this long after its invite expired (later answers:
    #: ``call_not_found``); until then they get ``call_over`` / ``invite_expired``.
    retention_s: float = 3600.0


def room_for(call_id: str) -> str:
    return f"call-{call_id}"[:64]


class CallDecision(KeyedDecision[CallState, CallConfig]):
    seen_limit = SEEN_LIMIT

    def __init__(self, state: CallState | None, cause: Event, call_id: str, at: datetime, config: CallConfig) -> None:
        super().__init__(state, cause, f"call:{call_id}", at, config)
        self.call_id = call_id

    def fold(self, state: CallState | None, event: Event) -> CallState | None:
        return evolve(state, event)

    def fact(self, cls: type[Any], **fields: Any) -> Any:
        return self.fact_on("call.events", cls, call_id=self.call_id, **fields)

    def tell(self, user_id: str, state: str, message: dict[str, Any]) -> None:
        self.out.add(
            "session.events",
            NotifyCallParty,
            user_id=user_id,
            call_id=self.call_id,
            state=state,
            message={"call_id": self.call_id, **message},
        )

    def tell_both(self, state: str, message: dict[str, Any]) -> None:
        assert self.state is not None
        self.tell(self.state.caller, state, message)
        self.tell(self.state.callee, state, message)

    def error(self, answer: CallAnswerRequested, code: str, message: str) -> None:
        if answer.gateway_id and answer.session_id:
            self.out.add(
                "gateway.notifications",
                Notification,
                gateway_id=answer.gateway_id,
                session_id=answer.session_id,
                message={
                    "type": "error",
                    "code": code,
                    "message": message,
                    "call_id": self.call_id,
                    "request_id": answer.correlation_id,
                },
            )


def on_invite(d: CallDecision, e: CallInviteRequested) -> None:
    if d.state is not None:
        return  # the same call id again
    ring_until = e.occurred_at + timedelta(seconds=d.config.ring_timeout_s)
    d.fact(
        CallInvited,
        caller=e.caller,
        callee=e.callee,
        caller_name=e.caller_name,
        expires_at=e.expires_at,
        ring_until=ring_until,
    )
    d.tell(
        e.callee,
        "ringing",
        {
            "type": "call-incoming",
            "caller": e.caller,
            "caller_name": e.caller_name,
            "expires_at": e.expires_at.isoformat(),
            "ring_until": ring_until.isoformat(),
        },
    )


def on_ringing(d: CallDecision, e: CallRinging) -> None:
    if d.state is None or d.state.status != "inviting":
        return
    call = d.state
    d.state = evolve(call, e)
    d.tell(call.caller, "calling", {"type": "call-ringing", "callee": call.callee, "sessions": e.sessions})


def on_refused(d: CallDecision, e: CallRefused) -> None:
    if d.state is None or not d.state.unanswered:
        return  # a rate-limited attempt never became a call
    call = d.state
    d.state = evolve(call, e)
    d.tell(call.caller, "over", {"type": "call-refused", "reason": e.reason, "callee": call.callee})


def accept(d: CallDecision, e: CallAnswerRequested) -> None:
    call = d.state
    assert call is not None
    room_id = room_for(d.call_id)
    d.out.add(
        "rtc.intents",
        CreateRoomRequested,
        room_id=room_id,
        room_type=RoomType.P2P,
        max_participants=2,
        empty_timeout_s=d.config.room_empty_timeout_s,
        creator=call.caller,
        metadata={"call_id": d.call_id},
        allowed_identities=[call.caller, call.callee],
    )
    d.fact(CallAccepted, room_id=room_id, by=e.user_id)
    message = {"type": "call-accepted", "room": room_id, "caller": call.caller, "callee": call.callee}
    d.tell(call.caller, "connected", message)
    d.tell(call.callee, "connected", {**message, "answered_session_id": e.session_id})


def finish(d: CallDecision, e: CallAnswerRequested) -> None:
    """Reject, cancel or hang up, by whoever may."""
    call = d.state
    assert call is not None
    by = e.user_id
    if call.status == "connected":
        d.fact(CallEnded, by=by, reason="hangup")
        if call.room_id is not None:
            d.out.add("rtc.intents", DeleteRoomRequested, room_id=call.room_id, requested_by=by)
        d.tell_both("over", {"type": "call-ended", "by": by, "reason": "hangup"})
    elif by == call.callee:
        d.fact(CallRejected, by=by)
        d.tell_both("over", {"type": "call-rejected", "by": by})
    else:
        d.fact(CallCancelled)
        d.tell_both("over", {"type": "call-cancelled", "by": by})


#: Who may give each answer, and in which call states.
ALLOWED: dict[str, tuple[str, tuple[str, ...]]] = {
    "accept": ("callee", ("inviting", "ringing")),
    "reject": ("callee", ("inviting", "ringing")),
    "cancel": ("caller", ("inviting", "ringing")),
    "hangup": ("either", ("inviting", "ringing", "connected")),
}


def on_answer(d: CallDecision, e: CallAnswerRequested) -> None:
    state = d.state
    if state is None:
        d.error(e, Rejection.CALL_NOT_FOUND, f"no call {d.call_id}")
        return
    party, statuses = ALLOWED[e.answer]
    allowed = {"caller": [state.caller], "callee": [state.callee], "either": [state.caller, state.callee]}
    if e.user_id not in allowed[party]:
        d.error(e, Rejection.FORBIDDEN, f"only the {party} may {e.answer} this call")
        return
    if e.answer != "hangup" and e.occurred_at >= state.expires_at:
        d.error(e, Rejection.INVITE_EXPIRED, f"the invite {d.call_id} expired at {state.expires_at.isoformat()}")
        return
    if state.status not in statuses:
        if e.answer != "hangup":  # hanging up a call that is over is a no-op
            d.error(e, Rejection.CALL_OVER, f"the call is {state.status.replace('_', ' ')}")
        return
    (accept if e.answer == "accept" else finish)(d, e)


def on_tick(d: CallDecision, tick: Tick) -> None:
    if d.state is not None and d.state.unanswered and tick.now >= d.state.ring_until:
        d.fact(CallTimedOut)
        d.tell_both("over", {"type": "call-timed-out"})
    elif d.state is not None and d.state.status != "connected" and not d.state.unanswered:
        if tick.now >= forget_at(d.state, d.config):
            d.state = None  # the call is over and its invite long expired


HANDLERS: dict[type[Event], Callable[[CallDecision, Any], None]] = {
    CallInviteRequested: on_invite,
    CallRinging: on_ringing,
    CallRefused: on_refused,
    CallAnswerRequested: on_answer,
}


def forget_at(state: CallState, config: CallConfig) -> datetime:
    return max(state.expires_at, state.ended_at or state.expires_at) + timedelta(seconds=config.retention_s)


def next_deadline(state: CallState | None, config: CallConfig) -> datetime | None:
    """Unanswered: when it times out; over: when it is forgotten; connected: none."""
    if state is None or state.status == "connected":
        return None
    return state.ring_until if state.unanswered else forget_at(state, config)


def handle(
    state: CallState | None, event: Event, config: CallConfig, call_id: str | None = None
) -> tuple[CallState | None, Outputs]:
    """Apply one input to one call. The agent's own facts read back change nothing."""
    call_id = call_id or str(getattr(event, "call_id"))  # noqa: B009
    d = CallDecision(state, event, call_id, at_of(event), config)
    if not dispatch(d, event, HANDLERS, on_tick):
        return state, d.out
    return d.state, d.out
