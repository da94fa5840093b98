"""The shared settings mixins (``producers/settings.py``): every service reads its Kafka,
topic, Postgres and MinIO settings from the shared env var first, then its prefixed one."""

from __future__ import annotations

import pytest
from pydantic_settings import BaseSettings

from api.settings import ApiSettings
from media_node.settings import NodeSettings
from recorder.settings import RecorderSettings
from streams.settings import StreamsSettings

SERVICES: list[tuple[type[BaseSettings], str]] = [
    (ApiSettings, "ROOMLOG_API_"),
    (StreamsSettings, "ROOMLOG_STREAMS_"),
    (NodeSettings, "ROOMLOG_NODE_"),
    (RecorderSettings, "ROOMLOG_RECORDER_"),
]
SHARED = ("KAFKA_BOOTSTRAP", "ROOMLOG_TOPIC_PREFIX", "DATABASE_URL", "MINIO_ENDPOINT", "MINIO_SECRET_KEY")


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    import os

    for name in list(os.environ):
        if name.startswith("ROOMLOG_") or name in SHARED:
            monkeypatch.delenv(name)


@pytest.mark.parametrize(("cls", "prefix"), SERVICES)
def test_shared_fields_read_the_prefixed_then_the_shared_env_var(
    cls: type[BaseSettings], prefix: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    s = cls()
    assert (getattr(s, "kafka_bootstrap"), getattr(s, "topic_prefix")) == ("127.0.0.1:19092", "")  # noqa: B009
    monkeypatch.setenv(f"{prefix}KAFKA_BOOTSTRAP", "own:1")
    monkeypatch.setenv(f"{prefix}TOPIC_PREFIX", "own-")
    s = cls()
    assert (getattr(s, "kafka_bootstrap"), getattr(s, "topic_prefix")) == ("own:1", "own-")  # noqa: B009
    monkeypatch.setenv("KAFKA_BOOTSTRAP", "shared:1")
    monkeypatch.setenv("ROOMLOG_TOPIC_PREFIX", "shared-")
    s = cls()
    assert (getattr(s, "kafka_bootstrap"), getattr(s, "topic_prefix")) == ("shared:1", "shared-")  # noqa: B009
    if "database_url" in cls.model_fields:
        monkeypatch.setenv(f"{prefix}DATABASE_URL", "postgresql://own")
        assert getattr(cls(), "database_url") == "postgresql://own"  # noqa: B009
        monkeypatch.setenv("DATABASE_URL", "postgresql://shared")
        assert getattr(cls(), "database_url") == "postgresql://shared"  # noqa: B009
    if "minio_endpoint" in cls.model_fields:
        monkeypatch.setenv(f"{prefix}MINIO_ENDPOINT", "own:9000")
        monkeypatch.setenv(f"{prefix}MINIO_SECURE", "true")
        monkeypatch.setenv(f"{prefix}MINIO_SECRET_KEY", "own-key")
        s = cls()
        assert getattr(s, "minio_endpoint") == "own:9000" and getattr(s, "minio_secure") is True  # noqa: B009
        assert getattr(s, "minio_secret_key").get_secret_value() == "own-key"  # noqa: B009
        monkeypatch.setenv("MINIO_ENDPOINT", "shared:9000")
        assert getattr(cls(), "minio_endpoint") == "shared:9000"  # noqa: B009


def test_one_service_prefix_does_not_leak_into_another(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ROOMLOG_API_KAFKA_BOOTSTRAP", "api:1")
    assert ApiSettings().kafka_bootstrap == "api:1"
    assert StreamsSettings().kafka_bootstrap == "127.0.0.1:19092"
    assert NodeSettings().kafka_bootstrap == "127.0.0.1:19092"
