"""deploy/k8s/wait_topics.py against the real Kafka: the streams pods' init container waits
until every registry topic and every streams changelog exists, and reports which are missing."""

from __future__ import annotations

from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from deploy.k8s import topics as k8s_topics
from deploy.k8s.wait_topics import wait
from producers.topics import Topics
from tests.harness import Infra, unique


async def test_wait_topics_waits_for_the_changelogs_too(infra: Infra, topics: Topics, prefix: str) -> None:
    app_id = unique("k8s-app")
    wanted = k8s_topics.topic_names(prefix, app_id)
    changelogs = k8s_topics.changelogs(app_id)
    assert set(changelogs) == {n for n in wanted if n.startswith(app_id)} and len(changelogs) >= 9
    # the `topics` fixture created the registry's topics (producers.admin), not the changelogs
    missing = await wait(infra.kafka, wanted, timeout_s=0, interval_s=1)
    assert sorted(missing) == sorted(changelogs)
    admin = AIOKafkaAdminClient(bootstrap_servers=infra.kafka)
    await admin.start()
    try:
        await admin.create_topics(
            [NewTopic(n, p, 1, topic_configs=k8s_topics.CHANGELOG_CONFIG) for n, p in changelogs.items()]
        )
    finally:
        await admin.close()
    assert await wait(infra.kafka, wanted, timeout_s=60, interval_s=1) == []
