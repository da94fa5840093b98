"""Why streams refuse an intent: the ``code`` of a ``RequestRejected`` fact and of the
``error`` the requester gets (docs/events.md, docs/protocol.md)."""

from __future__ import annotations

from enum import StrEnum


class Rejection(StrEnum):
    ROOM_EXISTS = "room_exists"
    ROOM_NOT_FOUND = "room_not_found"
    ROOM_FULL = "room_full"
    FORBIDDEN = "forbidden"
    NOT_JOINED = "not_joined"
    PEER_NOT_FOUND = "peer_not_found"
    SOURCE_NOT_FOUND = "source_not_found"
    PUBLISHER_EXISTS = "publisher_exists"
    UNSUPPORTED = "unsupported"
    UNAVAILABLE = "unavailable"
    CHAT_EMPTY = "chat_empty"
    CHAT_TOO_LONG = "chat_too_long"
    CALL_NOT_FOUND = "call_not_found"
    CALL_OVER = "call_over"
    INVITE_EXPIRED = "invite_expired"
    RATE_LIMITED = "rate_limited"
    RECORDING_ACTIVE = "recording_active"
    RECORDING_NOT_FOUND = "recording_not_found"
    RECORDING_NOT_COMPLETED = "recording_not_completed"
