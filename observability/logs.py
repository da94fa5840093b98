"""Structured (JSON lines) logging with context fields.

A line carries the context fields its call passes (``extra={"room_id": ...}``) and, inside a
recording span (``observability/tracing.py``, tracing on), that span's ``trace_id`` and
``span_id`` plus the ids the span carries (``room_id``, ``peer_id``, ``event_id``, ...) where
the call passed none: a log line leads to its trace in Jaeger and back.
"""

from __future__ import annotations

import json
import logging
import sys
from typing import Any

from observability import tracing

CONTEXT_FIELDS = (
    "room_id",
    "peer_id",
    "event_id",
    "node_id",
    "gateway_id",
    "session_id",
    "topic",
    "offset",
    "reason",
    "service",
    "station_id",
    "command_id",
    "camera_id",
)


class JsonFormatter(logging.Formatter):
    def __init__(self, service: str) -> None:
        super().__init__()
        self.service = service

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "ts": self.formatTime(record, "%Y-%m-%dT%H:%M:%S") + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "service": self.service,
            "logger": record.name,
            "msg": record.getMessage(),
        }
        for name in CONTEXT_FIELDS:
            value = record.__dict__.get(name)
            if value is not None:
                out[name] = value
        for name, value in tracing.log_fields().items():
            out.setdefault(name, value)
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        return json.dumps(out, default=str)


def setup(service: str, level: str = "info") -> None:
    """Route the root logger to stderr as JSON lines."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter(service))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    logging.Formatter.converter = __import__("time").gmtime
