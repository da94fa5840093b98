"""Per-leg quality samples (loss, RTT, jitter, bitrate) on ``quality.samples``.

Every few seconds the node reads aiortc's public ``getStats()`` of each publisher
receiver and subscriber sender and publishes one ``QualitySample`` per leg, computed
over the interval since the previous sample.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass
from typing import Any

from media_node.peers import Peers
from producers.kafka import EventProducer
from producers.media import QualitySample

log = logging.getLogger(__name__)

CLOCK_RATE = {"video": 90_000, "audio": 48_000}


@dataclass
class Totals:
    packets: int = 0
    lost: int = 0
    octets: int = 0
    at: float = 0.0


def _stat(report: Any, type_: str) -> Any:
    return next((s for s in report.values() if getattr(s, "type", None) == type_), None)


class QualitySampler:
    def __init__(self, peers: Peers, producer: EventProducer, topic: str) -> None:
        self.peers = peers
        self.producer = producer
        self.topic = topic
        self._last: dict[tuple[str, str], Totals] = {}

    def _delta(self, key: tuple[str, str], packets: int, lost: int, octets: int) -> tuple[float, float]:
        """(loss %, kbit/s) since the previous sample of this leg."""
        now = time.monotonic()
        last = self._last.get(key, Totals(at=now))
        self._last[key] = Totals(packets, lost, octets, now)
        got, missed = packets - last.packets, max(0, lost - last.lost)
        loss = 100.0 * missed / (got + missed) if got + missed > 0 else 0.0
        seconds = now - last.at
        kbps = 8 * (octets - last.octets) / 1000 / seconds if seconds > 0 else 0.0
        return round(min(loss, 100.0), 2), round(max(kbps, 0.0), 1)

    async def sample(self) -> list[QualitySample]:
        samples: list[QualitySample] = []
        for session in list(self.peers.sessions.values()):
            for key, (_info, tap, encoding) in list(session.inbound.items()):
                inbound = _stat(await tap.receiver.getStats(), "inbound-rtp")
                if inbound is None:
                    continue
                loss, kbps = self._delta((session.peer_id, f"pub/{key}"), inbound.packetsReceived,
                                         inbound.packetsLost, encoding.bytes_in)
                clock = CLOCK_RATE.get(tap.receiver.track.kind if tap.receiver.track else "video", 90_000)
                samples.append(QualitySample.new(
                    room_id=session.room_id, peer_id=session.peer_id, leg=f"pub/{key}", source="node",
                    loss_pct=loss, jitter_ms=round(1000 * (inbound.jitter or 0) / clock, 2), bitrate_kbps=kbps))
            for source_id, sub in list(session.subscriptions.items()):
                if not sub.active:
                    continue
                report = await sub.transceiver.sender.getStats()
                outbound, remote = _stat(report, "outbound-rtp"), _stat(report, "remote-inbound-rtp")
                if outbound is None:
                    continue
                lost = remote.packetsLost if remote is not None else 0
                loss, kbps = self._delta((session.peer_id, f"sub/{source_id}"), outbound.packetsSent, lost,
                                         outbound.bytesSent)
                # aiortc's RTT estimate can go negative under load (clock/DLSR rounding)
                rtt = max(0.0, remote.roundTripTime or 0.0) if remote is not None else 0.0
                clock = CLOCK_RATE.get(sub.source.kind, 90_000)
                jitter = max(0, remote.jitter or 0) if remote is not None else 0
                samples.append(QualitySample.new(
                    room_id=session.room_id, peer_id=session.peer_id, leg=f"sub/{source_id}", source="node",
                    loss_pct=loss, rtt_ms=round(1000 * rtt, 2), jitter_ms=round(1000 * jitter / clock, 2),
                    bitrate_kbps=kbps))
        return samples

    async def run(self, interval_s: float) -> None:
        while True:
            await asyncio.sleep(interval_s)
            try:
                for sample in await self.sample():
                    await self.producer.send_soon(self.topic, sample)
            except Exception:  # noqa: BLE001 - stats must never stop the node
                log.exception("quality sampling failed")
