"""Gateway socket metrics (api/socket_metrics.py): messages counted by known type only
(no label per arbitrary client string), errors by code, open sockets per kind; the
rtc and station meters cover every message type their parsers accept."""

from __future__ import annotations

from prometheus_client import REGISTRY

from api import rtc, station_socket
from api.signaling import TYPES
from api.socket_metrics import SocketMeter


def value(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


def test_meter_counts_known_types_errors_and_sockets() -> None:
    meter = SocketMeter("unit", ["join", "ping"])
    meter.message("join")
    meter.message("join")
    meter.message("<script>")  # not a type: not a label
    meter.error("invalid_message")
    meter.sockets.inc()
    assert value("roomlog_api_socket_messages_total", kind="unit", type="join") == 2
    assert value("roomlog_api_socket_messages_total", kind="unit", type="ping") == 0
    assert REGISTRY.get_sample_value("roomlog_api_socket_messages_total", {"kind": "unit", "type": "<script>"}) is None
    assert value("roomlog_api_socket_errors_total", kind="unit", code="invalid_message") == 1
    assert value("roomlog_api_sockets", kind="unit") == 1


def test_the_gateways_meters_know_every_message_type() -> None:
    assert set(rtc.METER._messages) == TYPES
    assert set(station_socket.METER._messages) == station_socket.TYPES
