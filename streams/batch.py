"""One batch of inputs: outputs first, acknowledged, then state.

A driven agent (``streams/driver.py``) handles its inputs in batches. Outputs go to the
producer as they are decided; state changes are kept here. ``acknowledged`` waits
until every output is acknowledged by the broker (``acks=all``); only then does
``persist`` write the changed table entries to their changelogs, and wait for those. So a persisted
state change always has its outputs on the log before it: a crash can lose the state
change (the input is re-handled: same decision, same output ids, deduplicated
downstream) but never leave a state change whose outputs are missing. The driver
commits the inputs' offsets only after ``persist`` returned.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError

from observability import metrics
from producers.catalog import encode
from producers.kafka import trace_headers, traceparent
from producers.topics import Topics
from streams.driver import Table
from streams.outputs import Output

#: per-output counter children, looked up once per type
OUTPUTS = metrics.children(metrics.STREAMS_OUTPUTS)


class Batch:
    def __init__(self, producer: AIOKafkaProducer, topics: Topics) -> None:
        self._producer = producer
        self._topics = topics
        self._pending: list[asyncio.Future[Any]] = []
        self._pending_topics: list[str] = []
        self._dirty: dict[tuple[int, str], tuple[Table, int, Any]] = {}

    def get(self, table: Table, key: str) -> Any:
        """The entry as this batch left it, else as the table has it."""
        entry = self._dirty.get((id(table), key))
        return entry[2] if entry is not None else table.get(key)

    def put(self, table: Table, key: str, partition: int, value: Any) -> None:
        """Stage a new value (a JSON-able dict or a pydantic model; ``None`` forgets the key).
        The table keeps a model as it is (the next load needs no validation)."""
        self._dirty[(id(table), key)] = (table, partition, value)

    async def emit(self, outputs: Sequence[Output]) -> None:
        """Hand one input's outputs to the producer; they share the input's trace context."""
        parent = traceparent() if outputs else ""
        for output in outputs:
            event = output.event
            await self._send(
                self._topics.name(output.topic),
                event.key.encode(),
                encode(event),
                output.partition,
                trace_headers(event, parent),
            )
            OUTPUTS(event.type).inc()

    async def send_raw(
        self, topic: str, key: bytes | None, value: bytes | None, headers: list[tuple[str, bytes]]
    ) -> None:
        await self._send(topic, key, value, None, headers)

    async def _send(
        self,
        topic: str,
        key: bytes | None,
        value: bytes | None,
        partition: int | None,
        headers: list[tuple[str, bytes]],
    ) -> None:
        try:
            future = await self._producer.send(topic, value, key=key, partition=partition, headers=headers)
        except KafkaError as exc:
            metrics.PRODUCER_ERRORS.labels(topic, type(exc).__name__).inc()
            raise
        self._pending.append(future)
        self._pending_topics.append(topic)

    async def acknowledged(self) -> None:
        """Wait until the broker acknowledged every output handed to the producer."""
        pending, topics = self._pending, self._pending_topics
        self._pending, self._pending_topics = [], []
        if pending:
            await _all_acknowledged(pending, topics)

    async def persist(self) -> None:
        """Write the staged state changes to their tables and changelogs; wait for the acks."""
        written = []
        staged = list(self._dirty.values())
        for (_, key), (table, partition, value) in self._dirty.items():
            written.append(await table.write(partition, key, value))
        self._dirty.clear()
        if written:
            await _all_acknowledged(written, [table.changelog for table, _, _ in staged])


async def _all_acknowledged(futures: list[asyncio.Future[Any]], topics: list[str]) -> None:
    """Wait for every send; count the failed ones (``roomlog_producer_errors_total``), raise the first."""
    results = await asyncio.gather(*futures, return_exceptions=True)
    failed = [(topic, r) for topic, r in zip(topics, results, strict=True) if isinstance(r, BaseException)]
    for topic, exc in failed:
        metrics.PRODUCER_ERRORS.labels(topic, type(exc).__name__).inc()
    if failed:
        raise failed[0][1]
