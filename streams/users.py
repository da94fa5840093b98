"""The users decision: ``handle(state, event, config) -> (state, outputs)``, per user id.

Reads ``session.events`` (keyed by user id): sessions from the gateways, call requests,
call-party updates from the call agent and ticks. Decides
- presence (``PresenceChanged`` on ``presence.facts``): offline without sessions, busy
  while in a connected call, online otherwise. A session without a ping for the
  presence TTL, or lost and not back within the resume grace, expires (``SessionExpired``);
- the call rate limit: at most ``max_call_attempts`` per ``attempt_window_s`` per caller.
  All of a user's attempts land in this user's partition, whichever gateway took them;
- ringing: a ring request reaches every live session of the callee, or is refused
  (``callee_offline``, ``callee_busy``);
- a user who goes offline hangs up the calls in progress.
Pure: time comes from the events and ticks.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from producers.envelope import Event
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
from streams.decision import KeyedDecision, at_of, dispatch
from streams.errors import Rejection
from streams.outputs import Outputs
from streams.user_state import SEEN_LIMIT, UserState, evolve


@dataclass(frozen=True)
class UserConfig:
    presence_ttl_s: float = 90.0
    resume_grace_s: float = 75.0
    max_call_attempts: int = 10
    attempt_window_s: float = 60.0


class UserDecision(KeyedDecision[UserState, UserConfig]):
    seen_limit = SEEN_LIMIT
    state: UserState

    def __init__(self, state: UserState, cause: Event, at: datetime, config: UserConfig) -> None:
        super().__init__(state, cause, f"user:{state.user_id}", at, config)

    def fold(self, state: UserState | None, event: Event) -> UserState | None:
        return evolve(state or self.state, event)

    def notify_user(self, message: dict[str, Any]) -> None:
        """One notification per gateway holding a live session of this user."""
        self.notify_sessions(((i.gateway_id, i.session_id) for i in self.state.live_sessions()), message)

    def reply(self, gateway_id: str | None, session_id: str | None, message: dict[str, Any]) -> None:
        if gateway_id and session_id:
            self.out.add(
                "gateway.notifications", Notification, gateway_id=gateway_id, session_id=session_id, message=message
            )

    def reconcile(self) -> None:
        """Emit ``PresenceChanged`` when the derived status differs from the recorded one;
        a user going offline hangs up its calls."""
        status = self.state.derived_status()
        if status == self.state.status:
            return
        if status == "offline":
            for call_id in sorted(self.state.calls):
                self.out.add(
                    "call.events", CallAnswerRequested, call_id=call_id, user_id=self.state.user_id, answer="hangup"
                )
        self.fact_on("presence.facts", PresenceChanged, user_id=self.state.user_id, status=status, name=self.state.name)


def on_observed(d: UserDecision, event: Event) -> None:
    """A session event from a gateway: fold it, then re-derive presence."""
    d.state = evolve(d.state, event)
    d.reconcile()


def on_call_requested(d: UserDecision, e: CallRequested) -> None:
    window = timedelta(seconds=d.config.attempt_window_s)
    recent = sorted(t for t in d.state.attempts if e.occurred_at - t < window)
    d.state = d.state.model_copy(update={"attempts": recent})
    if len(recent) >= d.config.max_call_attempts:
        retry_after = max(0.0, (recent[0] + window - e.occurred_at).total_seconds())
        d.out.add(
            "call.events", CallRefused, call_id=e.call_id, reason="rate_limited", caller=e.user_id, callee=e.callee
        )
        d.reply(
            e.gateway_id,
            e.reply_session_id,
            {
                "type": "error",
                "code": Rejection.RATE_LIMITED,
                "call_id": e.call_id,
                "message": f"at most {d.config.max_call_attempts} call attempts per "
                f"{d.config.attempt_window_s:g} s; retry in {retry_after:.0f} s",
                "retry_after_s": round(retry_after, 3),
            },
        )
        return
    d.fact_on(
        "call.events",
        CallInviteRequested,
        call_id=e.call_id,
        caller=e.user_id,
        callee=e.callee,
        expires_at=e.expires_at,
        caller_name=e.name or d.state.name,
    )
    d.reply(
        e.gateway_id,
        e.reply_session_id,
        {"type": "call-requested", "call_id": e.call_id, "callee": e.callee, "expires_at": e.expires_at.isoformat()},
    )


def on_party(d: UserDecision, e: NotifyCallParty) -> None:
    if e.state == "ringing" and e.call_id not in d.state.calls:
        live = d.state.live_sessions()
        reason = "callee_offline" if not live else "callee_busy" if "connected" in d.state.calls.values() else None
        if reason is not None:
            d.out.add("call.events", CallRefused, call_id=e.call_id, reason=reason, callee=e.user_id)
            return
        d.out.add("call.events", CallRinging, call_id=e.call_id, callee=e.user_id, sessions=len(live))
    d.state = evolve(d.state, e)
    if e.message:
        d.notify_user(e.message)
    d.reconcile()


def on_tick(d: UserDecision, tick: Tick) -> None:
    ttl = timedelta(seconds=d.config.presence_ttl_s)
    grace = timedelta(seconds=d.config.resume_grace_s)
    for session_id, info in sorted(d.state.sessions.items()):
        if info.lost_at is not None and tick.now - info.lost_at >= grace:
            d.fact_on("presence.facts", SessionExpired, user_id=d.state.user_id, session_id=session_id, reason="grace")
        elif tick.now - info.last_seen >= ttl:
            d.fact_on("presence.facts", SessionExpired, user_id=d.state.user_id, session_id=session_id, reason="ttl")
    d.reconcile()


HANDLERS: dict[type[Event], Callable[[UserDecision, Any], None]] = {
    SessionOpened: on_observed,
    SessionPinged: on_observed,
    SessionClosed: on_observed,
    CallRequested: on_call_requested,
    NotifyCallParty: on_party,
}


def next_deadline(state: UserState | None, config: UserConfig) -> datetime | None:
    """When a tick may next change this user: a session's TTL or resume grace."""
    if state is None:
        return None
    times = [
        info.lost_at + timedelta(seconds=config.resume_grace_s)
        if info.lost_at is not None
        else info.last_seen + timedelta(seconds=config.presence_ttl_s)
        for info in state.sessions.values()
    ]
    return min(times, default=None)


def handle(
    state: UserState | None, event: Event, config: UserConfig, user_id: str | None = None
) -> tuple[UserState | None, Outputs]:
    """Apply one input to one user. Inputs of other types (the facts other agents
    write to ``session.events``) change nothing."""
    user_id = user_id or str(getattr(event, "user_id"))  # noqa: B009
    d = UserDecision(state or UserState(user_id=user_id), event, at_of(event), config)
    if not dispatch(d, event, HANDLERS, on_tick):
        return state, d.out
    if isinstance(event, Tick) and state is None:
        return None, d.out
    return d.state, d.out
