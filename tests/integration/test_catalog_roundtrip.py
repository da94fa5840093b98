"""Every event type goes through the real broker and comes back equal."""

from __future__ import annotations

import json
import re

from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from producers.catalog import EVENT_TYPES, decode
from producers.golden import example_payload
from producers.kafka import EventConsumer, EventProducer, partition_for
from tests.harness import Infra, read_topic, unique

TRACEPARENT = re.compile(r"^00-[0-9a-f]{32}-[0-9a-f]{16}-[0-9a-f]{2}$")


async def _create(infra: Infra, name: str, partitions: int) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=infra.kafka)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(name, partitions, 1)])
    finally:
        await admin.close()


async def test_every_event_type_round_trips(infra: Infra, producer: EventProducer) -> None:
    topic = unique("catalog-")
    await _create(infra, topic, 3)
    sent = [decode(json.dumps(example_payload(cls))) for cls in EVENT_TYPES.values()]
    for event in sent:
        await producer.send(topic, event)
    records = await read_topic(infra.kafka, topic)
    assert len(records) == len(EVENT_TYPES)
    received = {r.event().type: r for r in records}
    for event in sent:
        record = received[event.type]
        assert record.event() == event
        assert record.key == event.key.encode()
        assert record.partition == partition_for(event.key, 3)
        headers = dict(record.headers)
        assert TRACEPARENT.match(headers["traceparent"].decode())
        assert headers["type"] == event.type.encode()


async def test_addressed_consumer_reads_only_its_partition(infra: Infra, producer: EventProducer) -> None:
    from producers.media import ClosePeer

    topic = unique("addressed-")
    await _create(infra, topic, 4)
    nodes = [f"node-{i}" for i in range(8)]
    for node in nodes:
        await producer.send(
            topic, ClosePeer.new(node_id=node, room_id="r", peer_id="p", deadline="2030-01-01T00:00:00Z")
        )
    me = "node-3"
    consumer = EventConsumer(infra.kafka, [topic], group_id=None, address=me, from_beginning=True)
    await consumer.start()
    got = []
    try:
        async for received in consumer:
            got.append(received)
            break
    finally:
        await consumer.stop()
    assert [r.event.node_id for r in got] == [me]  # type: ignore[attr-defined]
    assert got[0].partition == partition_for(me, 4)
