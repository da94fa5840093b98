"""The driven agents' loop without Kafka: tables, batches across a rebalance, commits."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Sequence
from typing import Any

from aiokafka import TopicPartition
from aiokafka.structs import ConsumerRecord

from streams.driver import DrivenAgent, DriverSettings, Table, _Runner

TP0 = TopicPartition("in", 0)
TP1 = TopicPartition("in", 1)


class FakeProducer:
    def __init__(self) -> None:
        self.sent: list[tuple[str, bytes | None, bytes | None, int | None]] = []

    async def send(
        self,
        topic: str,
        value: bytes | None,
        key: bytes | None = None,
        partition: int | None = None,
        headers: Any = None,
    ) -> asyncio.Future[None]:
        self.sent.append((topic, key, value, partition))
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        future.set_result(None)
        return future


class FakeConsumer:
    def __init__(self, assigned: set[TopicPartition]) -> None:
        self.assigned = assigned
        self.seeks: list[tuple[TopicPartition, int]] = []
        self.commits: list[dict[TopicPartition, int]] = []

    def assignment(self) -> set[TopicPartition]:
        return self.assigned

    def seek(self, tp: TopicPartition, offset: int) -> None:
        self.seeks.append((tp, offset))

    async def commit(self, offsets: dict[TopicPartition, int]) -> None:
        self.commits.append(dict(offsets))


def record(tp: TopicPartition, offset: int) -> ConsumerRecord:
    return ConsumerRecord(tp.topic, tp.partition, offset, 0, 0, b"k", b"v", None, 1, 1, [])


class Done:
    def __init__(self, log: list[str]) -> None:
        self.log = log

    async def acknowledged(self) -> None:
        self.log.append("outputs acknowledged")

    async def persist(self) -> None:
        self.log.append("state persisted")


def runner(handled: list[int], log: list[str]) -> _Runner:
    async def handle(records: Sequence[ConsumerRecord]) -> Done:
        handled.extend(r.offset for r in records)
        return Done(log)

    agent = DrivenAgent("test", ["in"], [], handle)
    r = _Runner(agent, DriverSettings(bootstrap="unused", app_id="app"))
    r.consumer = FakeConsumer({TP0, TP1})  # type: ignore[assignment]
    r.owned = {TP0, TP1}
    return r


async def test_table_writes_go_to_the_changelog_partition_and_forget_drops_a_partition() -> None:
    producer = FakeProducer()
    table = Table("rooms", "app-rooms-changelog", 4)
    table.bind(producer)  # type: ignore[arg-type]
    await table.write(0, "r1", {"a": 1})
    await table.write(1, "r2", {"b": 2})
    await table.write(1, "r3", {"c": 3})
    await table.write(1, "r3", None)  # a tombstone
    assert producer.sent[0] == ("app-rooms-changelog", json.dumps("r1").encode(), b'{"a":1}', 0)
    assert producer.sent[-1] == ("app-rooms-changelog", json.dumps("r3").encode(), None, 1)
    assert table.data == {"r1": {"a": 1}, "r2": {"b": 2}}
    table.forget({1})
    assert table.data == {"r1": {"a": 1}}


async def test_a_batch_is_committable_only_after_it_is_on_the_log() -> None:
    handled: list[int] = []
    log: list[str] = []
    r = runner(handled, log)
    await r._handle(r.generation, {TP0: [record(TP0, 7), record(TP0, 8)], TP1: [record(TP1, 3)]})
    assert handled == [7, 8, 3] and log == ["outputs acknowledged", "state persisted"]
    assert r.handled == {TP0: 9, TP1: 4}
    await r._commit()
    assert r.consumer.commits == [{TP0: 9, TP1: 4}]  # type: ignore[union-attr]


async def test_records_fetched_across_a_rebalance_are_sought_back_not_handled() -> None:
    handled: list[int] = []
    log: list[str] = []
    r = runner(handled, log)
    generation = r.generation
    r.generation += 1  # a rebalance happened while getmany waited
    await r._handle(generation, {TP0: [record(TP0, 5), record(TP0, 6)]})
    assert handled == [] and r.handled == {}
    assert r.consumer.seeks == [(TP0, 5)]  # type: ignore[union-attr]


async def test_records_of_a_partition_no_longer_owned_are_not_handled() -> None:
    handled: list[int] = []
    r = runner(handled, [])
    r.owned = {TP1}
    r.consumer.assigned = {TP1}  # type: ignore[union-attr]
    await r._handle(r.generation, {TP0: [record(TP0, 5)]})
    assert handled == []
    assert r.consumer.seeks == []  # type: ignore[union-attr]


async def test_commit_skips_partitions_no_longer_owned() -> None:
    r = runner([], [])
    r.handled = {TP0: 10, TP1: 20}
    r.owned = {TP1}
    await r._commit()
    assert r.consumer.commits == [{TP1: 20}]  # type: ignore[union-attr]
