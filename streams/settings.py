"""Settings of the streams worker (env prefix ``ROOMLOG_STREAMS_``)."""

from __future__ import annotations

from pydantic import Field
from pydantic_settings import SettingsConfigDict

from producers.settings import DatabaseSettings, KafkaSettings, MetricsSettings, TracingSettings


class StreamsSettings(KafkaSettings, DatabaseSettings, TracingSettings, MetricsSettings):
    model_config = SettingsConfigDict(env_prefix="ROOMLOG_STREAMS_", extra="ignore")

    app_id: str = "roomlog-streams"
    #: A dropped connection becomes a leave after this long without a resume. Longer than the
    #: SDKs' reconnection budget (web/sdk/backoff.js: 60 s) plus a margin, so a page that comes
    #: back within its budget resumes as the same participant (also the presence resume grace).
    disconnect_grace_s: float = 75.0
    #: A node whose last heartbeat is older than this is declared dead.
    node_timeout_s: float = 5.0
    command_ttl_s: float = 10.0
    #: A session without a ping for this long expires; a user without sessions is offline.
    presence_ttl_s: float = 90.0
    #: An unanswered call times out after this long (the contract is 30 s).
    call_ring_timeout_s: float = 30.0
    #: Call attempts a user may make per window (decided in streams, across all gateways).
    call_max_attempts: int = 10
    call_attempt_window_s: float = 60.0
    tick_interval_s: float = 1.0
    #: Stations (streams/stations.py): offline after this many heartbeat intervals without one.
    station_missed_heartbeats: int = Field(default=3, ge=1)
    #: An operator's station command (open-gate) times out after this long.
    station_command_timeout_s: float = Field(default=10.0, gt=0)
    #: A camera stream must be published within this long of its start-stream.
    station_stream_start_timeout_s: float = Field(default=20.0, gt=0)
    #: A camera stream nobody watched for this long is stopped.
    station_idle_stop_s: float = Field(default=30.0, gt=0)
    #: How often the agents commit the offsets of handled batches.
    commit_interval_s: float = 1.0
    #: Kafka consumer-group session timeout: how soon a killed worker's partitions move.
    session_timeout_s: float = 10.0
    #: Inputs handled per batch at most (a batch is what one fetch returned). Outputs of a
    #: batch are acknowledged before its state changes are written (see streams/batch.py).
    batch_max: int = 500
    project_to_postgres: bool = True
    #: Quality history (``quality_stats``, ``quality_decisions``) older than this is deleted;
    #: 0 keeps it forever.
    quality_retention_days: float = Field(default=14.0, ge=0)
    #: How often the worker runs that deletion, and how many rows one statement deletes.
    quality_retention_interval_s: float = Field(default=600.0, gt=0)
    quality_prune_batch: int = Field(default=5000, ge=1, le=100_000)
    #: When set, append "<topic> <partition> <offset> <event_id>" per handled input.
    trace_file: str | None = None
    #: Faust's per-app data directory (tables are in memory, restored from their changelogs).
    data_dir: str = ".run/faust"
    log_level: str = "warning"
