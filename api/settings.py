"""Settings of the api gateway (env prefix ``ROOMLOG_API_``)."""

from __future__ import annotations

import os
import socket
from typing import Any

from pydantic import AliasChoices, Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict


def _default_gateway_id() -> str:
    return f"gw-{socket.gethostname()[:20]}-{os.getpid()}"


class ApiSettings(BaseSettings):
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
    kafka_bootstrap: str = Field(default="127.0.0.1:19092",
validation_alias=AliasChoices("KAFKA_BOOTSTRAP",
                                                               "ROOMLOG_API_KAFKA_BOOTSTRAP"))
    database_url: str = Field(default="postgresql+asyncpg://roomlog:roomlog@127.0.0.1:15432/roomlog",
validation_alias=AliasChoices("DATABASE_URL",
                                                            "ROOMLOG_API_DATABASE_URL"))
    topic_prefix: str = Field(default="",
validation_alias=AliasChoices("ROOMLOG_TOPIC_PREFIX",
                                                               "ROOMLOG_API_TOPIC_PREFIX"))
    #: How long POST /v1/rooms waits for the room to appear in the read model.
    create_wait_s: float = 3.0
    #: How long POST /v1/calls waits for streams' decision (rate limit) before answering 202.
    call_wait_s: float = 5.0
    #: A call invite id is valid this long (accepting later: ``invite_expired``).
    invite_ttl_s: float = 60.0
    #: How often the gateway writes ``SessionPinged`` for each open socket (presence TTL is 90 s).
    session_ping_s: float = 30.0
    #: ICE servers the gateway adds to `joined` (never written to the log).
    ice_servers: list[dict[str, Any]] = Field(default_factory=list)
    log_level: str = "info"
    #: Development mode: enables POST /v1/dev/login (a name is enough to get a token).
    #: `make up` and the browser tests set it; never in production.
    dev_mode: bool = False
