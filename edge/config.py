"""The agent's configuration: a TOML file (``--config``), env overrides ``ROOMLOG_EDGE_*``.

```toml
[station]
id = "bj_01"
name = "Beijing lot 1"
site = "Beijing"
api_url = "http://127.0.0.1:8080"   # the gateway; ws(s):// is derived
token = "..."                        # a station token for this id (or token_file)
state_dir = "/var/lib/roomlog-edge"  # sqlite store of executed commands

[[cameras]]
id = "cam1"
name = "Entrance"
rtsp_url = "rtsp://10.0.0.5:8554/stream1"
codec = "h264"

[[gates]]
id = "g1"
driver = "simulated"                 # the only driver shipped: appends to state_file
state_file = "/var/lib/roomlog-edge/g1.state"
```
Optional tables: ``[reconnect]`` (``initial_s``, ``max_s``), ``[health]`` (``port``: 0 off),
``[log]`` (``level``), ``[media]`` (``forbid_codecs``),
``[faults]`` (tests only: ``exit_after_execute``, ``never_answer``).
"""

from __future__ import annotations

import os
import tomllib
from pathlib import Path
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from edge.errors import ConfigError

Ident = Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.:-]+$")]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class StationSection(_Strict):
    id: Ident
    name: str = ""
    site: str = ""
    api_url: str = "http://127.0.0.1:8080"
    token: str | None = None
    token_file: str | None = None
    state_dir: str = ".run/edge"


class CameraSection(_Strict):
    id: Ident
    name: str = ""
    rtsp_url: str
    codec: Literal["h264", "vp8"] = "h264"


class GateSection(_Strict):
    id: Ident
    driver: Literal["simulated"] = "simulated"
    state_file: str
    #: Seconds the simulated gate takes to open.
    open_s: float = Field(default=0.0, ge=0, le=60)


class ReconnectSection(_Strict):
    initial_s: float = Field(default=0.5, gt=0)
    max_s: float = Field(default=10.0, gt=0)


class HealthSection(_Strict):
    host: str = "127.0.0.1"
    port: int = Field(default=0, ge=0, le=65535)


class LogSection(_Strict):
    level: str = "info"


class MediaSection(_Strict):
    """``forbid_codecs``: make every codec construction in the process raise (the proof that
    camera video is forwarded as the camera encoded it; ``edge.rtsp.forbid_codecs``)."""

    forbid_codecs: bool = False


class FaultSection(_Strict):
    """Test hooks: die (SIGKILL) after executing a gate command but before reporting it;
    or receive commands and never answer them."""

    exit_after_execute: bool = False
    never_answer: bool = False


class EdgeConfig(_Strict):
    station: StationSection
    cameras: list[CameraSection] = Field(default_factory=list)
    gates: list[GateSection] = Field(default_factory=list)
    reconnect: ReconnectSection = ReconnectSection()
    health: HealthSection = HealthSection()
    log: LogSection = LogSection()
    media: MediaSection = MediaSection()
    faults: FaultSection = FaultSection()

    @model_validator(mode="after")
    def _unique(self) -> EdgeConfig:
        for what, ids in (("camera", [c.id for c in self.cameras]), ("gate", [g.id for g in self.gates])):
            if len(set(ids)) != len(ids):
                raise ValueError(f"{what} ids must be unique")
        return self

    def token(self) -> str:
        token = os.environ.get("ROOMLOG_EDGE_TOKEN") or self.station.token
        if not token and self.station.token_file:
            token = Path(self.station.token_file).read_text().strip()
        if not token:
            raise ConfigError("no station token: set station.token, station.token_file or ROOMLOG_EDGE_TOKEN")
        return token

    def socket_url(self) -> str:
        base = os.environ.get("ROOMLOG_EDGE_API_URL") or self.station.api_url
        base = base.rstrip("/")
        if base.startswith("https://"):
            base = "wss://" + base.removeprefix("https://")
        elif base.startswith("http://"):
            base = "ws://" + base.removeprefix("http://")
        return f"{base}/v1/station"

    def api_url(self) -> str:
        return (os.environ.get("ROOMLOG_EDGE_API_URL") or self.station.api_url).rstrip("/")


def load(path: str | Path) -> EdgeConfig:
    try:
        raw = tomllib.loads(Path(path).read_text())
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"cannot read {path}: {exc}") from None
    try:
        return EdgeConfig.model_validate(raw)
    except ValidationError as exc:
        first = exc.errors(include_url=False)[0]
        where = ".".join(str(p) for p in first["loc"])
        raise ConfigError(f"{path}: {where}: {first['msg']}") from None
