"""The settings every service shares, written once: Kafka and topics, Postgres, MinIO.

A service's settings class (its own env prefix, ``ROOMLOG_<SERVICE>_``) inherits the mixins
it needs. Each shared field reads its shared env var first, then the prefixed one:
``kafka_bootstrap`` from ``KAFKA_BOOTSTRAP`` or ``ROOMLOG_API_KAFKA_BOOTSTRAP`` (for
``ApiSettings``), ``topic_prefix`` from ``ROOMLOG_TOPIC_PREFIX`` or
``ROOMLOG_<SERVICE>_TOPIC_PREFIX``, and so on (``SHARED_ENV``); docs/configuration.md lists
them per service. Fields without a shared name (``minio_secure``) read the prefixed one only.
"""

from __future__ import annotations

from copy import copy
from typing import Any

from pydantic import AliasChoices, Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

#: field -> the env var every service reads it from (before its own prefixed one)
SHARED_ENV: dict[str, str] = {
    "kafka_bootstrap": "KAFKA_BOOTSTRAP",
    "topic_prefix": "ROOMLOG_TOPIC_PREFIX",
    "database_url": "DATABASE_URL",
    "minio_endpoint": "MINIO_ENDPOINT",
    "minio_access_key": "MINIO_ACCESS_KEY",
    "minio_secret_key": "MINIO_SECRET_KEY",
    "tracing": "ROOMLOG_TRACING",
    "tracing_endpoint": "ROOMLOG_TRACING_ENDPOINT",
    "tracing_sample_ratio": "ROOMLOG_TRACING_SAMPLE_RATIO",
}


class SharedSettings(BaseSettings):
    """Gives each shared field of a subclass the aliases ``(SHARED, <env_prefix><FIELD>)``."""

    @classmethod
    def __pydantic_init_subclass__(cls, **kwargs: Any) -> None:
        super().__pydantic_init_subclass__(**kwargs)
        prefix = str(cls.model_config.get("env_prefix", ""))
        fields = cls.__pydantic_fields__
        changed = False
        for name, shared in SHARED_ENV.items():
            if name not in fields:
                continue
            alias = AliasChoices(shared, f"{prefix}{name.upper()}")
            if fields[name].validation_alias != alias:
                field = copy(fields[name])  # never touch the parent's FieldInfo
                field.validation_alias = alias
                fields[name] = field
                changed = True
        if changed:
            cls.model_rebuild(force=True)


class KafkaSettings(SharedSettings):
    """The log: bootstrap servers and the topic-name prefix (``producers.topics.Topics``)."""

    kafka_bootstrap: str = "127.0.0.1:19092"
    #: Prefix of every topic name; tests and benchmarks run on their own topics side by side.
    topic_prefix: str = ""


class DatabaseSettings(SharedSettings):
    """The Postgres read models (``db/``)."""

    database_url: str = "postgresql+asyncpg://roomlog:roomlog@127.0.0.1:15432/roomlog"


class MinioSettings(SharedSettings):
    """The object store holding recordings."""

    minio_endpoint: str = "127.0.0.1:19000"
    minio_access_key: str = "roomlog"
    minio_secret_key: SecretStr = Field(default=SecretStr("roomlog-secret"))
    minio_secure: bool = False


class MetricsSettings(SharedSettings):
    """A service's Prometheus endpoint (``observability.metrics.serve``)."""

    #: ``/metrics`` port (any path answers, so it is the health check too); 0: off.
    metrics_port: int = Field(default=0, ge=0, le=65535)
    #: The address it listens on: loopback by default; a pod sets its own IP (deploy/k8s).
    metrics_host: str = "127.0.0.1"


class TracingSettings(SharedSettings):
    """OpenTelemetry tracing (``observability/tracing.py``): off by default; on, every service
    exports its spans over OTLP/HTTP to ``tracing_endpoint`` (Jaeger, ``scripts/infra.sh``)."""

    #: read on its own (the edge agent, ``TracingSettings()``): ``ROOMLOG_TRACING``...; a
    #: service's class reads the plain names first, then its own prefixed ones
    model_config = SettingsConfigDict(env_prefix="ROOMLOG_", extra="ignore")

    tracing: bool = False
    tracing_endpoint: str = "http://127.0.0.1:14318/v1/traces"  # scripts/infra.sh's Jaeger
    #: Share of traces kept, decided by trace id (so every service keeps the same traces whole).
    tracing_sample_ratio: float = Field(default=1.0, ge=0.0, le=1.0)
