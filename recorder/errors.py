"""Recorder errors: each ends a recording with ``RecordingFailed`` and its message."""

from __future__ import annotations


class RecorderError(Exception):
    """Base of the recorder's errors."""


class SpoolFull(RecorderError):
    """Closed segments would exceed the local spool limit while MinIO does not take them."""


class StorageUnavailable(RecorderError):
    """MinIO refused uploads for longer than the configured limit."""


class JoinFailed(RecorderError):
    """The recorder could not join the room."""
