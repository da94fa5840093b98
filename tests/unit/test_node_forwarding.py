"""The node's command runner and peers forwarding real media, without sockets.

A publisher (aiortc, encoding ``PatternVideoTrack`` frames as VP8) and a viewer (aiortc,
decoding) talk to the node's ``CommandRunner`` exactly as streams would make it: commands
in, results out (``KeptProducer``). Their connections run over ``memory_transport`` (real
DTLS/SRTP/RTP through asyncio queues), so the node's taps, forwarder and legs run for real
and the viewer's decoded pictures prove what was forwarded: the publisher's code, with
its frame counter advancing.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any, TypeVar

import pytest
from aiortc import RTCConfiguration, RTCPeerConnection, RTCSessionDescription
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack
from av import VideoFrame

from client.synthetic import PatternVideoTrack, decode_pattern
from media_node.commands import CommandRunner
from producers.envelope import Event, derived_id, utcnow
from producers.fields import SourceKind, TrackInfo
from producers.media import (
    AddSubscription,
    ApplySubscriberAnswer,
    ClosePeer,
    CommandFailed,
    NodeCommand,
    OpenPublisher,
    PublisherAnswered,
    SubscriberOffered,
    TrackStarted,
)
from producers.topics import Topics
from tests.unit.memory_transport import MemoryNetwork, every_nth, memory_network
from tests.unit.test_node_commands import KeptProducer

CODE = 0x2A
E = TypeVar("E", bound=Event)
_ids = iter(range(1_000_000))


def command(kind: type[NodeCommand], node_id: str = "n1", deadline_s: float = 10.0, **fields: Any) -> Any:
    now = utcnow()
    return kind(
        event_id=derived_id(f"cmd{next(_ids)}", 0, kind.__name__),
        occurred_at=now,
        node_id=node_id,
        room_id="r",
        deadline=now + timedelta(seconds=deadline_s),
        **fields,
    )


async def eventually(condition: Callable[[], bool], timeout: float = 20.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not met within {timeout:g} s")
        await asyncio.sleep(0.01)


async def result(producer: KeptProducer, kind: type[E], timeout: float = 20.0) -> E:
    found: list[E] = []

    def seen() -> bool:
        found[:] = [e for _, e in producer.sent if isinstance(e, kind)]
        return bool(found)

    await eventually(seen, timeout, f"a {kind.__name__} result")
    return found[-1]


@dataclass
class Viewer:
    pc: RTCPeerConnection
    offer_sdp: str
    codes: list[int] = field(default_factory=list)
    counters: list[int] = field(default_factory=list)
    reader: asyncio.Task[None] | None = None

    async def read(self, track: MediaStreamTrack) -> None:
        with contextlib.suppress(MediaStreamError):
            while True:
                frame = await track.recv()
                assert isinstance(frame, VideoFrame)
                code, counter = decode_pattern(frame)
                self.codes.append(code)
                self.counters.append(counter)


@dataclass
class Stage:
    network: MemoryNetwork
    producer: KeptProducer
    runner: CommandRunner
    pcs: list[RTCPeerConnection] = field(default_factory=list)

    def connection(self) -> RTCPeerConnection:
        pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
        self.pcs.append(pc)
        return pc

    async def publish(self, peer_id: str = "pub", source_id: str = "cam") -> RTCPeerConnection:
        pc = self.connection()
        transceiver = pc.addTransceiver(PatternVideoTrack(CODE, fps=30), direction="sendonly")
        await pc.setLocalDescription(await pc.createOffer())
        track = TrackInfo(source_id=source_id, kind=SourceKind.CAMERA, mid=transceiver.mid)
        self.runner.accept(command(OpenPublisher, peer_id=peer_id, sdp=pc.localDescription.sdp, tracks=[track]))
        answer = await result(self.producer, PublisherAnswered)
        await pc.setRemoteDescription(RTCSessionDescription(sdp=answer.sdp, type="answer"))
        return pc

    async def subscribe(self, peer_id: str = "view", publisher: str = "pub", source_id: str = "cam") -> Viewer:
        self.runner.accept(
            command(AddSubscription, peer_id=peer_id, publisher_peer_id=publisher, source_id=source_id, layer="high")
        )
        offer = await result(self.producer, SubscriberOffered)
        viewer = Viewer(self.connection(), offer.sdp)

        @viewer.pc.on("track")
        def on_track(track: MediaStreamTrack) -> None:
            viewer.reader = asyncio.ensure_future(viewer.read(track))

        await viewer.pc.setRemoteDescription(RTCSessionDescription(sdp=offer.sdp, type="offer"))
        await viewer.pc.setLocalDescription(await viewer.pc.createAnswer())
        self.runner.accept(command(ApplySubscriberAnswer, peer_id=peer_id, sdp=viewer.pc.localDescription.sdp))
        return viewer


@pytest.fixture
async def stage() -> AsyncIterator[Stage]:
    with memory_network() as network:
        producer = KeptProducer()
        stage = Stage(network, producer, CommandRunner("n1", producer, Topics("t-")))  # type: ignore[arg-type]
        try:
            yield stage
        finally:
            await stage.runner.peers.close()
            for pc in stage.pcs:
                await pc.close()


def advancing(counters: list[int]) -> bool:
    return len(counters) >= 2 and all(b > a for a, b in zip(counters, counters[1:], strict=False))


async def test_a_publishers_frames_reach_its_subscriber_through_the_node(stage: Stage) -> None:
    await stage.publish()
    started = await result(stage.producer, TrackStarted)
    assert started.peer_id == "pub" and started.track.source_id == "cam"
    viewer = await stage.subscribe()
    await eventually(lambda: len(viewer.codes) >= 15, what="15 frames decoded by the viewer")
    assert set(viewer.codes) == {CODE}, "the viewer decodes the publisher's own pictures"
    assert advancing(viewer.counters), f"frames in order: {viewer.counters}"
    forwarded_packets, _ = stage.runner.peers.forwarded()
    assert forwarded_packets >= 15
    assert not [e for _, e in stage.producer.sent if isinstance(e, CommandFailed)]


async def test_forwarding_survives_a_lossy_subscriber_link(stage: Stage) -> None:
    await stage.publish()
    await result(stage.producer, TrackStarted)
    viewer = await stage.subscribe()
    # every 7th datagram the node sends after the handshake is lost on its way to the viewer
    stage.network.loss_from[ufrag(viewer.offer_sdp)] = every_nth(7)
    await eventually(lambda: len(viewer.codes) >= 30, timeout=30, what="30 frames decoded over a lossy link")
    assert stage.network.dropped > 0, "the loss pattern dropped packets"
    assert set(viewer.codes) == {CODE}
    assert viewer.counters[-1] > viewer.counters[0]


def ufrag(sdp: str) -> str:
    """The ICE username fragment of a description: in memory, the name of that end."""
    return next(line.split(":", 1)[1] for line in sdp.splitlines() if line.startswith("a=ice-ufrag:"))


async def test_a_closed_publisher_stops_forwarding(stage: Stage) -> None:
    await stage.publish()
    await result(stage.producer, TrackStarted)
    viewer = await stage.subscribe()
    await eventually(lambda: len(viewer.codes) >= 5, what="frames before the close")
    stage.runner.accept(command(ClosePeer, peer_id="pub"))
    await eventually(lambda: "pub" not in stage.runner.peers.sessions, what="the publisher closed")
    packets, _ = stage.runner.peers.forwarded()
    assert packets == 0, "no source of the closed publisher is left on the node"
    seen = len(viewer.codes)
    await asyncio.sleep(1.0)
    assert len(viewer.codes) <= seen + 2, "at most frames already in flight arrive after the close"


async def test_an_expired_or_misaddressed_open_publisher_answers_nothing_and_opens_nothing(stage: Stage) -> None:
    pc = stage.connection()
    transceiver = pc.addTransceiver(PatternVideoTrack(CODE), direction="sendonly")
    await pc.setLocalDescription(await pc.createOffer())
    track = TrackInfo(source_id="cam", kind=SourceKind.CAMERA, mid=transceiver.mid)
    sdp = pc.localDescription.sdp
    stage.runner.accept(command(OpenPublisher, peer_id="late", sdp=sdp, tracks=[track], deadline_s=-0.5))
    stage.runner.accept(command(OpenPublisher, peer_id="other", sdp=sdp, tracks=[track], node_id="n2"))
    for _ in range(20):
        await asyncio.sleep(0.01)
    assert stage.producer.sent == [], "neither command runs, so neither is answered"
    assert stage.runner.peers.sessions == {}, "no peer connection was opened for either"
    # the same offer, addressed here and in time, is answered
    stage.runner.accept(command(OpenPublisher, peer_id="ok", sdp=sdp, tracks=[track]))
    answered = await result(stage.producer, PublisherAnswered)
    assert answered.peer_id == "ok" and set(stage.runner.peers.sessions) == {"ok"}
