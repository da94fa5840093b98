"""The baseline of ``bench.sfu_forwarding``: aiortc's stock relay behind the node's commands.

``python -m bench.sfu_stock_node --node-id X`` (env ``KAFKA_BOOTSTRAP``,
``ROOMLOG_TOPIC_PREFIX``) answers the same ``media.commands`` as ``python -m media_node``
with what aiortc offers out of the box: the publisher's tracks are received normally
(decoded), and every subscriber gets ``MediaRelay().subscribe(track)``, which its own
``RTCRtpSender`` encodes again. ``buffered=False`` (a live relay: a slow subscriber skips
frames instead of queueing them without bound). One connection per subscriber, one offer
for all its subscriptions (collected for 50 ms). Results go to ``media.results`` and a
heartbeat to ``media.nodes``, like the real node.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import signal
import sys
from typing import Any

from aiortc import MediaStreamTrack, RTCConfiguration, RTCPeerConnection, RTCSessionDescription
from aiortc.contrib.media import MediaRelay

from media_node.commands import CommandLoop
from media_node.heartbeat import Heartbeat
from producers.envelope import Event
from producers.kafka import EventConsumer, EventProducer
from producers.media import (
    AddSubscription,
    ApplySubscriberAnswer,
    ClosePeer,
    NodeCommand,
    OfferedSource,
    OpenPublisher,
    PublisherAnswered,
    SubscriberOffered,
    TrackStarted,
)
from producers.topics import Topics

COLLECT_S = 0.05


class StockNode(CommandLoop):
    """The node's own command loop (``media_node.commands.CommandLoop``: address, dedupe,
    deadline, lanes, failures) with aiortc's stock relay as the handlers."""

    def __init__(self, node_id: str, producer: EventProducer, topics: Topics) -> None:
        super().__init__(node_id, producer, topics)
        self.relay = MediaRelay()
        self.tracks: dict[tuple[str, str], MediaStreamTrack] = {}  # (publisher, source) -> track
        self.pcs: dict[str, RTCPeerConnection] = {}
        self.pending: dict[str, list[AddSubscription]] = {}
        self.handlers = {
            OpenPublisher: self.open_publisher,
            AddSubscription: self.add_subscription,
            ApplySubscriberAnswer: self.apply_answer,
            ClosePeer: self.close_peer,
        }

    async def unhandled(self, command: NodeCommand) -> None:
        """Layers, pauses and the rest: the stock relay has nothing to do for them."""

    async def emit(self, event: Event) -> None:
        await self._emit(event)

    async def add_subscription(self, c: AddSubscription) -> None:
        first = c.peer_id not in self.pending
        self.pending.setdefault(c.peer_id, []).append(c)
        if first:
            asyncio.ensure_future(self.offer(c.peer_id))

    async def apply_answer(self, c: ApplySubscriberAnswer) -> None:
        await self.pcs[c.peer_id].setRemoteDescription(RTCSessionDescription(sdp=c.sdp, type="answer"))

    async def close_peer(self, c: ClosePeer) -> None:
        pc = self.pcs.pop(c.peer_id, None)
        if pc is not None:
            await pc.close()

    async def open_publisher(self, c: OpenPublisher) -> None:
        pc = self.pcs[c.peer_id] = RTCPeerConnection(RTCConfiguration(iceServers=[]))
        by_mid = {t.mid: t for t in c.tracks}

        @pc.on("track")
        def on_track(track: MediaStreamTrack) -> None:
            transceiver = next(t for t in pc.getTransceivers() if t.receiver.track is track)
            info = by_mid[transceiver.mid]
            self.tracks[(c.peer_id, info.source_id)] = track
            asyncio.ensure_future(
                self.emit(TrackStarted.new(room_id=c.room_id, peer_id=c.peer_id, node_id=self.node_id, track=info))
            )

        await pc.setRemoteDescription(RTCSessionDescription(sdp=c.sdp, type="offer"))
        await pc.setLocalDescription(await pc.createAnswer())
        await self.emit(
            PublisherAnswered.caused_by(
                c, room_id=c.room_id, peer_id=c.peer_id, node_id=self.node_id, sdp=pc.localDescription.sdp
            )
        )

    async def offer(self, peer_id: str) -> None:
        await asyncio.sleep(COLLECT_S)
        subscriptions = self.pending.pop(peer_id)
        pc = self.pcs[peer_id] = RTCPeerConnection(RTCConfiguration(iceServers=[]))
        sources = []
        for s in subscriptions:
            track = self.tracks[(s.publisher_peer_id, s.source_id)]
            transceiver = pc.addTransceiver(self.relay.subscribe(track, buffered=False), direction="sendonly")
            sources.append((s, transceiver))
        await pc.setLocalDescription(await pc.createOffer())
        offered = [
            OfferedSource(source_id=s.source_id, peer_id=s.publisher_peer_id, kind=t.kind, layer=s.layer, mid=t.mid)
            for s, t in sources
        ]
        first = subscriptions[0]
        await self.emit(
            SubscriberOffered.new(
                room_id=first.room_id,
                peer_id=peer_id,
                node_id=self.node_id,
                sdp=pc.localDescription.sdp,
                sources=offered,
            )
        )


async def run(node_id: str, bootstrap: str, prefix: str) -> None:
    topics = Topics(prefix)
    async with EventProducer(bootstrap, client_id=node_id) as producer:
        node = StockNode(node_id, producer, topics)
        consumer = EventConsumer(
            bootstrap,
            [topics.name("media.commands")],
            group_id=f"bench-stock-{node_id}",
            address=node_id,
            client_id=node_id,
        )
        await consumer.start()
        stop = asyncio.Event()
        for sig in (signal.SIGTERM, signal.SIGINT):
            asyncio.get_running_loop().add_signal_handler(sig, stop.set)

        tasks: list[asyncio.Task[Any]] = [
            asyncio.ensure_future(node.run(consumer)),
            asyncio.ensure_future(Heartbeat(producer, topics.name("media.nodes"), node_id, "", 1.0).run()),
        ]
        print(f"stock node {node_id} ready", file=sys.stderr, flush=True)
        await stop.wait()
        for task in tasks:
            task.cancel()
        for pc in list(node.pcs.values()):
            with contextlib.suppress(Exception):
                await pc.close()
        await consumer.stop()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.sfu_stock_node",
        description="aiortc MediaRelay node answering roomlog media commands (the baseline of bench.sfu_forwarding).",
    )
    parser.add_argument("--node-id", required=True)
    args = parser.parse_args(argv)
    asyncio.run(
        run(
            args.node_id,
            os.environ.get("KAFKA_BOOTSTRAP", "127.0.0.1:19092"),
            os.environ.get("ROOMLOG_TOPIC_PREFIX", ""),
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
