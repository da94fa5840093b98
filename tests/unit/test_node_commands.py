"""The node's command runner: what it reports, and when (no Kafka: a producer that keeps what it is given)."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from media_node.commands import CommandRunner
from media_node.peers import PeerSession
from producers.envelope import Event, derived_id, utcnow
from producers.fields import SourceKind, TrackInfo
from producers.media import OpenPublisher, TrackStarted
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
    command = OpenPublisher(event_id=derived_id("x", 0, "OpenPublisher"), occurred_at=offered_at, node_id="n1",
                            room_id="r", deadline=offered_at + timedelta(seconds=10), peer_id="a", sdp="v=0",
                            tracks=[track])
    runner._causes["a/screen/single"] = (command, 1)
    await runner._track_started(PeerSession("r", "a"), track)
    [(topic, event)] = producer.sent
    assert topic == "t-media.results" and isinstance(event, TrackStarted)
    assert event.occurred_at > utcnow() - timedelta(seconds=2), "streams derive subscription deadlines from it"
    assert event.event_id == TrackStarted.caused_by(command, 1, room_id="r", peer_id="a", node_id="n1",
                                                    track=track).event_id, "the id still follows from the command"
