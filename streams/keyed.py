"""The I/O side of a keyed agent (users, calls): state per key in a table, deadlines per
partition in a timer table, ticks visit only the keys whose deadline passed.

Same discipline as the room agent: outputs go to the batch as decided, state changes
are staged and written after the broker acknowledged the outputs (``streams/batch.py``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Generic, TypeVar

from pydantic import BaseModel

from producers.envelope import Event
from producers.rtc import Tick
from streams.batch import Batch
from streams.driver import Table
from streams.outputs import Outputs

S = TypeVar("S", bound=BaseModel)


@dataclass
class KeyedAgent(Generic[S]):
    model: type[S]
    table: Table
    timers: Table
    key_of: Callable[[Event], str | None]
    decide: Callable[[S | None, Event, str], tuple[S | None, Outputs]]
    deadline: Callable[[S | None], datetime | None]

    def load(self, batch: Batch, key: str) -> S | None:
        raw = batch.get(self.table, key)
        if raw is None:
            return None
        return raw if isinstance(raw, self.model) else self.model.model_validate(raw)

    def _timers(self, batch: Batch, partition: int) -> dict[str, str]:
        raw: dict[str, str] | None = batch.get(self.timers, f"p{partition}")
        return raw or {}

    def store(self, batch: Batch, key: str, before: S | None, after: S | None, partition: int) -> None:
        """Stage the new state (``None`` after a state forgets its key) and its deadline."""
        if after is before:
            return
        batch.put(self.table, key, partition, after)
        deadline = self.deadline(after)
        timers = self._timers(batch, partition)
        wanted = deadline.isoformat() if deadline else None
        if timers.get(key) != wanted:
            timers = dict(timers)
            if wanted is None:
                timers.pop(key, None)
            else:
                timers[key] = wanted
            batch.put(self.timers, f"p{partition}", partition, timers)

    async def on_input(self, batch: Batch, event: Event, partition: int) -> None:
        if isinstance(event, Tick):
            await self.on_tick(batch, event, partition)
            return
        key = self.key_of(event)
        if key is None:
            return
        state = self.load(batch, key)
        new_state, out = self.decide(state, event, key)
        await batch.emit(out.items)
        self.store(batch, key, state, new_state, partition)

    async def on_tick(self, batch: Batch, tick: Tick, partition: int) -> None:
        due = [key for key, at in self._timers(batch, partition).items() if datetime.fromisoformat(at) <= tick.now]
        for key in sorted(due):
            state = self.load(batch, key)
            new_state, out = self.decide(state, tick, key)
            await batch.emit(out.items)
            self.store(batch, key, state, new_state, partition)
