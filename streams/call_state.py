"""Call state and ``evolve``: the fold of one call's facts (topic ``call.events``)."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from producers.envelope import Event
from producers.sessions import (
    CallAccepted,
    CallCancelled,
    CallEnded,
    CallInvited,
    CallRefused,
    CallRejected,
    CallRinging,
    CallTimedOut,
)

CallStatus = Literal["inviting", "ringing", "connected", "rejected", "cancelled", "timed_out", "ended", "refused"]

#: Calls not yet answered; a tick may time them out.
UNANSWERED = ("inviting", "ringing")
SEEN_LIMIT = 64


class CallState(BaseModel):
    model_config = ConfigDict(extra="ignore")

    call_id: str
    caller: str
    callee: str
    caller_name: str = ""
    status: CallStatus = "inviting"
    invited_at: datetime
    #: The invite id is valid until then: answering it later is ``invite_expired``.
    expires_at: datetime
    #: Unanswered until then: a tick at or after it times the call out.
    ring_until: datetime
    room_id: str | None = None
    ended_at: datetime | None = None
    seen: list[str] = Field(default_factory=list)

    @property
    def unanswered(self) -> bool:
        return self.status in UNANSWERED

    def other(self, user_id: str) -> str:
        return self.callee if user_id == self.caller else self.caller

    def view(self) -> dict[str, Any]:
        return self.model_dump(mode="json", exclude={"seen"})


def _invited(state: CallState | None, f: CallInvited) -> CallState:
    return CallState(
        call_id=f.call_id,
        caller=f.caller,
        callee=f.callee,
        caller_name=f.caller_name,
        invited_at=f.occurred_at,
        expires_at=f.expires_at,
        ring_until=f.ring_until,
        seen=state.seen if state else [],
    )


def _ringing(state: CallState, _: CallRinging) -> CallState:
    return state.model_copy(update={"status": "ringing"}) if state.status == "inviting" else state


def _accepted(state: CallState, f: CallAccepted) -> CallState:
    return state.model_copy(update={"status": "connected", "room_id": f.room_id})


def _ended(status: CallStatus) -> Callable[[CallState, Event], CallState]:
    def apply(state: CallState, f: Event) -> CallState:
        return state.model_copy(update={"status": status, "ended_at": f.occurred_at})

    return apply


EVOLVERS: dict[type[Event], Callable[[Any, Any], CallState]] = {
    CallRinging: _ringing,
    CallAccepted: _accepted,
    CallRejected: _ended("rejected"),
    CallCancelled: _ended("cancelled"),
    CallTimedOut: _ended("timed_out"),
    CallEnded: _ended("ended"),
    CallRefused: _ended("refused"),
}


def evolve(state: CallState | None, fact: Event) -> CallState | None:
    if isinstance(fact, CallInvited):
        return _invited(state, fact)
    handler = EVOLVERS.get(type(fact))
    return state if handler is None or state is None else handler(state, fact)
