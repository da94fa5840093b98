"""Gateway WebSocket metrics, one meter per socket kind with its children looked up once:
open sockets (``roomlog_api_sockets``), valid messages by type
(``roomlog_api_socket_messages_total``) and error messages sent by code
(``roomlog_api_socket_errors_total``)."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from observability import metrics


class SocketMeter:
    def __init__(self, kind: str, types: Iterable[str]) -> None:
        self.kind = kind
        self.sockets = metrics.API_SOCKETS.labels(kind)
        self._messages = {t: metrics.API_SOCKET_MESSAGES.labels(kind, t) for t in types}
        self._errors: dict[str, Any] = {}

    def message(self, type_: str) -> None:
        child = self._messages.get(type_)
        if child is not None:
            child.inc()

    def error(self, code: str) -> None:
        child = self._errors.get(code)
        if child is None:
            child = self._errors[code] = metrics.API_SOCKET_ERRORS.labels(self.kind, code)
        child.inc()
