"""One batch of inputs: outputs first, acknowledged, then state.

The agents handle inputs in small batches (``stream.take_events``). Outputs go to the
producer as they are decided; state changes are kept here. ``commit`` waits until
every output is acknowledged by the broker (``acks=all``) and only then writes the
changed table entries to their changelogs. So a persisted state change always has
its outputs on the log before it: a crash can lose the state change (the input is
re-handled: same decision, same output ids, deduplicated downstream) but never
leave a state change whose outputs are missing. Faust acknowledges the inputs after
the batch returns, and commits their offsets only after flushing the producer.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

import faust
from pydantic import BaseModel

from observability import metrics
from producers.catalog import encode
from producers.kafka import trace_headers, traceparent
from producers.topics import Topics
from streams.outputs import Output


class Batch:
    def __init__(self, producer: Any, topics: Topics) -> None:
        self._producer = producer
        self._topics = topics
        self._pending: list[asyncio.Future[Any]] = []
        self._dirty: dict[tuple[int, str], tuple[faust.Table[str, Any], int, Any]] = {}

    def get(self, table: faust.Table[str, Any], key: str) -> Any:
        """The entry as this batch left it, else as the table has it."""
        entry = self._dirty.get((id(table), key))
        return entry[2] if entry is not None else table.get(key)

    def put(self, table: faust.Table[str, Any], key: str, partition: int, value: Any) -> None:
        """Stage a new value (a JSON-able dict or a pydantic model)."""
        self._dirty[(id(table), key)] = (table, partition, value)

    async def emit(self, outputs: Sequence[Output]) -> None:
        """Hand one input's outputs to the producer; they share the input's trace context."""
        parent = traceparent() if outputs else ""
        for output in outputs:
            event = output.event
            self._pending.append(await self._producer.send(
                self._topics.name(output.topic), event.key.encode(), encode(event), output.partition, None,
                trace_headers(event, parent)))
            metrics.STREAMS_OUTPUTS.labels(event.type).inc()

    async def send_raw(self, topic: str, key: bytes | None, value: bytes | None,
                       headers: list[tuple[str, bytes]]) -> None:
        self._pending.append(await self._producer.send(topic, key, value, None, None, headers))

    async def commit(self) -> None:
        if self._pending:
            await asyncio.gather(*self._pending)
        for (_, key), (table, partition, value) in self._dirty.items():
            if isinstance(value, BaseModel):
                value = value.model_dump(mode="json")
            if value is None:  # a forgotten key (a finished call): drop it, tombstone in the changelog
                table.data.pop(key, None)
            else:
                table.data[key] = value
            table.send_changelog(partition, key, value)
        self._pending.clear()
        self._dirty.clear()
