"""P2P rooms: two peers, media browser-to-browser, no media node.

Streams relay the peers' offer, answer and ICE candidates (``PeerSignalRequested``)
after checking that the room is p2p and both peers are in it. Relayed signals are
not facts: they change no state. Pure.
"""

from __future__ import annotations

from typing import Any

from producers.fields import RoomType
from producers.rtc import PeerSignalRequested
from streams.decision import Decision
from streams.errors import Rejection

#: A p2p room holds at most this many peers (``max_participants`` is capped).
P2P_CAPACITY = 2

MESSAGE_TYPES = {"offer": "p2p-offer", "answer": "p2p-answer", "candidate": "ice-candidate"}


def capacity(room_type: RoomType, requested: int) -> int:
    return min(requested, P2P_CAPACITY) if room_type == RoomType.P2P else requested


def on_signal(d: Decision, intent: PeerSignalRequested) -> None:
    sender = d.peer(intent.peer_id)
    if sender is None:
        d.reject(intent, Rejection.NOT_JOINED, f"peer {intent.peer_id} is not in the room", peer_id=intent.peer_id)
        return
    assert d.state is not None
    if d.state.room_type != RoomType.P2P:
        d.reject_to(intent, sender, Rejection.UNSUPPORTED, f"{MESSAGE_TYPES[intent.kind]} is for p2p rooms")
        return
    target = d.peer(intent.to_peer_id)
    if target is None or target.peer_id == sender.peer_id:
        d.reject_to(intent, sender, Rejection.PEER_NOT_FOUND, f"peer {intent.to_peer_id} is not in the room")
        return
    message: dict[str, Any] = {"type": MESSAGE_TYPES[intent.kind], "from": sender.peer_id}
    if intent.kind == "candidate":
        message["candidate"] = intent.candidate
    else:
        message["sdp"] = intent.sdp
    d.notify(target, message)
