"""Errors of the log contract."""

from __future__ import annotations


class DecodeError(ValueError):
    """A payload that is not a valid roomlog event. ``reason`` is a short code."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


class UnknownTopicError(KeyError):
    """A topic name that is not in the registry."""


class InvalidChatText(ValueError):
    """Chat text the platform does not carry. ``code`` is the protocol's error code."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message
