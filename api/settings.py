"""Settings of the api gateway (env prefix ``ROOMLOG_API_``)."""

from __future__ import annotations

import json
import os
import socket
from typing import Annotated, Any

from pydantic import AliasChoices, Field, SecretStr, field_validator, model_validator
from pydantic_settings import NoDecode, SettingsConfigDict

from producers.settings import DatabaseSettings, KafkaSettings, MinioSettings, TracingSettings

#: A list setting: a JSON array or comma-separated values (``a,b``).
UrlList = Annotated[list[str], NoDecode]


def _default_gateway_id() -> str:
    return f"gw-{socket.gethostname()[:20]}-{os.getpid()}"


class ApiSettings(KafkaSettings, DatabaseSettings, MinioSettings, TracingSettings):
    model_config = SettingsConfigDict(env_prefix="ROOMLOG_API_", extra="ignore")

    host: str = "127.0.0.1"
    port: int = 8080
    #: Guards POST /v1/tokens (header ``X-API-Secret``). Never sent to browsers.
    api_secret: SecretStr = SecretStr("dev-api-secret-change-me")
    #: Signs access tokens (HS256).
    jwt_secret: SecretStr = SecretStr("dev-jwt-secret-change-me-32-bytes!!")
    jwt_issuer: str = "roomlog"
    max_token_ttl_s: int = 86_400
    gateway_id: str = Field(default_factory=_default_gateway_id)
    #: How long POST /v1/rooms waits for the room to appear in the read model.
    create_wait_s: float = 3.0
    #: How long POST /v1/calls waits for streams' decision (rate limit) before answering 202.
    call_wait_s: float = 5.0
    #: How long a WHEP/WHIP request waits for each of streams' and the node's answers.
    whep_wait_s: float = 15.0
    #: A call invite id is valid this long (accepting later: ``invite_expired``).
    invite_ttl_s: float = 60.0
    #: How often the gateway writes ``SessionPinged`` for each open socket (presence TTL is 90 s).
    session_ping_s: float = 30.0
    #: The producer's batch per partition, in bytes (aiokafka's ``max_batch_size``; its
    #: default, 16 KiB, holds ~40 session events: thousands of sockets wait on it).
    producer_batch_bytes: int = Field(default=256 * 1024, ge=16 * 1024, le=1024 * 1024)
    #: Stations: the heartbeat interval the gateway tells edge agents (streams declare a
    #: station offline after three missed), and how long a camera publish token lives.
    station_heartbeat_s: float = Field(default=2.0, gt=0, le=60)
    station_publish_token_ttl_s: int = Field(default=3600, ge=60)
    #: STUN URLs handed to clients (``stun:host:port``).
    stun_urls: UrlList = Field(default_factory=list)
    #: TURN URLs handed to clients with ephemeral credentials (``turn:host:port`` means UDP
    #: and TCP; ``?transport=`` or ``turns:`` as given). Needs ``turn_secret``.
    turn_urls: UrlList = Field(default_factory=list)
    #: coturn's ``static-auth-secret``; signs TURN credentials. Never logged, never sent.
    turn_secret: SecretStr | None = None
    #: How long TURN credentials stay valid.
    turn_ttl_s: int = Field(default=86_400, ge=60)
    #: Extra ICE servers appended as given (``[{"urls": [...], ...}]``).
    ice_servers: list[dict[str, Any]] = Field(default_factory=list)
    #: Serve HTTPS with this certificate chain and key (PEM files); both or neither.
    tls_cert: str | None = None
    tls_key: str | None = None
    log_level: str = "info"
    #: MinIO holding recordings (``MinioSettings``): GET /v1/recordings/{id} presigns
    #: download URLs with its credentials, in this bucket.
    recording_bucket: str = Field(
        default="roomlog-recordings",
        validation_alias=AliasChoices("ROOMLOG_RECORDING_BUCKET", "ROOMLOG_API_RECORDING_BUCKET"),
    )
    #: How long a presigned recording download URL stays valid.
    recording_url_ttl_s: int = Field(default=3600, ge=60, le=7 * 86_400)

    @field_validator("stun_urls", "turn_urls", mode="before")
    @classmethod
    def _split(cls, value: Any) -> Any:
        if isinstance(value, str):
            text = value.strip()
            if text.startswith("["):
                return json.loads(text)
            return [part.strip() for part in text.split(",") if part.strip()]
        return value

    @field_validator("stun_urls")
    @classmethod
    def _stun_scheme(cls, urls: list[str]) -> list[str]:
        bad = [u for u in urls if not u.startswith(("stun:", "stuns:"))]
        if bad:
            raise ValueError(f"STUN URLs start with stun: or stuns: ({bad})")
        return urls

    @field_validator("turn_urls")
    @classmethod
    def _turn_scheme(cls, urls: list[str]) -> list[str]:
        bad = [u for u in urls if not u.startswith(("turn:", "turns:"))]
        if bad:
            raise ValueError(f"TURN URLs start with turn: or turns: ({bad})")
        return urls

    @model_validator(mode="after")
    def _pairs(self) -> ApiSettings:
        if self.turn_urls and (self.turn_secret is None or not self.turn_secret.get_secret_value()):
            raise ValueError("turn_urls need turn_secret (coturn's static-auth-secret)")
        if (self.tls_cert is None) != (self.tls_key is None):
            raise ValueError("set both tls_cert and tls_key, or neither")
        return self

    #: Development mode: enables POST /v1/dev/login (a name is enough to get a token).
    #: `make up` and the browser tests set it; never in production.
    dev_mode: bool = False
