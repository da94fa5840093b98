"""User state and ``evolve``: a user's sessions, presence, calls and call attempts.

The users agent folds the session events the gateways write (``SessionOpened``,
``SessionPinged``, ``SessionClosed``) and its own decisions (``PresenceChanged``,
``SessionExpired``, the ``CallInviteRequested`` it let through, the call agent's
``NotifyCallParty``) with this one function, so the state is the fold of the log.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from producers.envelope import Event
from producers.sessions import (
    CallInviteRequested,
    NotifyCallParty,
    PresenceChanged,
    SessionClosed,
    SessionExpired,
    SessionOpened,
    SessionPinged,
)

Status = Literal["online", "busy", "offline"]

#: Recent input ids a user remembers for deduplication.
SEEN_LIMIT = 128


class SessionInfo(BaseModel):
    model_config = ConfigDict(extra="ignore")

    session_id: str
    gateway_id: str
    last_seen: datetime
    #: Set when the socket dropped; the session is kept for the resume grace period.
    lost_at: datetime | None = None


class UserState(BaseModel):
    model_config = ConfigDict(extra="ignore")

    user_id: str
    name: str = ""
    status: Status = "offline"
    sessions: dict[str, SessionInfo] = Field(default_factory=dict)
    #: Calls in progress: call id -> ``calling`` | ``ringing`` | ``connected``.
    calls: dict[str, str] = Field(default_factory=dict)
    #: When the call attempts that passed the rate limit were made (pruned to the window).
    attempts: list[datetime] = Field(default_factory=list)
    seen: list[str] = Field(default_factory=list)

    def live_sessions(self) -> list[SessionInfo]:
        """Sessions whose socket is open (not lost), in a stable order."""
        return [s for _, s in sorted(self.sessions.items()) if s.lost_at is None]

    def derived_status(self) -> Status:
        if not self.sessions:
            return "offline"
        return "busy" if "connected" in self.calls.values() else "online"


def _opened(state: UserState, e: SessionOpened) -> UserState:
    info = SessionInfo(session_id=e.session_id, gateway_id=e.gateway_id, last_seen=e.occurred_at)
    return state.model_copy(update={"sessions": {**state.sessions, e.session_id: info}, "name": e.name or state.name})


def _pinged(state: UserState, e: SessionPinged) -> UserState:
    info = state.sessions.get(e.session_id)
    if info is None:
        if e.gateway_id is None:
            return state
        info = SessionInfo(session_id=e.session_id, gateway_id=e.gateway_id, last_seen=e.occurred_at)
    info = info.model_copy(update={"last_seen": max(info.last_seen, e.occurred_at)})
    return state.model_copy(update={"sessions": {**state.sessions, e.session_id: info}})


def _closed(state: UserState, e: SessionClosed) -> UserState:
    info = state.sessions.get(e.session_id)
    if info is None:
        return state
    if e.reason == "lost":
        lost = info.model_copy(update={"lost_at": e.occurred_at})
        return state.model_copy(update={"sessions": {**state.sessions, e.session_id: lost}})
    return _without_session(state, e.session_id)


def _without_session(state: UserState, session_id: str) -> UserState:
    return state.model_copy(update={"sessions": {k: v for k, v in state.sessions.items() if k != session_id}})


def _expired(state: UserState, e: SessionExpired) -> UserState:
    return _without_session(state, e.session_id)


def _presence(state: UserState, e: PresenceChanged) -> UserState:
    return state.model_copy(update={"status": e.status})


def _invited(state: UserState, e: CallInviteRequested) -> UserState:
    return state.model_copy(
        update={"attempts": [*state.attempts, e.occurred_at], "calls": {**state.calls, e.call_id: "calling"}}
    )


def _party(state: UserState, e: NotifyCallParty) -> UserState:
    calls = {k: v for k, v in state.calls.items() if k != e.call_id}
    if e.state != "over":
        calls[e.call_id] = e.state
    return state.model_copy(update={"calls": calls})


EVOLVERS: dict[type[Event], Callable[[Any, Any], UserState]] = {
    SessionOpened: _opened,
    SessionPinged: _pinged,
    SessionClosed: _closed,
    SessionExpired: _expired,
    PresenceChanged: _presence,
    CallInviteRequested: _invited,
    NotifyCallParty: _party,
}


def evolve(state: UserState, event: Event) -> UserState:
    handler = EVOLVERS.get(type(event))
    return state if handler is None else handler(state, event)
