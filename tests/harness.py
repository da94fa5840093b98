"""Test harness: real infrastructure from the environment, real service processes.

The servers come from ``scripts/infra.sh up`` (``make test`` sources its infra.env);
services are started as real processes (``python -m streams`` ...) with their own
topic prefix, app id and room ids, so tests do not see each other's data.
"""

from __future__ import annotations

import asyncio
import json
import os
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition

from bench.procs import Child
from producers.catalog import decode
from producers.envelope import Event
from producers.errors import DecodeError

REPO = Path(__file__).resolve().parents[1]


@dataclass(frozen=True)
class Infra:
    kafka: str
    database_url: str
    minio_endpoint: str
    minio_access_key: str
    minio_secret_key: str

    @classmethod
    def from_env(cls) -> Infra:
        missing = [k for k in ("KAFKA_BOOTSTRAP", "DATABASE_URL", "MINIO_ENDPOINT") if not os.environ.get(k)]
        if missing:
            raise RuntimeError(f"{missing} not set: run the suite with `make test` (it starts the infrastructure)")
        return cls(
            os.environ["KAFKA_BOOTSTRAP"],
            os.environ["DATABASE_URL"],
            os.environ["MINIO_ENDPOINT"],
            os.environ.get("MINIO_ACCESS_KEY", "roomlog"),
            os.environ.get("MINIO_SECRET_KEY", "roomlog-secret"),
        )


def unique(prefix: str = "t") -> str:
    return f"{prefix}{uuid.uuid4().hex[:10]}"


class Service(Child):
    """A roomlog service running as a real child process (``bench.procs.Child``, the one
    process helper), registered with the run's Prometheus while it runs."""

    def __init__(
        self, name: str, module: str, env: dict[str, str], log_path: Path, args: list[str] | None = None
    ) -> None:
        super().__init__(name, module, env, REPO, list(args or []), log_file=log_path, die_with_parent=False)

    def start(self) -> Service:
        super().start()
        self._register_target()
        return self

    @property
    def metrics_port(self) -> int | None:
        """Where the service serves Prometheus metrics: the api on its own port, the
        others on their ``ROOMLOG_*_METRICS_PORT``."""
        key = (
            "ROOMLOG_API_PORT"
            if self.module == "api"
            else next((k for k in self.env if k.endswith("_METRICS_PORT")), None)
        )
        port = int(self.env.get(key, "0") or 0) if key else 0
        return port or None

    def _target_file(self) -> Path | None:
        directory = os.environ.get("PROMETHEUS_TARGETS_DIR")
        port = self.metrics_port
        if not directory or port is None:
            return None
        return Path(directory) / f"{self.module}-{port}.json"

    def _register_target(self) -> None:
        """Tell the run's Prometheus (scripts/infra.sh, file_sd) to scrape this service."""
        path = self._target_file()
        if path is None:
            return
        labels = {"service": self.module, "name": self.name, "prefix": self.env.get("ROOMLOG_TOPIC_PREFIX", "")}
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps([{"targets": [f"127.0.0.1:{self.metrics_port}"], "labels": labels}]))
        tmp.replace(path)

    def _unregister_target(self) -> None:
        path = self._target_file()
        if path is not None:
            path.unlink(missing_ok=True)

    def kill(self) -> None:
        """SIGKILL: no shutdown hooks run. Like a crashed process, it stays in the run's
        Prometheus targets (scraped as down, ``up == 0``) until ``stop`` or a restart."""
        super().kill()

    def stop(self, timeout: float = 20) -> None:
        self._unregister_target()
        super().stop(timeout)

    def tail(self, lines: int = 40) -> str:
        return super().tail(lines)


async def end_offsets(bootstrap: str, topic: str) -> dict[TopicPartition, int]:
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    await consumer.start()
    try:
        parts = consumer.partitions_for_topic(topic) or set()
        if not parts:
            await consumer._client.force_metadata_update()  # noqa: SLF001
            parts = consumer.partitions_for_topic(topic) or set()
        tps = [TopicPartition(topic, p) for p in sorted(parts)]
        return dict(await consumer.end_offsets(tps)) if tps else {}
    finally:
        await consumer.stop()


