"""Settings of a media node (env prefix ``ROOMLOG_NODE_``)."""

from __future__ import annotations

import os
import socket

from pydantic import Field
from pydantic_settings import SettingsConfigDict

from producers.settings import KafkaSettings, MetricsSettings, TracingSettings


def _default_node_id() -> str:
    return f"node-{socket.gethostname()[:20]}-{os.getpid()}"


class NodeSettings(KafkaSettings, TracingSettings, MetricsSettings):
    model_config = SettingsConfigDict(env_prefix="ROOMLOG_NODE_", extra="ignore")

    node_id: str = Field(default_factory=_default_node_id)
    #: The address announced in the node's host ICE candidates (aiortc has no announcedIp);
    #: empty = announce what aiortc gathered.
    announced_address: str = ""
    heartbeat_interval_s: float = 1.0
    #: Heartbeat interval while the node carries no peer and no leg (an idle platform writes
    #: few records); the registry marks an idle node dead after two of these.
    idle_heartbeat_interval_s: float = 15.0
    #: How often per-leg quality samples go to quality.samples.
    stats_interval_s: float = 2.0
    #: Make any codec construction raise (tests prove forwarding never decodes/encodes).
    forbid_codecs: bool = False
    log_level: str = "info"
