"""aiokafka wrappers: an idempotent ``EventProducer`` and a typed ``EventConsumer``.

The producer uses ``acks=all``, idempotence and a small linger, keys every record
with the event's partition key and adds a W3C ``traceparent`` header (the current span's
when tracing is on, ``observability/tracing.py``; ``send`` is then a PRODUCER span). The consumer
yields parsed events, commits after the caller has handled each one, sends payloads
it cannot parse to the topic's dead-letter companion, and can read only the
partition a given id maps to (for addressed topics: gateways, media nodes).
"""

from __future__ import annotations

import asyncio
import logging
import secrets
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRecord, TopicPartition
from aiokafka.errors import KafkaError
from aiokafka.partitioner import murmur2
from aiokafka.structs import RecordMetadata

from observability import metrics, tracing
from producers.catalog import decode, encode
from producers.envelope import Event
from producers.errors import DecodeError

log = logging.getLogger(__name__)

Headers = list[tuple[str, bytes]]


def partition_for(key: str, partitions: int) -> int:
    """The partition Kafka's default partitioner picks for ``key`` (murmur2)."""
    return int(murmur2(key.encode()) & 0x7FFFFFFF) % partitions


def traceparent() -> str:
    """W3C trace context of the current span, or a fresh root context."""
    carrier: dict[str, str] = {}
    tracing.PROPAGATOR.inject(carrier)
    return carrier.get("traceparent") or f"00-{secrets.token_hex(16)}-{secrets.token_hex(8)}-01"


def trace_headers(event: Event, parent: str | None = None) -> Headers:
    """Headers of a record: trace context (``parent`` or the current one), type, version."""
    parent = parent or traceparent()
    return [
        ("traceparent", parent.encode()),
        ("type", event.type.encode()),
        ("schema_version", str(event.schema_version).encode()),
    ]


class EventProducer:
    """Produces roomlog events. Use as an async context manager or start()/stop()."""

    def __init__(
        self, bootstrap: str, *, client_id: str = "roomlog", linger_ms: int = 5, max_batch_size: int = 16384
    ) -> None:
        #: ``max_batch_size``: the bytes one partition's batch holds (aiokafka keeps one open
        #: batch per partition; a send to a full one waits for it to drain, up to
        #: ``request_timeout_ms``, then raises ``KafkaTimeoutError``). A gateway with
        #: thousands of sockets passes a larger one (``ApiSettings.producer_batch_bytes``).
        self._producer = AIOKafkaProducer(
            bootstrap_servers=bootstrap,
            client_id=client_id,
            acks="all",
            enable_idempotence=True,
            linger_ms=linger_ms,
            max_batch_size=max_batch_size,
        )

    async def start(self) -> None:
        await self._producer.start()

    async def stop(self) -> None:
        await self._producer.stop()

    async def __aenter__(self) -> EventProducer:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    async def send(self, topic: str, event: Event, *, partition: int | None = None) -> RecordMetadata:
        """Send and wait for the broker's acknowledgement."""
        if not tracing.enabled():
            fut = await self.send_soon(topic, event, partition=partition)
            return await fut
        with tracing.produced(f"send {event.type}", event, topic=topic):
            fut = await self.send_soon(topic, event, partition=partition)
            return await fut

    async def send_soon(self, topic: str, event: Event, *, partition: int | None = None):  # type: ignore[no-untyped-def]
        """Queue a send; returns a future resolving to the record metadata."""
        return await self._send(
            topic, value=encode(event), key=event.key.encode(), partition=partition, headers=trace_headers(event)
        )

    async def _send(  # type: ignore[no-untyped-def]
        self, topic: str, *, value: bytes, key: bytes | None, partition: int | None, headers: Headers
    ):
        """``AIOKafkaProducer.send``, counting failures in ``roomlog_producer_errors_total``."""
        try:
            future = await self._producer.send(topic, value=value, key=key, partition=partition, headers=headers)
        except KafkaError as exc:
            metrics.PRODUCER_ERRORS.labels(topic, type(exc).__name__).inc()
            raise
        future.add_done_callback(lambda f: _count_failure(topic, f))
        return future

    async def send_raw(
        self,
        topic: str,
        value: bytes,
        *,
        key: bytes | None = None,
        headers: Headers | None = None,
        partition: int | None = None,
    ) -> RecordMetadata:
        fut = await self._send(topic, value=value, key=key, headers=headers or [], partition=partition)
        return await fut

    async def partitions(self, topic: str) -> int:
        return len(await self._producer.partitions_for(topic))

    async def flush(self) -> None:
        await self._producer.flush()


