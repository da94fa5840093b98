"""Follow one call through the log: every client request reaches its answer through
events linked by ``causation_id`` and sharing the request's ``correlation_id``."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from pathlib import Path

from client import LocalTrack, Room
from client.synthetic import PatternVideoTrack
from producers.envelope import Event
from producers.kafka import EventProducer
from producers.media import AddSubscription, OpenPublisher, PublisherAnswered, SubscriberOffered
from producers.rtc import JoinRequested, Notification, PublishRequested, SubscribeRequested
from producers.topics import Topics
from tests.e2e.media import Watcher, advancing
from tests.harness import (
    Infra,
    Service,
    mint_token,
    read_events,
    start_media_stack,
    unique,
    wait_for,
)


def chain(event: Event, index: dict[uuid.UUID, Event]) -> list[Event]:
    """The event and its causes, up to the root."""
    out = [event]
    while out[-1].causation_id is not None and out[-1].causation_id in index:
        out.append(index[out[-1].causation_id])
    return out


async def test_requests_reach_their_answers_through_the_log(
    infra: Infra, topics: Topics, prefix: str, producer: EventProducer, services: list[Service], tmp_path: Path
) -> None:
    stack, base = await start_media_stack(infra, topics, prefix, producer, services, tmp_path)
    room_id = unique("cause-")
    ws_url = base.replace("http", "ws") + "/v1/rtc"
    rooms: list[Room] = []
    try:
        for code in (1, 2):
            token = await mint_token(base, f"user{code}", ["join", "publish", "subscribe"], room_id)
            rooms.append(await Room.connect(ws_url, token, room_id))
            await rooms[-1].publish([LocalTrack(PatternVideoTrack(code), f"cam-{code}", "camera")])
        watcher = Watcher()
        watcher.attach(rooms[1])
        # an explicit subscribe: drop the automatic subscription to cam-1 and ask again
        await rooms[1].unsubscribe("cam-1")
        await asyncio.sleep(0.5)
        await rooms[1].subscribe("cam-1")
        await wait_for(lambda: advancing(watcher.video.get(1, [])), 30, "the re-subscribed video")
        watcher.stop()
    finally:
        for room in rooms:
            with contextlib.suppress(Exception):
                await room.close()

    events: list[Event] = []
    for logical in (
        "rtc.intents",
        "media.commands",
        "media.results",
        "rtc.facts",
        "gateway.notifications",
        "media.nodes",
    ):
        events += await read_events(infra.kafka, topics.name(logical))
    index = {e.event_id: e for e in events}
    mine = [e for e in events if getattr(e, "room_id", None) == room_id]
    notes = [e for e in mine if isinstance(e, Notification)]

    joins = [e for e in mine if isinstance(e, JoinRequested)]
    assert len(joins) == 2
    for join in joins:
        joined = [n for n in notes if n.message["type"] == "joined" and n.message["request_id"] == join.correlation_id]
        assert len(joined) == 1, join
        assert chain(joined[0], index)[-1] is join, "joined traces back to the join request"
        assert all(e.correlation_id == join.correlation_id for e in chain(joined[0], index))

    publishes = [e for e in mine if isinstance(e, PublishRequested)]
    assert len(publishes) == 2
    for publish in publishes:
        answers = [
            n
            for n in notes
            if n.message["type"] == "publisher-answer" and n.message["request_id"] == publish.correlation_id
        ]
        assert len(answers) == 1
        path = [type(e) for e in chain(answers[0], index)]
        assert path == [Notification, PublisherAnswered, OpenPublisher, PublishRequested]

    subscribe = next(e for e in mine if isinstance(e, SubscribeRequested))
    offers = [
        n for n in notes if n.message["type"] == "subscriber-offer" and n.correlation_id == subscribe.correlation_id
    ]
    assert offers, "the subscribe request produced a subscriber offer"
    path = chain(offers[-1], index)
    assert [type(e) for e in path] == [Notification, SubscriberOffered, AddSubscription, SubscribeRequested]
    assert path[-1] is subscribe and isinstance(path[2], AddSubscription) and path[2].source_id == "cam-1"
