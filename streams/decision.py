"""The building blocks every room decision uses: config, the output collector and
the peer summary clients see. Pure."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from producers.envelope import Event
from producers.rtc import Notification, RequestRejected
from streams.outputs import Outputs
from streams.room_state import PeerState, RoomState, evolve


@dataclass(frozen=True)
class RoomConfig:
    """Policy knobs of the room decision (from streams settings)."""

    disconnect_grace_s: float = 75.0
    command_ttl_s: float = 10.0


class Decision:
    """Collects outputs and keeps ``state`` equal to the fold of the facts so far."""

    def __init__(self, state: RoomState | None, cause: Event, room_id: str, at: datetime, config: RoomConfig) -> None:
        self.state = state
        self.out = Outputs(cause, room_id, at)
        self.room_id = room_id
        self.config = config

    def fact(self, cls: type[Any], **fields: Any) -> Any:
        event = self.out.add("rtc.facts", cls, room_id=self.room_id, **fields)
        self.state = evolve(self.state, event)
        return event

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
        by_gateway: dict[str, list[str]] = {}
        for other in self.state.peers.values():
            if other.peer_id != peer_id and other.state == "joined":
                by_gateway.setdefault(other.gateway_id, []).append(other.session_id)
        for gateway_id, sessions in sorted(by_gateway.items()):
            self.out.add(
                "gateway.notifications",
                Notification,
                gateway_id=gateway_id,
                session_id=sessions[0],
                session_ids=sessions if len(sessions) > 1 else [],
                room_id=self.room_id,
                message=message,
            )

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
