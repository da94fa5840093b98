"""Settings of the recorder (env prefix ``ROOMLOG_RECORDER_``)."""

from __future__ import annotations

import os
import socket
from typing import Any

from pydantic import AliasChoices, Field, SecretStr
from pydantic_settings import SettingsConfigDict

from producers.settings import KafkaSettings, MetricsSettings, MinioSettings, TracingSettings


def _default_recorder_id() -> str:
    return f"rec-{socket.gethostname()[:20]}-{os.getpid()}"


class RecorderSettings(KafkaSettings, MinioSettings, TracingSettings, MetricsSettings):
    model_config = SettingsConfigDict(env_prefix="ROOMLOG_RECORDER_", extra="ignore")

    recorder_id: str = Field(default_factory=_default_recorder_id)
    #: Instances sharing this group share the work (partitions of ``recording.commands``).
    group_id: str = "roomlog-recorder"
    #: The api the recorder joins rooms through (``/v1/rtc``) and mints its tokens at.
    api_url: str = "http://127.0.0.1:8080"
    api_secret: SecretStr = Field(
        default=SecretStr("dev-api-secret-change-me"),
        validation_alias=AliasChoices("ROOMLOG_RECORDER_API_SECRET", "ROOMLOG_API_API_SECRET"),
    )
    #: ICE servers for the recorder's connections; None uses what the gateway sends.
    ice_servers: list[dict[str, Any]] | None = None
    #: Default segment length (a command may set its own).
    segment_s: float = Field(default=10.0, gt=0, le=600)
    #: Closed segments wait here until MinIO takes them.
    spool_dir: str = "/tmp/roomlog-recorder"
    #: More than this waiting on local disk fails the recordings that add to it.
    spool_limit_bytes: int = Field(default=2 * 1024**3, ge=1)
    #: MinIO refusing uploads for longer than this fails the recordings waiting on it.
    upload_give_up_s: float = Field(default=300.0, gt=0)
    #: How long a packet hole may stay open (retransmission) before its frame is dropped.
    reorder_hold_s: float = Field(default=0.3, gt=0)
    #: Kafka consumer session: another instance takes a dead one's recordings over after it.
    session_timeout_s: float = Field(default=6.0, ge=6.0)
    #: Make any codec construction raise (tests prove recording never decodes or encodes).
    forbid_codecs: bool = False
    bucket: str = Field(
        default="roomlog-recordings",
        validation_alias=AliasChoices("ROOMLOG_RECORDING_BUCKET", "ROOMLOG_RECORDER_BUCKET"),
    )
    log_level: str = "info"