@dataclass
class Record:
    partition: int
    offset: int
    key: bytes | None
    value: bytes
    headers: list[tuple[str, bytes]]
    #: the producer's create time (ms since the epoch)
    timestamp_ms: int = 0

    def event(self) -> Event:
        return decode(self.value)


async def read_topic(bootstrap: str, topic: str) -> list[Record]:
    """Every record currently in ``topic`` (up to the end offsets at call time)."""
    ends = await end_offsets(bootstrap, topic)
    if not any(ends.values()):
        return []
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False, auto_offset_reset="earliest")
    await consumer.start()
    out: list[Record] = []
    try:
        consumer.assign(list(ends))
        await consumer.seek_to_beginning()
        remaining = {tp for tp, end in ends.items() if end > 0}
        while remaining:
            batch = await consumer.getmany(timeout_ms=1000)
            for tp, records in batch.items():
                for r in records:
                    if r.offset < ends[tp]:
                        out.append(Record(tp.partition, r.offset, r.key, r.value or b"", list(r.headers), r.timestamp))
                if records and records[-1].offset >= ends[tp] - 1:
                    remaining.discard(tp)
    finally:
        await consumer.stop()
    return out


async def read_events(bootstrap: str, topic: str) -> list[Event]:
    events = []
    for record in await read_topic(bootstrap, topic):
        try:
            events.append(record.event())
        except DecodeError:
            continue
    return events


async def wait_for(check: Callable[[], Any], timeout: float, what: str, interval: float = 0.2) -> Any:
    """Poll an async or sync ``check`` until it returns a truthy value."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    last: Any = None
    while loop.time() < deadline:
        last = check()
        if asyncio.iscoroutine(last):
            last = await last
        if last:
            return last
        await asyncio.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}; last={last!r}"[:2000])


async def wait_for_events(
    bootstrap: str, topic: str, predicate: Callable[[list[Event]], bool], timeout: float, what: str
) -> list[Event]:
    async def check() -> list[Event] | None:
        events = await read_events(bootstrap, topic)
        return events if predicate(events) else None

    result: list[Event] = await wait_for(check, timeout, what, interval=0.3)
    return result


def of_type(events: Iterable[Event], cls: type[Any]) -> list[Any]:
    return [e for e in events if isinstance(e, cls)]


def streams_service(
    infra: Infra, prefix: str, log_dir: Path, *, app_id: str | None = None, name: str = "streams", **settings: Any
) -> Service:
    """A ``python -m streams`` worker on the test's topics (settings → ROOMLOG_STREAMS_*)."""
    env = {
        "KAFKA_BOOTSTRAP": infra.kafka,
        "DATABASE_URL": infra.database_url,
        "ROOMLOG_TOPIC_PREFIX": prefix,
        "ROOMLOG_STREAMS_APP_ID": app_id or f"{prefix}streams",
        "ROOMLOG_STREAMS_LOG_LEVEL": "info",
        "ROOMLOG_STREAMS_METRICS_PORT": str(free_port()),
    }
    env.update({f"ROOMLOG_STREAMS_{k.upper()}": str(v) for k, v in settings.items()})
    return Service(name, "streams", env, log_dir / f"{name}.log")


def node_service(infra: Infra, prefix: str, log_dir: Path, node_id: str, **settings: Any) -> Service:
    env = {
        "KAFKA_BOOTSTRAP": infra.kafka,
        "ROOMLOG_TOPIC_PREFIX": prefix,
        "ROOMLOG_NODE_NODE_ID": node_id,
        "ROOMLOG_NODE_HEARTBEAT_INTERVAL_S": "0.5",
        "ROOMLOG_NODE_IDLE_HEARTBEAT_INTERVAL_S": "0.5",
        "ROOMLOG_NODE_METRICS_PORT": str(free_port()),
    }
    env.update({f"ROOMLOG_NODE_{k.upper()}": str(v) for k, v in settings.items()})
    return Service(node_id, "media_node", env, log_dir / f"{node_id}.log")


