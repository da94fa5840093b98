"""Fixtures of the integration tests that talk to the api."""

from __future__ import annotations

from pathlib import Path

import pytest

from producers.kafka import EventProducer
from producers.topics import Topics
from tests.harness import Infra, Service, api_service, free_port, http_ready, streams_ready, streams_service


@pytest.fixture
async def stack(
    infra: Infra, topics: Topics, prefix: str, producer: EventProducer, services: list[Service], tmp_path: Path
) -> str:
    """A streams worker and an api on this test's topics; the api's base URL."""
    worker = streams_service(infra, prefix, tmp_path).start()
    port = free_port()
    api = api_service(infra, prefix, tmp_path, port).start()
    services += [worker, api]
    await streams_ready(producer, infra, topics, worker)
    base = f"http://127.0.0.1:{port}"
    await http_ready(f"{base}/healthz", api)
    return base
