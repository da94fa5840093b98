"""Driving one node through its Kafka commands, as the streams worker would.

The benchmark sends ``OpenPublisher`` / ``AddSubscription`` / ``ApplySubscriberAnswer`` /
``ClosePeer`` to ``<prefix>media.commands`` and reads ``PublisherAnswered`` /
``SubscriberOffered`` / ``TrackStarted`` / ``CommandFailed`` from ``<prefix>media.results``.
Both the roomlog node and the stock baseline node (``bench.sfu_stock_node``) speak this.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections import defaultdict
from datetime import timedelta
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiortc import RTCConfiguration, RTCPeerConnection, RTCSessionDescription

from producers.catalog import decode
from producers.envelope import Event, utcnow
from producers.errors import DecodeError
from producers.fields import SourceKind, TrackInfo
from producers.kafka import EventProducer
from producers.media import (
    AddSubscription,
    ApplySubscriberAnswer,
    ClosePeer,
    CommandFailed,
    NodeHeartbeat,
    OpenPublisher,
    PublisherAnswered,
    SubscriberOffered,
    TrackStarted,
)
from producers.topics import Topics

COMMAND_TTL = timedelta(seconds=120)


class NodeError(RuntimeError):
    """The node reported a failed command, or did not answer in time."""


class NodeControl:
    """Commands to one node; its results, routed by peer id."""

    def __init__(self, bootstrap: str, prefix: str, node_id: str, room_id: str) -> None:
        self.topics = Topics(prefix)
        self.node_id = node_id
        self.room_id = room_id
        self._bootstrap = bootstrap
        self._producer = EventProducer(bootstrap, client_id="bench-sfu")
        self._consumer: AIOKafkaConsumer | None = None
        self._inbox: dict[str, asyncio.Queue[Event]] = defaultdict(asyncio.Queue)
        self._stash: dict[str, list[Event]] = defaultdict(list)
        self._heartbeat = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        await self._producer.start()
        # the run's topics are fresh (unique prefix) and results are filtered by node id: reading
        # from the beginning misses nothing and needs no offset lookup on just-created topics
        self._consumer = AIOKafkaConsumer(
            bootstrap_servers=self._bootstrap, group_id=None, enable_auto_commit=False, auto_offset_reset="earliest"
        )
        await self._consumer.start()
        parts = []
        for logical in ("media.results", "media.nodes"):
            topic = self.topics.name(logical)
            for _ in range(60):  # a just-created topic's metadata can take a moment
                found = self._consumer.partitions_for_topic(topic)
                if found:
                    break
                await self._consumer._client.force_metadata_update()  # noqa: SLF001
                await asyncio.sleep(0.5)
            else:
                raise NodeError(f"no partitions for {topic}")
            parts += [TopicPartition(topic, p) for p in found]
        self._consumer.assign(parts)
        self._task = asyncio.ensure_future(self._read())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self._consumer is not None:
            await self._consumer.stop()
        await self._producer.stop()

    async def _read(self) -> None:
        assert self._consumer is not None
        async for record in self._consumer:
            try:
                event = decode(record.value or b"")
            except DecodeError:
                continue
            if isinstance(event, NodeHeartbeat):
                if event.node_id == self.node_id:
                    self._heartbeat.set()
                continue
            peer_id = getattr(event, "peer_id", None)
            if getattr(event, "node_id", None) == self.node_id and peer_id:
                self._inbox[peer_id].put_nowait(event)

    async def wait_alive(self, timeout: float) -> None:
        await asyncio.wait_for(self._heartbeat.wait(), timeout)

    async def next_result(self, peer_id: str, timeout: float, *types: type[Event]) -> Event:
        """The next result for ``peer_id`` of one of ``types`` (a failure raises)."""
        stash = self._stash[peer_id]
        for event in stash:
            if isinstance(event, types):
                stash.remove(event)
                return event
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            try:
                event = await asyncio.wait_for(self._inbox[peer_id].get(), max(0.01, deadline - loop.time()))
            except TimeoutError:
                raise NodeError(f"no {'/'.join(t.__name__ for t in types)} for {peer_id} in {timeout:.0f} s") from None
            if isinstance(event, CommandFailed):
                raise NodeError(f"{event.command_type} failed for {peer_id}: {event.code} {event.message}")
            if isinstance(event, types):
                return event
            stash.append(event)  # e.g. a TrackStarted ahead of the PublisherAnswered

    async def _send(self, command: Event) -> None:
        await self._producer.send(self.topics.name("media.commands"), command)

    def _fields(self) -> dict[str, Any]:
        return {"node_id": self.node_id, "room_id": self.room_id, "deadline": utcnow() + COMMAND_TTL}

    async def open_publisher(self, pc: RTCPeerConnection, peer_id: str, timeout: float = 30.0) -> None:
        """Offer ``pc``'s tracks to the node (source ``cam``/``mic``) and apply its answer."""
        await pc.setLocalDescription(await pc.createOffer())
        tracks = [
            TrackInfo(
                source_id="cam" if t.kind == "video" else "mic",
                kind=SourceKind.CAMERA if t.kind == "video" else SourceKind.MICROPHONE,
                mid=t.mid,
            )
            for t in pc.getTransceivers()
        ]
        # a node that just started may not have resolved its command offset yet: ask again
        for attempt in range(3):
            await self._send(
                OpenPublisher.new(**self._fields(), peer_id=peer_id, sdp=pc.localDescription.sdp, tracks=tracks)
            )
            try:
                answer = await self.next_result(peer_id, timeout / 3, PublisherAnswered)
                break
            except NodeError:
                if attempt == 2:
                    raise
        assert isinstance(answer, PublisherAnswered)
        await pc.setRemoteDescription(RTCSessionDescription(sdp=answer.sdp, type="answer"))
        started: set[str] = set()
        while len(started) < len(tracks):
            event = await self.next_result(peer_id, timeout, TrackStarted)
            assert isinstance(event, TrackStarted)
            started.add(event.track.source_id)

    async def subscribe(self, peer_id: str, publisher_id: str) -> None:
        for source_id in ("cam", "mic"):
            await self._send(
                AddSubscription.new(
                    **self._fields(), peer_id=peer_id, publisher_peer_id=publisher_id, source_id=source_id
                )
            )

    async def next_offer(self, peer_id: str, timeout: float) -> SubscriberOffered:
        event = await self.next_result(peer_id, timeout, SubscriberOffered)
        assert isinstance(event, SubscriberOffered)
        return event

    async def answer(self, peer_id: str, sdp: str) -> None:
        await self._send(ApplySubscriberAnswer.new(**self._fields(), peer_id=peer_id, sdp=sdp))

    async def close_peer(self, peer_id: str) -> None:
        await self._send(ClosePeer.new(**self._fields(), peer_id=peer_id))


def new_pc() -> RTCPeerConnection:
    return RTCPeerConnection(RTCConfiguration(iceServers=[]))


def unique(prefix: str) -> str:
    return f"{prefix}{uuid.uuid4().hex[:10]}"