async def streams_ready(producer: Any, infra: Infra, topics: Any, service: Service, timeout: float = 120) -> None:
    """Wait until the worker handles intents: a probe room must show up as a fact."""
    from producers.rtc import CreateRoomRequested, RoomCreated

    probe = CreateRoomRequested.new(room_id=unique("probe-"))
    await producer.send(topics.name("rtc.intents"), probe)

    def created(events: list[Event]) -> bool:
        if not service.alive():
            raise AssertionError(f"streams worker exited:\n{service.tail()}")
        return any(isinstance(e, RoomCreated) and e.causation_id == probe.event_id for e in events)

    try:
        await wait_for_events(infra.kafka, topics.name("rtc.facts"), created, timeout, "streams worker ready")
    except AssertionError as exc:
        raise AssertionError(f"{exc}\n--- worker log ---\n{service.tail()}") from None


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


API_SECRET = "test-api-secret"


def api_service(infra: Infra, prefix: str, log_dir: Path, port: int, name: str = "api", **settings: Any) -> Service:
    env = {
        "KAFKA_BOOTSTRAP": infra.kafka,
        "DATABASE_URL": infra.database_url,
        "ROOMLOG_TOPIC_PREFIX": prefix,
        "ROOMLOG_API_PORT": str(port),
        "ROOMLOG_API_API_SECRET": API_SECRET,
        "ROOMLOG_API_GATEWAY_ID": f"{name}-{port}",
    }
    env.update({f"ROOMLOG_API_{k.upper()}": str(v) for k, v in settings.items()})
    return Service(name, "api", env, log_dir / f"{name}.log")


async def http_ready(url: str, service: Service, timeout: float = 30) -> None:
    import httpx

    async def ok() -> bool:
        if not service.alive():
            raise AssertionError(f"{service.name} exited:\n{service.tail()}")
        try:
            async with httpx.AsyncClient() as client:
                return (await client.get(url, timeout=2)).status_code == 200
        except httpx.HTTPError:
            return False

    await wait_for(ok, timeout, f"{url} to answer 200")


def media_stack(infra: Infra, prefix: str, log_dir: Path, nodes: int = 1, **node_settings: Any) -> list[Service]:
    """A streams worker, ``nodes`` media nodes and an api, not started."""
    port = free_port()
    out = [streams_service(infra, prefix, log_dir, node_timeout_s=3)]
    out += [node_service(infra, prefix, log_dir, f"{prefix}n{i}", **node_settings) for i in range(nodes)]
    out.append(api_service(infra, prefix, log_dir, port))
    return out


async def mint_token(base_http: str, identity: str, grants: list[str], room: str | None = None) -> str:
    import httpx

    async with httpx.AsyncClient() as client:
        r = await client.post(
            f"{base_http}/v1/tokens",
            headers={"X-API-Secret": API_SECRET},
            json={"identity": identity, "grants": grants, "room": room, "name": identity},
        )
        assert r.status_code == 201, r.text
        return str(r.json()["token"])


async def start_media_stack(
    infra: Infra,
    topics: Any,
    prefix: str,
    producer: Any,
    services: list[Service],
    log_dir: Path,
    nodes: int = 1,
    **node_settings: Any,
) -> tuple[list[Service], str]:
    """Start streams, ``nodes`` media nodes and an api; wait until all answer.
    Returns the services (worker first, api last) and the api's base URL."""
    stack = media_stack(infra, prefix, log_dir, nodes=nodes, **node_settings)
    for service in stack:
        services.append(service.start())
    base = f"http://127.0.0.1:{stack[-1].env['ROOMLOG_API_PORT']}"
    await streams_ready(producer, infra, topics, stack[0])
    await http_ready(f"{base}/healthz", stack[-1])
    return stack, base


async def api_token(client: Any, identity: str, grants: list[str], room: str | None = None) -> str:
    """A token from the api's ``POST /v1/tokens`` (``client``: an httpx client on the api)."""
    r = await client.post(
        "/v1/tokens",
        headers={"X-API-Secret": API_SECRET},
        json={"identity": identity, "grants": grants, "room": room, "ttl_s": 600},
    )
    assert r.status_code == 201, r.text
    return str(r.json()["token"])