def _count_failure(topic: str, future: asyncio.Future[RecordMetadata]) -> None:
    if not future.cancelled() and future.exception() is not None:
        metrics.PRODUCER_ERRORS.labels(topic, type(future.exception()).__name__).inc()


@dataclass(frozen=True)
class Received:
    """One consumed event with where it came from."""

    event: Event
    topic: str
    partition: int
    offset: int
    timestamp_ms: int
    headers: Sequence[tuple[str, bytes]]


class EventConsumer:
    """Typed async iteration over one or more topics.

    ``async for received in consumer`` commits a record's offset only after the loop
    body for it has finished (on the next iteration), so a crash re-delivers it.
    With ``address=(id, partitions)`` on a single topic, reads only the partition that
    ``id`` maps to and skips records whose key is another id.
    """

    def __init__(
        self,
        bootstrap: str,
        topics: Sequence[str],
        *,
        group_id: str | None,
        address: str | None = None,
        from_beginning: bool = False,
        dead_letters: EventProducer | None = None,
        client_id: str = "roomlog",
        types: frozenset[str] | None = None,
    ) -> None:
        self._topics = list(topics)
        #: Only events of these types are decoded and yielded (by the ``type`` header):
        #: a reader of a busy topic that needs a few of its types skips the rest undecoded.
        self._types = types
        self._address = address
        self._dead_letters = dead_letters
        self._consumer = AIOKafkaConsumer(
            bootstrap_servers=bootstrap,
            group_id=group_id,
            client_id=client_id,
            enable_auto_commit=False,
            auto_offset_reset="earliest" if from_beginning else "latest",
        )
        self._pending: ConsumerRecord[bytes, bytes] | None = None

    async def start(self) -> None:
        await self._consumer.start()
        if self._address is None:
            self._consumer.subscribe(self._topics)
            return
        assigned: list[TopicPartition] = []
        for topic in self._topics:
            parts = await self._wait_partitions(topic)
            assigned.append(TopicPartition(topic, partition_for(self._address, len(parts))))
        self._consumer.assign(assigned)

    async def _wait_partitions(self, topic: str) -> set[int]:
        parts = self._consumer.partitions_for_topic(topic)
        if not parts:
            await self._consumer._client.force_metadata_update()  # noqa: SLF001
            parts = self._consumer.partitions_for_topic(topic)
        if not parts:
            raise RuntimeError(f"topic {topic!r} does not exist; run `python -m producers.admin create-topics`")
        return set(parts)

    async def stop(self) -> None:
        await self._commit_pending()
        await self._consumer.stop()

    async def __aenter__(self) -> EventConsumer:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    async def seek_to_end(self) -> None:
        await self._consumer.seek_to_end()

    async def _commit_pending(self) -> None:
        record, self._pending = self._pending, None
        if record is None or self._consumer._group_id is None:  # noqa: SLF001
            return
        tp = TopicPartition(record.topic, record.partition)
        await self._consumer.commit({tp: record.offset + 1})

    async def __aiter__(self) -> AsyncIterator[Received]:
        while True:
            record = await self._consumer.getone()
            await self._commit_pending()
            if (
                self._address is not None
                and record.key is not None
                and (record.key.decode(errors="replace") != self._address)
            ):
                self._pending = record
                continue
            if self._types is not None and _type_of(record) not in (None, *self._types):
                self._pending = record
                continue
            try:
                event = decode(record.value or b"")
            except DecodeError as exc:
                await self._dead_letter(record, exc)
                self._pending = record
                continue
            self._pending = record
            yield Received(event, record.topic, record.partition, record.offset, record.timestamp, record.headers)

    async def _dead_letter(self, record: ConsumerRecord[bytes, bytes], exc: DecodeError) -> None:
        log.warning("dead letter", extra={"topic": record.topic, "offset": record.offset, "reason": exc.reason})
        metrics.CONSUMER_DEAD_LETTERS.labels(record.topic, exc.reason).inc()
        if self._dead_letters is None:
            return
        await self._dead_letters.send_raw(
            f"{record.topic}.dlq",
            record.value or b"",
            key=record.key,
            headers=dead_letter_headers(record.topic, record.partition, record.offset, exc),
        )


def _type_of(record: ConsumerRecord[bytes, bytes]) -> str | None:
    for name, value in record.headers or ():
        if name == "type":
            return bytes(value).decode(errors="replace")
    return None  # no header: decoded (a record written without ``trace_headers``)


def dead_letter_headers(topic: str, partition: int, offset: int, exc: DecodeError) -> Headers:
    return [
        ("dlq.reason", exc.reason.encode()),
        ("dlq.detail", exc.detail[:1000].encode()),
        ("dlq.source", f"{topic}/{partition}/{offset}".encode()),
    ]
