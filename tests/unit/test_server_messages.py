"""Every message streams address to a socket is a typed server message (``api.messages``).

The streams' own unit scenarios (rooms, tracks, chat, calls, users, recordings, quality)
run here again while ``Outputs.add`` is watched: each ``Notification.message`` and each
``NotifyCallParty.message`` they produce must parse as a server message. The gateway
drops anything else (``api.rtc.Connection.send``), so a message shape that drifts from
``api.messages`` fails here, not in a browser.

The gateway's ``Connection`` is checked to send nothing else (a malformed notification is
dropped, pong and errors are models), and the Python SDK's ``Signaling`` to skip frames
that are not server messages.
"""

from __future__ import annotations

import inspect
from collections.abc import AsyncIterator, Iterator
from types import ModuleType
from typing import Any

import pytest

from api.messages import SERVER_TYPES, Error, ServerMessage, SocketError, parse_server
from client.signaling import Signaling
from producers.fields import SourceKind
from producers.rtc import MuteRequested, Notification
from producers.sessions import NotifyCallParty
from streams.outputs import Outputs
from tests.unit import (
    test_calls,
    test_chat,
    test_presence,
    test_quality,
    test_quality_report,
    test_recordings,
    test_room_types,
    test_rooms,
    test_tracks,
)

SCENARIOS: list[ModuleType] = [
    test_rooms,
    test_room_types,
    test_tracks,
    test_chat,
    test_calls,
    test_presence,
    test_recordings,
    test_quality,
]


@pytest.fixture
def notified(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[dict[str, Any]]]:
    seen: list[dict[str, Any]] = []
    real_add = Outputs.add

    def add(self: Outputs, topic: str, cls: type[Any], **fields: Any) -> Any:
        if cls in (Notification, NotifyCallParty) and fields.get("message"):
            message = dict(fields["message"])
            if cls is NotifyCallParty:
                message.pop("answered_session_id", None)  # the gateway turns it into answered_here
            seen.append(message)
        return real_add(self, topic, cls, **fields)

    monkeypatch.setattr(Outputs, "add", add)
    yield seen


def _scenarios() -> list[tuple[str, Any]]:
    return [
        (f"{module.__name__.rsplit('.', 1)[1]}::{name}", fn)
        for module in SCENARIOS
        for name, fn in vars(module).items()
        if name.startswith("test_") and inspect.isfunction(fn) and not inspect.signature(fn).parameters
    ]


def test_every_notification_of_the_streams_scenarios_is_a_server_message(notified: list[dict[str, Any]]) -> None:
    ran = 0
    for _, scenario in _scenarios():
        if inspect.iscoroutinefunction(scenario):
            continue
        scenario()
        ran += 1
    assert ran >= 30 and len(notified) >= 50, (ran, len(notified))
    bad = []
    for message in notified:
        if message.get("type") == "call-requested":
            continue  # the answer to the REST wait of POST /v1/calls, never sent on a socket
        if message == {"type": "call-incoming", "call_id": "c1"}:
            continue  # test_presence hands the users agent this abbreviated input; streams never write it
        if message.get("type") == "error" and "retry_after_s" in message:
            continue  # the same wait's refusal (429 rate_limited), never sent on a socket
        try:
            parse_server(message)
        except Exception as exc:  # noqa: BLE001 - collected and reported below
            bad.append((message, str(exc)[:300]))
    assert not bad, bad
    kinds = {m["type"] for m in notified}
    assert {"joined", "peer-joined", "peer-left", "left", "chat", "error", "call-incoming", "call-accepted"} <= kinds


def test_a_message_outside_the_protocol_is_refused() -> None:
    with pytest.raises(ValueError):
        parse_server({"type": "joined", "room": "r", "peer_id": "p", "peers": [], "extra": 1})
    with pytest.raises(ValueError):
        parse_server({"type": "error", "code": "LookupError", "message": "a code no document lists"})
    with pytest.raises(ValueError):
        parse_server({"type": "surprise"})


def test_wire_form_keeps_the_fields_given_and_names_from_by_its_wire_name() -> None:
    message = parse_server({"type": "p2p-offer", "from": "P1", "sdp": "v=0"})
    assert message.wire() == {"type": "p2p-offer", "from": "P1", "sdp": "v=0"}
    assert Error(code=SocketError.FORBIDDEN, message="no", request_id="r1").wire() == {
        "type": "error",
        "code": "forbidden",
        "message": "no",
        "request_id": "r1",
    }
    assert all(isinstance(t, str) and t for t in SERVER_TYPES)
    assert isinstance(message, ServerMessage)


def test_a_mute_tells_the_others_with_a_typed_peer_updated() -> None:
    state, _ = test_rooms.run(None, test_rooms.join("p1", "alice"), test_rooms.join("p2", "bob"))
    mute = MuteRequested.new(room_id="r1", peer_id="p1", source_kind=SourceKind.MICROPHONE, muted=True)
    _, out = test_rooms.run(state, mute)
    [note] = [o for o in out if isinstance(o, Notification)]
    message = parse_server(note.message)
    assert message.type == "peer-updated" and message.wire()["peer"]["audio_muted"] is True


async def test_the_gateway_sends_only_server_messages() -> None:
    conn, ws, _ = test_quality_report.connection()
    await conn.deliver({"type": "peer-left", "peer_id": "P2", "reason": "left"})
    await conn.deliver({"type": "peer-left", "peer_id": "P3"})  # no reason: not the protocol's
    await conn.deliver({"type": "surprise", "peer_id": "P4"})
    await conn.handle('{"type": "ping", "request_id": "r1"}')
    await conn.handle('{"type": "nonsense"}')
    assert ws.sent == [
        {"type": "peer-left", "peer_id": "P2", "reason": "left"},
        {"type": "pong", "request_id": "r1"},
        {"type": "error", "code": "unknown_type", "message": "unknown message type 'nonsense'", "request_id": None},
    ]


class FakeWire:
    def __init__(self, frames: list[str]) -> None:
        self.frames = frames

    def __aiter__(self) -> AsyncIterator[str]:
        return self._frames()

    async def _frames(self) -> AsyncIterator[str]:
        for frame in self.frames:
            yield frame


async def test_the_python_sdk_parses_every_frame_with_the_same_models() -> None:
    got: list[dict[str, Any]] = []

    async def on_message(message: dict[str, Any]) -> None:
        got.append(message)

    async def on_closed() -> None:
        pass

    signaling = Signaling("ws://unused", "token", on_message, on_closed)
    signaling._ws = FakeWire(
        [
            '{"type": "p2p-offer", "from": "P1", "sdp": "v=0"}',
            '{"type": "from-a-newer-server"}',
            "not json",
            '{"type": "track-unpublished", "peer_id": "P1", "source_id": "cam"}',
        ]
    )
    await signaling._read()
    assert got == [
        {"type": "p2p-offer", "from": "P1", "sdp": "v=0"},
        {"type": "track-unpublished", "peer_id": "P1", "source_id": "cam"},
    ]
