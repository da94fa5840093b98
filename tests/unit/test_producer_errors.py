"""``roomlog_producer_errors_total``: a send the broker refused is counted by topic and
error, in the services' producer (producers/kafka.py) and in a streams batch
(streams/batch.py: every failed output counted, the first failure raised)."""

from __future__ import annotations

import asyncio

import pytest
from aiokafka.errors import KafkaTimeoutError, NotLeaderForPartitionError
from prometheus_client import REGISTRY

from producers.kafka import _count_failure
from streams.batch import _all_acknowledged


def errors(topic: str, error: str) -> float:
    return REGISTRY.get_sample_value("roomlog_producer_errors_total", {"topic": topic, "error": error}) or 0.0


async def test_a_refused_send_is_counted_and_a_good_one_is_not() -> None:
    loop = asyncio.get_running_loop()
    failed, ok = loop.create_future(), loop.create_future()
    failed.set_exception(KafkaTimeoutError())
    ok.set_result(None)
    before = errors("t-errs.a", "KafkaTimeoutError")
    _count_failure("t-errs.a", failed)
    _count_failure("t-errs.a", ok)
    assert errors("t-errs.a", "KafkaTimeoutError") == before + 1
    failed.exception()  # retrieved


async def test_a_batch_counts_every_failed_output_and_raises_the_first() -> None:
    loop = asyncio.get_running_loop()
    futures = [loop.create_future() for _ in range(3)]
    futures[0].set_result(None)
    futures[1].set_exception(NotLeaderForPartitionError())
    futures[2].set_exception(NotLeaderForPartitionError())
    with pytest.raises(NotLeaderForPartitionError):
        await _all_acknowledged(futures, ["t-errs.b", "t-errs.c", "t-errs.c"])
    assert errors("t-errs.b", "NotLeaderForPartitionError") == 0
    assert errors("t-errs.c", "NotLeaderForPartitionError") == 2
