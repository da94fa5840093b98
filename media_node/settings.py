"""Settings of a media node (env prefix ``ROOMLOG_NODE_``)."""

from __future__ import annotations

import os
import socket

from pydantic import AliasChoices, Field
from pydantic_settings import BaseSettings, SettingsConfigDict


def _default_node_id() -> str:
    return f"node-{socket.gethostname()[:20]}-{os.getpid()}"


class NodeSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="ROOMLOG_NODE_", extra="ignore")

    node_id: str = Field(default_factory=_default_node_id)
    #: The address announced in the node's host ICE candidates (aiortc has no announcedIp);
    #: empty = announce what aiortc gathered.
    announced_address: str = ""
    heartbeat_interval_s: float = 1.0
    #: How often per-leg quality samples go to quality.samples.
    stats_interval_s: float = 2.0
    metrics_port: int = 0
    #: Make any codec construction raise (tests prove forwarding never decodes/encodes).
    forbid_codecs: bool = False
    kafka_bootstrap: str = Field(
        default="127.0.0.1:19092", validation_alias=AliasChoices("KAFKA_BOOTSTRAP", "ROOMLOG_NODE_KAFKA_BOOTSTRAP")
    )
    topic_prefix: str = Field(
        default="", validation_alias=AliasChoices("ROOMLOG_TOPIC_PREFIX", "ROOMLOG_NODE_TOPIC_PREFIX")
    )
    log_level: str = "info"
