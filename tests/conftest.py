"""Shared fixtures: the real infrastructure and per-test topic prefixes."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from producers.admin import create_topics
from producers.kafka import EventProducer
from producers.topics import Topics
from tests.harness import Infra, Service, unique


@pytest.fixture(scope="session")
def infra() -> Infra:
    return Infra.from_env()


@pytest.fixture
def prefix() -> str:
    return unique("t") + "-"


@pytest.fixture
async def topics(infra: Infra, prefix: str) -> Topics:
    await create_topics(infra.kafka, prefix, quiet=True)
    return Topics(prefix)


@pytest.fixture
async def producer(infra: Infra) -> AsyncIterator[EventProducer]:
    async with EventProducer(infra.kafka, client_id="tests") as p:
        yield p


@pytest.fixture
def services(tmp_path: Path) -> Iterator[list[Service]]:
    """Service processes a test starts; all are stopped (SIGKILL if needed) at the end."""
    started: list[Service] = []
    yield started
    for service in started:
        service.stop(timeout=10)
