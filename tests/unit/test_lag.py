"""Consumer lag of a driven agent (streams/lag.py): records and seconds per partition,
as Prometheus reads them."""

from __future__ import annotations

from aiokafka import TopicPartition
from prometheus_client import REGISTRY

from streams.lag import AgentLag, PartitionLag

TP = TopicPartition("t-rtc.intents", 3)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_lag_is_zero_until_known_and_when_caught_up() -> None:
    highwater: dict[TopicPartition, int] = {}
    clock = Clock()
    lag = PartitionLag(highwater.get, TP, clock)
    assert (lag.records(), lag.seconds()) == (0, 0)
    highwater[TP] = 10
    lag.handled(10, 999_000)
    assert (lag.records(), lag.seconds()) == (0, 0)


def test_a_stuck_agent_falls_behind_one_second_per_second() -> None:
    highwater = {TP: 10}
    clock = Clock()
    lag = PartitionLag(highwater.get, TP, clock)
    lag.handled(10, 999_500)  # caught up at 1000.0
    highwater[TP] = 25  # 15 new records fetched, not handled
    clock.now = 1004.0
    assert lag.records() == 15
    assert lag.seconds() == 4.0
    clock.now = 1010.0
    assert lag.seconds() == 10.0
    # it handles 5 of them, the last one written at 1006.5: 3.5 s behind that record
    lag.handled(15, 1_006_500)
    assert lag.records() == 10 and lag.seconds() == 3.5


def test_agent_lag_children_follow_the_assignment() -> None:
    highwater = {TP: 7}
    agent = AgentLag("rooms-test-lag", highwater.get)
    agent.assigned([TP])
    agent.handled(TP, 4, 0)
    labels = {"agent": "rooms-test-lag", "topic": TP.topic, "partition": "3"}
    assert REGISTRY.get_sample_value("roomlog_streams_consumer_lag_records", labels) == 3
    assert REGISTRY.get_sample_value("roomlog_streams_consumer_lag_seconds", labels) > 0
    agent.forget([TP])
    assert REGISTRY.get_sample_value("roomlog_streams_consumer_lag_records", labels) is None
