"""The one decision shape every stateful agent uses, and the room decision's collector.

``KeyedDecision`` is the generic part: the state of one key, the outputs numbered from the
cause (``Outputs``), the policy config; ``fact_on`` emits a fact and folds it into the state
(so the state is the fold of the facts by construction); ``notify_sessions`` fans one
message out as one notification per gateway. ``dispatch`` is the one dedupe wrapper: a
``Tick`` goes to the tick handler, an input already seen is skipped, any other goes to its
handler from a ``HANDLERS`` table and its event id is remembered (the last ``seen_limit``).
Rooms (``Decision`` below), users (``streams/users.py``), calls (``streams/calls.py``)
and recordings (``streams/recordings.py``) subclass it. Pure.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, ClassVar, Generic, Protocol, TypeVar

from producers.envelope import Event
from producers.rtc import Notification, RequestRejected, Tick
from streams.outputs import Outputs
from streams.room_state import SEEN_LIMIT, PeerState, RoomState, evolve


class Remembers(Protocol):
    """A state that remembers the ids of the inputs it handled."""

    @property
    def seen(self) -> list[str]: ...

    def model_copy(self, *, update: Mapping[str, Any] | None = None, deep: bool = False) -> Any: ...


S = TypeVar("S", bound=Remembers)
C = TypeVar("C")
D = TypeVar("D", bound="KeyedDecision[Any, Any]")


class KeyedDecision(Generic[S, C]):
    """Collects one input's outputs for one key and keeps ``state`` equal to the fold of
    the facts so far. Subclasses set ``fold`` (their ``evolve``) and ``seen_limit``."""

    seen_limit: ClassVar[int] = 256

    def __init__(self, state: S | None, cause: Event, scope: str, at: datetime, config: C) -> None:
        self.state = state
        self.out = Outputs(cause, scope, at)
        self.config = config

    def fold(self, state: S | None, event: Event) -> S | None:
        return state

    def fact_on(self, topic: str, cls: type[Any], **fields: Any) -> Any:
        event = self.out.add(topic, cls, **fields)
        self.state = self.fold(self.state, event)
        return event

    def notify_sessions(self, sessions: Iterable[tuple[str, str]], message: dict[str, Any], **fields: Any) -> None:
        """One notification per gateway for the ``(gateway_id, session_id)`` pairs."""
        by_gateway: dict[str, list[str]] = {}
        for gateway_id, session_id in sessions:
            by_gateway.setdefault(gateway_id, []).append(session_id)
        for gateway_id, ids in sorted(by_gateway.items()):
            self.out.add(
                "gateway.notifications",
                Notification,
                gateway_id=gateway_id,
                session_id=ids[0],
                session_ids=ids if len(ids) > 1 else [],
                message=message,
                **fields,
            )


def at_of(event: Event) -> datetime:
    """The time a decision takes for its outputs: the tick's ``now`` or the input's time."""
    return event.now if isinstance(event, Tick) else event.occurred_at


def dispatch(
    d: D,
    event: Event,
    handlers: Mapping[type[Event], Callable[[D, Any], None]],
    on_tick: Callable[[D, Tick], None] | None = None,
    unhandled: Callable[[D, Any], None] | None = None,
) -> bool:
    """Run the handler for ``event`` once per event id. Returns False when nothing handled
    it (a repeat, or a type with no handler and no ``unhandled``); a tick returns True."""
    if isinstance(event, Tick):
        if on_tick is not None:
            on_tick(d, event)
        return True
    event_id = str(event.event_id)
    if d.state is not None and event_id in d.state.seen:
        return False
    handler = handlers.get(type(event), unhandled)
    if handler is None:
        return False
    handler(d, event)
    if d.state is not None:
        seen = [*d.state.seen[-(d.seen_limit - 1) :], event_id]
        d.state = d.state.model_copy(update={"seen": seen})
    return True


@dataclass(frozen=True)
class RoomConfig:
    """Policy knobs of the room decision (from streams settings)."""

    disconnect_grace_s: float = 75.0
    command_ttl_s: float = 10.0


class Decision(KeyedDecision[RoomState, RoomConfig]):
    """The room decision's collector: facts on ``rtc.facts``, notifications, node commands."""

    seen_limit = SEEN_LIMIT

    def __init__(self, state: RoomState | None, cause: Event, room_id: str, at: datetime, config: RoomConfig) -> None:
        super().__init__(state, cause, room_id, at, config)
        self.room_id = room_id

    def fold(self, state: RoomState | None, event: Event) -> RoomState | None:
        return evolve(state, event)

    def fact(self, cls: type[Any], **fields: Any) -> Any:
        return self.fact_on("rtc.facts", cls, room_id=self.room_id, **fields)

    def notify(self, peer: PeerState, message: dict[str, Any]) -> None:
        self.out.add(
            "gateway.notifications",
            Notification,
            gateway_id=peer.gateway_id,
            session_id=peer.session_id,
            room_id=self.room_id,
            peer_id=peer.peer_id,
            message=message,
        )

    def notify_others(self, peer_id: str, message: dict[str, Any]) -> None:
        """One notification per gateway, listing the sessions of every other joined peer."""
        assert self.state is not None
        others = [
            (p.gateway_id, p.session_id)
            for p in self.state.peers.values()
            if p.peer_id != peer_id and p.state == "joined"
        ]
        self.notify_sessions(others, message, room_id=self.room_id)

    def command(self, cls: type[Any], **fields: Any) -> None:
        if self.state is None or self.state.node_id is None:
            return
        deadline = self.out.at + timedelta(seconds=self.config.command_ttl_s)
        self.out.add(
            "media.commands", cls, node_id=self.state.node_id, room_id=self.room_id, deadline=deadline, **fields
        )

    def reject_to(self, intent: Event, peer: PeerState, code: str, message: str) -> None:
        """Reject an intent of a peer in the room and tell that peer."""
        self.reject(intent, code, message, peer_id=peer.peer_id, gateway_id=peer.gateway_id, session_id=peer.session_id)

    def keep_offer(self, peer_id: str, offer: dict[str, Any] | None) -> None:
        """Remember (or forget: ``None``) the peer's unanswered subscriber offer; bookkeeping
        outside the fold of facts, like the dedupe ids."""
        peer = self.peer(peer_id)
        if self.state is not None and peer is not None and peer.offer != offer:
            peers = {**self.state.peers, peer_id: peer.model_copy(update={"offer": offer})}
            self.state = self.state.model_copy(update={"peers": peers})

    def peer(self, peer_id: str) -> PeerState | None:
        return self.state.peers.get(peer_id) if self.state is not None else None

    def reject(
        self,
        intent: Event,
        code: str,
        message: str,
        *,
        peer_id: str | None = None,
        gateway_id: str | None = None,
        session_id: str | None = None,
    ) -> None:
        self.out.add(
            "rtc.facts",
            RequestRejected,
            room_id=self.room_id,
            peer_id=peer_id,
            request_type=intent.type,
            code=code,
            message=message,
        )
        if gateway_id and session_id:
            self.out.add(
                "gateway.notifications",
                Notification,
                gateway_id=gateway_id,
                session_id=session_id,
                room_id=self.room_id,
                peer_id=peer_id,
                message={"type": "error", "code": code, "message": message, "request_id": intent.correlation_id},
            )


def track_summary(peer: PeerState) -> list[dict[str, Any]]:
    return [{"source_id": t.source_id, "kind": t.kind.value, "layer": t.layer} for t in peer.tracks.values()]


def peer_summary(peer: PeerState) -> dict[str, Any]:
    return {
        "peer_id": peer.peer_id,
        "identity": peer.identity,
        "name": peer.name,
        "audio_muted": peer.audio_muted,
        "video_muted": peer.video_muted,
        "tracks": track_summary(peer),
    }
