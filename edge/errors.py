"""Errors of the edge agent."""

from __future__ import annotations


class EdgeError(Exception):
    """A command the agent cannot carry out; ``code`` goes into its failed result."""

    code = "edge_error"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class ConfigError(EdgeError):
    code = "invalid_config"


class UnknownGate(EdgeError):
    code = "gate_not_found"


class UnknownCamera(EdgeError):
    code = "camera_not_found"


class GateFailed(EdgeError):
    code = "gate_failed"
