"""Field types shared across the catalog."""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field

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
