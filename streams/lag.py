"""Consumer lag of a driven agent, per input partition, for Prometheus.

``roomlog_streams_consumer_lag_records`` is the partition's high watermark (as the last
fetch response reported it) minus the agent's next offset to handle.
``roomlog_streams_consumer_lag_seconds`` is 0 while the agent has handled all it knows
of; otherwise the time since the newer of (the timestamp of the last record it handled,
the last moment it was caught up). So a stuck agent's lag grows one second per second,
and an agent that wakes up after an idle hour is not reported an hour behind.

Both are computed when Prometheus scrapes (``Gauge.set_function``): a handler blocked
in the middle of a batch cannot freeze them. The driver calls ``handled`` after each
batch, ``idle`` once per loop and ``forget`` when partitions are revoked; each
partition's gauge children are created once, at assignment.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable

from aiokafka import TopicPartition

from observability import metrics

Highwater = Callable[[TopicPartition], int | None]


class PartitionLag:
    def __init__(self, highwater: Highwater, tp: TopicPartition, clock: Callable[[], float] = time.time) -> None:
        self._highwater = highwater
        self.tp = tp
        self.clock = clock
        #: the next offset the agent handles (None until it handled one)
        self.next_offset: int | None = None
        #: wall-clock seconds: the last handled record's timestamp, the last time caught up
        self.handled_at = 0.0
        self.caught_up_at = clock()

    def records(self) -> float:
        highwater = self._highwater(self.tp)
        if highwater is None or self.next_offset is None:
            return 0.0
        return float(max(0, highwater - self.next_offset))

    def seconds(self) -> float:
        if self.records() == 0:
            return 0.0
        return max(0.0, self.clock() - max(self.handled_at, self.caught_up_at))

    def handled(self, next_offset: int, timestamp_ms: int) -> None:
        self.next_offset = next_offset
        self.handled_at = timestamp_ms / 1000
        if self.records() == 0:
            self.caught_up_at = self.clock()


class AgentLag:
    """The lag of one agent's owned partitions."""

    def __init__(self, agent: str, highwater: Highwater) -> None:
        self.agent = agent
        self._highwater = highwater
        self.partitions: dict[TopicPartition, PartitionLag] = {}

    def assigned(self, tps: Iterable[TopicPartition]) -> None:
        for tp in tps:
            if tp in self.partitions:
                continue
            lag = self.partitions[tp] = PartitionLag(self._highwater, tp)
            labels = (self.agent, tp.topic, str(tp.partition))
            metrics.STREAMS_LAG_RECORDS.labels(*labels).set_function(lag.records)
            metrics.STREAMS_LAG_SECONDS.labels(*labels).set_function(lag.seconds)

    def forget(self, tps: Iterable[TopicPartition]) -> None:
        for tp in tps:
            if self.partitions.pop(tp, None) is None:
                continue
            labels = (self.agent, tp.topic, str(tp.partition))
            metrics.STREAMS_LAG_RECORDS.remove(*labels)
            metrics.STREAMS_LAG_SECONDS.remove(*labels)

    def handled(self, tp: TopicPartition, next_offset: int, timestamp_ms: int) -> None:
        lag = self.partitions.get(tp)
        if lag is not None:
            lag.handled(next_offset, timestamp_ms)

    def idle(self) -> None:
        """Once per loop: partitions with nothing left to handle are caught up now."""
        now = time.time()
        for lag in self.partitions.values():
            if lag.records() == 0:
                lag.caught_up_at = now
