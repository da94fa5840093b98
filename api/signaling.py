"""Client messages of the signaling protocol (docs/protocol.md), validated.

Each message type is a frozen model; ``parse_message`` turns a text frame into one
or raises ``SignalingError`` with the protocol's error code.
"""

from __future__ import annotations

import json
import time
from typing import Annotated, Any, Literal, Union

from aiortc.sdp import SessionDescription
from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError, model_validator

from api.errors import SocketError
from producers.fields import Id, Layer, SourceKind


class SignalingError(Exception):
    def __init__(self, code: SocketError, message: str, request_id: str | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.request_id = request_id


RequestId = Annotated[str, Field(min_length=1, max_length=64)]
Sdp = Annotated[str, Field(min_length=1, max_length=60_000)]


class Message(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    request_id: RequestId | None = None


class Join(Message):
    type: Literal["join"]
    room: Id
    name: Annotated[str, Field(max_length=128)] = ""
    resume_peer_id: Id | None = None
    #: The type of the room if this join creates it: ``sfu`` (default), ``p2p``,
    #: ``broadcast``; ``mcu`` is refused with ``unsupported_room_type``.
    room_type: Annotated[str, Field(max_length=32)] | None = None


class TrackSpec(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    source_id: Id
    kind: SourceKind
    layer: Layer = "single"
    mid: Annotated[str, Field(min_length=1, max_length=32)]


class Publish(Message):
    type: Literal["publish"]
    sdp: Sdp
    tracks: Annotated[list[TrackSpec], Field(min_length=1, max_length=16)]


class Unpublish(Message):
    """Stop publishing one of this peer's sources (e.g. stop sharing the screen)."""

    type: Literal["unpublish"]
    source_id: Id


class SubscriberAnswer(Message):
    type: Literal["subscriber-answer"]
    sdp: Sdp


class Subscribe(Message):
    type: Literal["subscribe"]
    source_id: Id
    layer: Layer = "high"


class Unsubscribe(Message):
    type: Literal["unsubscribe"]
    source_id: Id


class Mute(Message):
    type: Literal["mute", "unmute"]
    source_kind: SourceKind


class IceRestart(Message):
    type: Literal["ice-restart"]
    target: Literal["publisher", "subscriber"]


class IceCandidate(Message):
    type: Literal["ice-candidate"]
    candidate: dict[str, Any] | str
    #: P2P rooms: the peer to relay the candidate to.
    to: Id | None = None


class P2PDescription(Message):
    """P2P rooms: an offer or answer for the other peer, relayed over the log."""

    type: Literal["p2p-offer", "p2p-answer"]
    to: Id
    sdp: Sdp


class CallAnswer(Message):
    """Answer a call: the callee accepts or rejects, the caller cancels, either hangs up."""

    type: Literal["call-accept", "call-reject", "call-cancel", "call-hangup"]
    call_id: Id


class Chat(Message):
    """Post to the room's chat. Length and emptiness are checked by the handler (with
    their own error codes, ``chat_too_long``/``chat_empty``), not here."""

    type: Literal["chat"]
    text: str


class PresenceSubscribe(Message):
    type: Literal["presence-subscribe"]


class RequestStream(Message):
    """Operators (``station_control``): start or join a station camera's stream (api/stations.py)."""

    type: Literal["request-stream"]
    station_id: Id
    camera_id: Id


class OpenGate(Message):
    """Operators (``station_control``): open a station's gate; a retry reuses ``command_id``."""

    type: Literal["open-gate"]
    station_id: Id
    gate_id: Id
    command_id: Id | None = None


class StationsSubscribe(Message):
    type: Literal["stations-subscribe"]


class Ping(Message):
    type: Literal["ping"]


class Leave(Message):
    type: Literal["leave"]


#: ``quality-report``: the most remote sources one report may describe (``QualitySample.downlink``).
MAX_DOWNLINK = 64
#: Gateway-side bounds of a report's numbers (all finite, none negative).
MAX_MS = 60_000.0
MAX_KBPS = 1_000_000.0
MAX_COUNT = 10_000_000

Pct = Annotated[float, Field(ge=0, le=100, allow_inf_nan=False)]
Ms = Annotated[float, Field(ge=0, le=MAX_MS, allow_inf_nan=False)]
Kbps = Annotated[float, Field(ge=0, le=MAX_KBPS, allow_inf_nan=False)]
Count = Annotated[int, Field(ge=0, le=MAX_COUNT)]


class _Strict(BaseModel):
    """Numbers are JSON numbers (no strings, no booleans), finite, never negative."""

    model_config = ConfigDict(frozen=True, extra="forbid", strict=True)


class Uplink(_Strict):
    """The client's publisher connection over the last interval."""

    loss_pct: Pct = 0.0
    rtt_ms: Ms = 0.0
    jitter_ms: Ms = 0.0
    bitrate_kbps: Kbps = 0.0
    #: The network-quality level the client shows for its uplink; null when it publishes nothing.
    level: Annotated[int, Field(ge=1, le=6)] | None = None


class DownlinkLeg(_Strict):
    """One remote source as the client receives it (``producers.media.ClientLeg``)."""

    peer_id: Id
    source_id: Id
    kind: Literal["audio", "video"] = "video"
    loss_pct: Pct = 0.0
    jitter_ms: Ms = 0.0
    bitrate_kbps: Kbps = 0.0
    packets: Count = 0
    frames_decoded: Count = 0
    silent_s: Annotated[float, Field(ge=0, le=86_400, allow_inf_nan=False)] = 0.0


class QualityReport(Message):
    """A client's own getStats summary, at most one per 2 s per connection."""

    model_config = ConfigDict(frozen=True, extra="forbid", strict=True)

    type: Literal["quality-report"]
    uplink: Uplink
    downlink: Annotated[list[DownlinkLeg], Field(max_length=MAX_DOWNLINK, default_factory=list)]

    @model_validator(mode="after")
    def _one_leg_per_source(self) -> QualityReport:
        legs = [(leg.peer_id, leg.source_id) for leg in self.downlink]
        if len(set(legs)) != len(legs):
            raise ValueError("downlink names a source twice")
        return self


ClientMessage = Annotated[
    Union[  # noqa: UP007
        Join,
        Publish,
        Unpublish,
        SubscriberAnswer,
        Subscribe,
        Unsubscribe,
        Mute,
        IceRestart,
        IceCandidate,
        Ping,
        Leave,
        P2PDescription,
        CallAnswer,
        PresenceSubscribe,
        Chat,
        QualityReport,
        RequestStream,
        OpenGate,
        StationsSubscribe,
    ],
    Field(discriminator="type"),
]
_ADAPTER: TypeAdapter[Any] = TypeAdapter(ClientMessage)
TYPES = {
    "join",
    "publish",
    "unpublish",
    "subscriber-answer",
    "subscribe",
    "unsubscribe",
    "mute",
    "unmute",
    "ice-restart",
    "ice-candidate",
    "ping",
    "leave",
    "p2p-offer",
    "p2p-answer",
    "call-accept",
    "call-reject",
    "call-cancel",
    "call-hangup",
    "presence-subscribe",
    "chat",
    "quality-report",
    "request-stream",
    "open-gate",
    "stations-subscribe",
}


def _refuse_constant(name: str) -> Any:
    """``NaN``, ``Infinity`` and ``-Infinity`` are not JSON, though Python's parser takes them."""
    raise ValueError(f"{name} is not a JSON number")


def parse_message(text: str) -> Message:
    try:
        raw = json.loads(text, parse_constant=_refuse_constant)
    except json.JSONDecodeError as exc:
        raise SignalingError(SocketError.INVALID_MESSAGE, f"not JSON: {exc.msg}") from None
    except ValueError as exc:
        raise SignalingError(SocketError.INVALID_MESSAGE, f"not JSON: {exc}") from None
    if not isinstance(raw, dict):
        raise SignalingError(SocketError.INVALID_MESSAGE, "a message is a JSON object")
    request_id = raw.get("request_id") if isinstance(raw.get("request_id"), str) else None
    if raw.get("type") not in TYPES:
        raise SignalingError(SocketError.UNKNOWN_TYPE, f"unknown message type {raw.get('type')!r}", request_id)
    if raw["type"] == "quality-report":
        _check_report_size(raw, request_id)
    try:
        message: Message = _ADAPTER.validate_python(raw)
    except ValidationError as exc:
        first = exc.errors(include_url=False)[0]
        where = ".".join(str(p) for p in first["loc"][1:])
        raise SignalingError(SocketError.INVALID_MESSAGE, f"{where}: {first['msg']}", request_id) from None
    return message


def _check_report_size(raw: dict[str, Any], request_id: str | None) -> None:
    """Refuse an oversized ``downlink`` before a single leg is validated."""
    downlink = raw.get("downlink")
    if isinstance(downlink, list) and len(downlink) > MAX_DOWNLINK:
        raise SignalingError(
            SocketError.INVALID_MESSAGE, f"downlink: at most {MAX_DOWNLINK} sources, not {len(downlink)}", request_id
        )


def check_sdp(
    sdp: str, kind: Literal["offer", "answer"], request_id: str | None, mids: list[str] | None = None
) -> None:
    """Reject text that is not an SDP with media sections (and the given mids)."""
    lines = [line for line in sdp.replace("\r\n", "\n").split("\n") if line]
    if not lines or lines[0] != "v=0" or any(len(line) < 2 or line[1] != "=" for line in lines):
        raise SignalingError(SocketError.INVALID_SDP, f"the {kind} is not SDP", request_id)
    try:
        description = SessionDescription.parse(sdp)
    except Exception as exc:  # noqa: BLE001 - any parser failure means invalid
        raise SignalingError(SocketError.INVALID_SDP, f"the {kind} does not parse: {exc}", request_id) from None
    if not description.media:
        raise SignalingError(SocketError.INVALID_SDP, f"the {kind} has no media sections", request_id)
    if mids is not None:
        present = {m.rtp.muxId for m in description.media}
        missing = [mid for mid in mids if mid not in present]
        if missing:
            raise SignalingError(
                SocketError.INVALID_SDP, f"tracks name mids {missing} that the offer does not have", request_id
            )


class TokenBucket:
    """A socket's message rate limit: ``burst`` messages at once, ``per_s`` refilled each second."""

    def __init__(self, per_s: float, burst: float) -> None:
        self.per_s, self.burst = per_s, burst
        self._tokens, self._last = burst, time.monotonic()

    def take(self) -> bool:
        now = time.monotonic()
        self._tokens = min(self.burst, self._tokens + (now - self._last) * self.per_s)
        self._last = now
        if self._tokens < 1:
            return False
        self._tokens -= 1
        return True
