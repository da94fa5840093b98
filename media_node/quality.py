"""Per-leg quality samples on ``quality.samples`` (every ``ROOMLOG_NODE_STATS_INTERVAL_S``, 2 s).

Every interval the node reads aiortc's public ``getStats()`` of each publisher receiver
and subscriber sender, plus the forwarder's own counters, and publishes one
``QualitySample`` per leg, computed over the interval since the previous sample:

* ``pub/<source>/<layer>``: a published encoding as the node receives it — loss and jitter
  from the receiver's statistics, bitrate, packets, NACKs and keyframe requests sent
  upstream.
* ``sub/<source>``: one subscriber's copy of a source — loss from the subscriber's RTCP
  receiver reports, or from the distinct packets it NACKed when that is higher (aiortc
  folds retransmissions into its receiver report, so a report alone shows loss after
  repair; a NACK is a packet the network lost), RTT, jitter, bitrate, packets, NACKs,
  PLIs, the layer being forwarded, the layers available, whether video is paused, and the
  subscriber's bandwidth estimate (its REMB) where it sends one.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass
from typing import Any

from media_node.peers import Peers, PeerSession, Subscription
from observability import metrics
from producers.kafka import EventProducer
from producers.media import QualitySample

log = logging.getLogger(__name__)

CLOCK_RATE = {"video": 90_000, "audio": 48_000}


@dataclass
class Totals:
    packets: int = 0
    lost: int = 0
    octets: int = 0
    nacks: int = 0
    plis: int = 0
    at: float = 0.0


@dataclass
class Delta:
    packets: int
    loss_pct: float
    kbps: float
    nacks: int
    plis: int


def _stat(report: Any, type_: str) -> Any:
    return next((s for s in report.values() if getattr(s, "type", None) == type_), None)


class QualitySampler:
    def __init__(self, peers: Peers, producer: EventProducer, topic: str, clock: Any = time.monotonic) -> None:
        self.peers = peers
        self.producer = producer
        self.topic = topic
        self.clock = clock
        self._last: dict[tuple[str, str], Totals] = {}
        #: rooms with a ``roomlog_media_node_subscriber_loss_ratio`` child
        self._loss_rooms: set[str] = set()

    def _delta(self, key: tuple[str, str], now: Totals) -> Delta:
        """Loss %, kbit/s and counts since the previous sample of this leg."""
        last = self._last.get(key, Totals(at=now.at))
        self._last[key] = now
        got, missed = now.packets - last.packets, max(0, now.lost - last.lost)
        loss = 100.0 * missed / (got + missed) if got + missed > 0 else 0.0
        seconds = now.at - last.at
        kbps = 8 * (now.octets - last.octets) / 1000 / seconds if seconds > 0 else 0.0
        return Delta(
            max(0, got),
            round(min(loss, 100.0), 2),
            round(max(kbps, 0.0), 1),
            max(0, now.nacks - last.nacks),
            max(0, now.plis - last.plis),
        )

    async def sample(self) -> list[QualitySample]:
        samples: list[QualitySample] = []
        live: set[tuple[str, str]] = set()
        for session in list(self.peers.sessions.values()):
            samples += await self._publisher_samples(session, live)
            for source_id, sub in list(session.subscriptions.items()):
                if sub.active:
                    sample = await self._subscriber_sample(session, source_id, sub, live)
                    if sample is not None:
                        samples.append(sample)
        for key in [k for k in self._last if k not in live]:  # legs gone since the last round
            del self._last[key]
        self._export_room_loss(samples)
        return samples

    def _export_room_loss(self, samples: list[QualitySample]) -> None:
        """Per room: the packet-weighted loss of its subscriber legs in this round. A round in
        which they carried no packet (video paused by the quality loop, which it does when the
        loss is worst) keeps the room's last measured value instead of reading 0."""
        by_room: dict[str, tuple[float, int]] = {}
        for sample in samples:
            if sample.leg.startswith("sub/"):
                lost, sent = by_room.get(sample.room_id, (0.0, 0))
                by_room[sample.room_id] = (lost + sample.loss_pct / 100 * sample.packets, sent + sample.packets)
        for room in self._loss_rooms - set(by_room):
            metrics.MEDIA_ROOM_LOSS.remove(room)
        for room, (lost, sent) in by_room.items():
            if sent or room not in self._loss_rooms:
                metrics.MEDIA_ROOM_LOSS.labels(room).set(lost / sent if sent else 0.0)
        self._loss_rooms = set(by_room)

    async def _publisher_samples(self, session: PeerSession, live: set[tuple[str, str]]) -> list[QualitySample]:
        out = []
        for key, (info, tap, encoding) in list(session.inbound.items()):
            inbound = _stat(await tap.receiver.getStats(), "inbound-rtp")
            if inbound is None:
                continue
            leg = f"pub/{key}"
            live.add((session.peer_id, leg))
            d = self._delta(
                (session.peer_id, leg),
                Totals(
                    inbound.packetsReceived,
                    inbound.packetsLost,
                    encoding.bytes_in,
                    tap.nacks_sent,
                    encoding.keyframe_requests_sent,
                    self.clock(),
                ),
            )
            kind = tap.receiver.track.kind if tap.receiver.track else encoding.source.kind
            clock = CLOCK_RATE.get(kind, 90_000)
            out.append(
                QualitySample.new(
                    room_id=session.room_id,
                    peer_id=session.peer_id,
                    leg=leg,
                    source="node",
                    loss_pct=d.loss_pct,
                    jitter_ms=round(1000 * (inbound.jitter or 0) / clock, 2),
                    bitrate_kbps=d.kbps,
                    source_id=info.source_id,
                    kind=kind,
                    layer=info.layer,
                    layers=sorted(encoding.source.encodings),
                    packets=d.packets,
                    nacks=d.nacks,
                    plis=d.plis,
                )
            )
        return out

    async def _subscriber_sample(
        self, session: PeerSession, source_id: str, sub: Subscription, live: set[tuple[str, str]]
    ) -> QualitySample | None:
        report = await sub.transceiver.sender.getStats()
        outbound, remote = _stat(report, "outbound-rtp"), _stat(report, "remote-inbound-rtp")
        if outbound is None:
            return None
        leg = f"sub/{source_id}"
        live.add((session.peer_id, leg))
        source = sub.source
        downstream = source.downstreams.get(session.peer_id)
        d = self._delta(
            (session.peer_id, leg),
            Totals(
                outbound.packetsSent,
                remote.packetsLost if remote is not None else 0,
                outbound.bytesSent,
                sub.leg.nacked_distinct,
                sub.leg.keyframe_requests,
                self.clock(),
            ),
        )
        nack_loss = 100.0 * d.nacks / d.packets if d.packets > 0 else 0.0
        # nothing sent (a paused leg): a late receiver report's count is not this interval's loss
        loss = round(min(100.0, max(d.loss_pct, nack_loss)), 2) if d.packets > 0 else 0.0
        # aiortc's RTT estimate can go negative under load (clock/DLSR rounding)
        rtt = max(0.0, remote.roundTripTime or 0.0) if remote is not None else 0.0
        clock = CLOCK_RATE.get(source.kind, 90_000)
        jitter = max(0, remote.jitter or 0) if remote is not None else 0
        fresh_remb = (
            downstream is not None
            and downstream.remb is not None
            and source.clock() - downstream.remb_at <= source.remb_timeout_s
        )
        if source.kind == "video":
            metrics.MEDIA_SUBSCRIBER_LOSS.observe(loss / 100)
        return QualitySample.new(
            room_id=session.room_id,
            peer_id=session.peer_id,
            leg=leg,
            source="node",
            loss_pct=loss,
            rtt_ms=round(1000 * rtt, 2),
            jitter_ms=round(1000 * jitter / clock, 2),
            bitrate_kbps=d.kbps,
            source_id=source_id,
            publisher_peer_id=source.publisher_id,
            kind=source.kind,
            layer=downstream.layer if downstream is not None and not downstream.paused else None,
            layers=sorted(source.encodings),
            paused=downstream.paused if downstream is not None else False,
            packets=d.packets,
            nacks=d.nacks,
            plis=d.plis,
            bandwidth_kbps=round(downstream.remb / 1000, 1) if fresh_remb and downstream and downstream.remb else None,
        )

    async def run(self, interval_s: float) -> None:
        loop = asyncio.get_running_loop()
        due = loop.time()
        while True:
            due += interval_s  # on a fixed schedule: sampling time does not stretch the interval
            await asyncio.sleep(max(0.0, due - loop.time()))
            due = max(due, loop.time() - interval_s)
            try:
                for sample in await self.sample():
                    await self.producer.send_soon(self.topic, sample)
            except Exception:  # noqa: BLE001 - stats must never stop the node
                log.exception("quality sampling failed")
