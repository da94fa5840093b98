"""The node's command runner: what it reports, and when (no Kafka: a producer that keeps what it is given)."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from typing import Any

from media_node.commands import CommandRunner
from media_node.errors import NodeError
from media_node.peers import PeerSession
from producers.envelope import Event, derived_id, utcnow
from producers.fields import SourceKind, TrackInfo
from producers.media import (
    AddSubscription,
    ApplySubscriberAnswer,
    CommandFailed,
    OpenPublisher,
    SetPaused,
    TrackStarted,
)
from producers.topics import Topics


class KeptProducer:
    def __init__(self) -> None:
        self.sent: list[tuple[str, Event]] = []

    async def send(self, topic: str, event: Event, **_: Any) -> None:
        self.sent.append((topic, event))


async def test_a_track_that_starts_late_reports_when_it_started_not_when_it_was_offered() -> None:
    producer = KeptProducer()
    runner = CommandRunner("n1", producer, Topics("t-"))  # type: ignore[arg-type]
    offered_at = utcnow() - timedelta(seconds=25)  # the publish was negotiated 25 s ago
    track = TrackInfo(source_id="screen", kind=SourceKind.SCREEN)
    command = OpenPublisher(
        event_id=derived_id("x", 0, "OpenPublisher"),
        occurred_at=offered_at,
        node_id="n1",
        room_id="r",
        deadline=offered_at + timedelta(seconds=10),
        peer_id="a",
        sdp="v=0",
        tracks=[track],
    )
    runner._causes["a/screen/single"] = (command, 1, None)
    await runner._track_started(PeerSession("r", "a"), track)
    [(topic, event)] = producer.sent
    assert topic == "t-media.results" and isinstance(event, TrackStarted)
    assert event.occurred_at > utcnow() - timedelta(seconds=2), "streams derive subscription deadlines from it"
    assert (
        event.event_id
        == TrackStarted.caused_by(command, 1, room_id="r", peer_id="a", node_id="n1", track=track).event_id
    ), "the id still follows from the command"


def _set_paused(node_id: str = "n1", deadline_s: float = 10.0, event_id: str = "c1") -> SetPaused:
    now = utcnow()
    return SetPaused(
        event_id=derived_id(event_id, 0, "SetPaused"),
        occurred_at=now,
        node_id=node_id,
        room_id="r",
        deadline=now + timedelta(seconds=deadline_s),
        peer_id="nobody",
        source_id="cam",
        paused=True,
    )


async def _settle() -> None:
    for _ in range(5):
        await asyncio.sleep(0)


async def test_commands_run_once_and_only_when_addressed_here_and_not_expired() -> None:
    producer = KeptProducer()
    runner = CommandRunner("n1", producer, Topics("t-"))  # type: ignore[arg-type]
    runner.accept(_set_paused())  # runs: the peer is unknown, so the node reports a failure
    runner.accept(_set_paused())  # the same command again: ignored
    await _settle()
    [(_, failed)] = producer.sent
    assert isinstance(failed, CommandFailed) and failed.command_type == "SetPaused"
    assert failed.code == NodeError.NOT_SUBSCRIBED and failed.peer_id == "nobody"
    runner.accept(_set_paused(node_id="n2", event_id="c2"))  # another node's
    runner.accept(_set_paused(deadline_s=-1, event_id="c3"))  # past its deadline
    await _settle()
    assert len(producer.sent) == 1, "a misaddressed or expired command must not run"
    runner.accept(_set_paused(event_id="c4"))
    await _settle()
    assert len(producer.sent) == 2


async def test_failures_are_reported_with_the_nodes_error_codes() -> None:
    producer = KeptProducer()
    runner = CommandRunner("n1", producer, Topics("t-"))  # type: ignore[arg-type]
    now = utcnow()
    common: dict[str, Any] = dict(occurred_at=now, node_id="n1", room_id="r", deadline=now + timedelta(seconds=10))
    runner.accept(
        AddSubscription(
            event_id=derived_id("f1", 0, "AddSubscription"),
            peer_id="v",
            publisher_peer_id="nobody",
            source_id="cam",
            **common,
        )
    )
    runner.accept(
        ApplySubscriberAnswer(event_id=derived_id("f2", 0, "ApplySubscriberAnswer"), peer_id="w", sdp="v=0", **common)
    )
    await _settle()
    codes = {e.command_type: e.code for _, e in producer.sent if isinstance(e, CommandFailed)}
    assert codes == {
        "AddSubscription": NodeError.SOURCE_NOT_ON_NODE,
        "ApplySubscriberAnswer": NodeError.NO_OFFER_PENDING,
    }
    assert all(e.message.startswith(("SourceNotOnNode: ", "NoOfferPending: ")) for _, e in producer.sent)
