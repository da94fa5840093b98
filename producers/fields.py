"""Field types shared across the catalog."""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field

from producers.errors import InvalidChatText

Id = Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.:-]+$")]
"""Room, peer, node, station, session, user ids: url- and key-safe."""

Layer = Literal["high", "mid", "low", "single"]
"""An encoding of a source; ``single`` when the source has one encoding."""

Sdp = Annotated[str, Field(min_length=1, max_length=60_000)]


class RoomType(StrEnum):
    SFU = "sfu"
    P2P = "p2p"
    BROADCAST = "broadcast"


class SourceKind(StrEnum):
    CAMERA = "camera"
    MICROPHONE = "microphone"
    SCREEN = "screen"


class Grant(StrEnum):
    """What an access token allows (see api/tokens.py)."""

    JOIN = "join"
    PUBLISH = "publish"
    SUBSCRIBE = "subscribe"
    ADMIN = "admin"
    RECORD = "record"
    STATION_CONTROL = "station_control"
    #: An edge agent's token: bound to one station id (the token's ``station`` claim).
    STATION = "station"


class TrackInfo(BaseModel):
    """Metadata a publisher sends with each track of a publish offer."""

    model_config = ConfigDict(frozen=True, extra="ignore")

    source_id: Id
    kind: SourceKind
    layer: Layer = "single"
    mid: str | None = Field(default=None, max_length=32)
    track_id: str | None = Field(default=None, max_length=128)


class NodeLoad(BaseModel):
    """A media node's load, as carried by its heartbeats."""

    model_config = ConfigDict(frozen=True, extra="ignore")

    peers: int = Field(default=0, ge=0)
    legs: int = Field(default=0, ge=0)
    packets_per_s: float = Field(default=0.0, ge=0)
    cpu_pct: float = Field(default=0.0, ge=0)


#: In-room chat: the longest message, in characters (Unicode code points), counted after
#: the surrounding whitespace is stripped. The gateway and streams both apply it.
CHAT_MAX_CHARS = 2000

ChatText = Annotated[str, Field(max_length=16_000)]
"""Chat text on the log: a schema bound well above ``CHAT_MAX_CHARS`` (the policy limit,
checked by ``chat_text``), so the limit can change without a schema change."""


def chat_text(text: str) -> str:
    """The text a chat message carries: ``text`` without surrounding whitespace.

    Raises ``InvalidChatText`` with code ``chat_empty`` (nothing but whitespace) or
    ``chat_too_long`` (more than ``CHAT_MAX_CHARS`` characters).
    """
    stripped = text.strip()
    if not stripped:
        raise InvalidChatText("chat_empty", "a chat message needs some text")
    if len(stripped) > CHAT_MAX_CHARS:
        raise InvalidChatText(
            "chat_too_long", f"a chat message is at most {CHAT_MAX_CHARS} characters, not {len(stripped)}"
        )
    return stripped
