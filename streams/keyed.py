"""The one shape of a stateful agent: state per key in a table, an index of deadlines,
ticks that visit only the keys whose deadline passed.

Every stateful agent (rooms, node registry, users, calls, recordings) is a ``KeyedAgent``:
``key_of`` says which key an input belongs to, ``decide`` is the pure decision
(``(state, event, key) -> (state, outputs)``), and ``deadline`` says when that key next
needs a tick (``None``: never). Same discipline everywhere: outputs go to the batch as
decided, state changes are staged and written after the broker acknowledged the outputs
(``streams/batch.py``).

Deadlines are an index derived from the state, not state of their own: kept in memory per
input partition, updated when a state change is staged, rebuilt from the state table when
its partitions are restored (``Table.on_restore``), dropped with them. They cost no
changelog record, and they are a function of the inputs handled so far, so a tick visits
the same keys live and in a replay.

Ticks on demand (docs/events.md, "Ticks"): the worker's ticker asks each agent which of
its partitions have a deadline at or before now (``due``) and publishes one ``Tick`` to
exactly those partitions of the agent's ``tick_topic``. A partition without a pending
deadline gets no tick, so an idle platform writes none. The tick goes to the same
partition as the agent's inputs, so a replay meets it at the same place among them and
reaches the same decisions.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Generic, TypeVar

from pydantic import BaseModel

from producers.envelope import Event
from producers.rtc import Tick
from streams.batch import Batch
from streams.driver import Table
from streams.outputs import Outputs

S = TypeVar("S", bound=BaseModel)


def by_field(name: str) -> Callable[[Event], str | None]:
    """``key_of`` for inputs keyed by one field (``room_id``, ``user_id``...); inputs
    without it belong to no key."""

    def key_of(event: Event) -> str | None:
        return str(getattr(event, name, "") or "") or None

    return key_of


@dataclass
class KeyedAgent(Generic[S]):
    model: type[S]
    table: Table
    #: Unused: deadlines are derived from the state (kept so agents written against the
    #: older signature, ``KeyedAgent(model, table, timers, ...)``, still build).
    timers: Table | None = None
    key_of: Callable[[Event], str | None] = field(kw_only=True)
    decide: Callable[[S | None, Event, str], tuple[S | None, Outputs]] = field(kw_only=True)
    #: When a tick may next change this key's state (``None``: no timer pending).
    deadline: Callable[[S | None], datetime | None] = field(kw_only=True)
    #: The logical input topic the ticker writes this agent's ticks to; by default the first
    #: input topic it is registered with (``Worker.keyed_agent``, ``Worker.agent``).
    tick_topic: str | None = field(default=None, kw_only=True)
    #: partition -> key -> deadline, for the partitions this member owns
    deadlines: dict[int, dict[str, datetime]] = field(default_factory=dict, kw_only=True)

    def __post_init__(self) -> None:
        self.table.on_restore.append(self._restored)
        self.table.on_forget.append(self._forgotten)

    def load(self, batch: Batch, key: str) -> S | None:
        raw = batch.get(self.table, key)
        if raw is None:
            return None
        return raw if isinstance(raw, self.model) else self.model.model_validate(raw)

    def _set_deadline(self, partition: int, key: str, at: datetime | None) -> None:
        timers = self.deadlines.setdefault(partition, {})
        if at is None:
            timers.pop(key, None)
        else:
            timers[key] = at

    def _restored(self, partition: int, key: str, value: Any) -> None:
        state = None if value is None else self.model.model_validate(value)
        self._set_deadline(partition, key, self.deadline(state))

    def _forgotten(self, partitions: set[int]) -> None:
        for partition in partitions:
            self.deadlines.pop(partition, None)

    def store(self, batch: Batch, key: str, before: S | None, after: S | None, partition: int) -> None:
        """Stage the new state (``None`` after a state forgets its key) and index its deadline
        (a staged state is persisted or the worker dies and restores)."""
        if after is before:
            return
        batch.put(self.table, key, partition, after)
        self._set_deadline(partition, key, self.deadline(after))

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
        due = sorted(key for key, at in self.deadlines.get(partition, {}).items() if at <= tick.now)
        for key in due:
            state = self.load(batch, key)
            new_state, out = self.decide(state, tick, key)
            await batch.emit(out.items)
            self.store(batch, key, state, new_state, partition)

    def due(self, now: datetime) -> list[int]:
        """The partitions this member owns with a deadline at or before ``now``."""
        if self.tick_topic is None:
            return []
        return sorted(p for p, timers in self.deadlines.items() if timers and min(timers.values()) <= now)
