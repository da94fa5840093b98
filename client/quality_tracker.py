"""The Python SDK's side of the quality loop: every interval it reads its own connections'
stats (``client.stats``), turns them into window figures and levels (``client.quality``),
builds the ``quality-report`` the gateway writes as a client ``QualitySample``, and keeps
``Room.quality`` (the uplink, and per remote participant the worse of its own receive
level and streams' latest ``quality`` decision)."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from aiortc import RTCPeerConnection, RTCRtpSender

from client.quality import Leg, LinkQuality, QualityMeter, RoomQuality, combine
from client.stats import receiver_counters, uplink_counters

#: The gateway's bounds (api/signaling.py): a report never goes over them.
MAX_LEGS = 64
MAX_MS = 60_000.0
MAX_KBPS = 1_000_000.0


def _bounded(value: float | None, top: float) -> float:
    return round(min(max(value or 0.0, 0.0), top), 3)


@dataclass
class QualityTracker:
    meter: QualityMeter = field(default_factory=QualityMeter)
    #: Streams' latest decision per remote participant and source: (layer, level).
    pushed: dict[str, dict[str, tuple[str, int]]] = field(default_factory=dict)
    quality: RoomQuality = field(default_factory=RoomQuality)
    _legs: list[tuple[Leg, LinkQuality]] = field(default_factory=list)

    async def sample(
        self,
        senders: Iterable[RTCRtpSender],
        subscriber: RTCPeerConnection | None,
        offered: dict[str, dict[str, Any]],
        peers: dict[str, dict[str, Any]],
        now: float,
    ) -> dict[str, Any]:
        """Read the stats, update :attr:`quality`; returns the ``quality-report`` message."""
        up_counters = await uplink_counters(senders)
        uplink = self.meter.uplink(up_counters, now) if up_counters is not None else None
        rtt = uplink.rtt_ms if uplink is not None else None
        legs: list[tuple[Leg, LinkQuality]] = []
        for transceiver in subscriber.getTransceivers() if subscriber is not None else []:
            source = offered.get(transceiver.mid or "")
            if not source or not source.get("peer_id") or not source.get("source_id"):
                continue
            if transceiver.currentDirection in ("inactive", None):
                continue
            kind = transceiver.kind
            counters = await receiver_counters(transceiver.receiver, kind, rtt)
            leg = Leg(peer_id=source["peer_id"], source_id=source["source_id"], kind=kind, counters=counters)
            legs.append((leg, self.meter.leg(leg, now)))
        self.meter.forget({f"{leg.peer_id}/{leg.source_id}" for leg, _ in legs})
        self._legs = legs[:MAX_LEGS]
        self.quality = self._combine(uplink, rtt, peers)
        return self._report(uplink)

    def on_decision(self, message: dict[str, Any], peers: dict[str, dict[str, Any]]) -> None:
        """A ``quality`` notification: streams moved us on a source of ``peer_id``."""
        peer_id, source_id = message.get("peer_id"), message.get("source_id")
        level = message.get("level")
        if not isinstance(peer_id, str) or not isinstance(source_id, str) or not isinstance(level, int):
            return
        self.pushed.setdefault(peer_id, {})[source_id] = (str(message.get("layer", "")), max(1, min(6, level)))
        uplink = self.quality.uplink
        self.quality = self._combine(uplink, uplink.rtt_ms if uplink else None, peers)

    def forget(self, peer_id: str, source_id: str | None = None) -> None:
        """A participant left (or unpublished ``source_id``): its decisions no longer count."""
        if source_id is None:
            self.pushed.pop(peer_id, None)
        else:
            self.pushed.get(peer_id, {}).pop(source_id, None)

    def _combine(self, uplink: LinkQuality | None, rtt: float | None, peers: dict[str, dict[str, Any]]) -> RoomQuality:
        by_peer: dict[str, list[tuple[Leg, LinkQuality]]] = {}
        for leg, q in self._legs:
            by_peer.setdefault(leg.peer_id, []).append((leg, q))
        downlink = {}
        for peer_id in set(by_peer) | set(self.pushed):
            if peer_id not in peers:
                continue
            peer = peers[peer_id]
            muted = {k for k, flag in (("audio", "audio_muted"), ("video", "video_muted")) if peer.get(flag)}
            downlink[peer_id] = combine(peer_id, by_peer.get(peer_id, []), rtt, muted, self.pushed.get(peer_id, {}))
        return RoomQuality(uplink=uplink, downlink=downlink)

    def _report(self, uplink: LinkQuality | None) -> dict[str, Any]:
        up: dict[str, Any] = {"loss_pct": 0.0, "rtt_ms": 0.0, "jitter_ms": 0.0, "bitrate_kbps": 0.0, "level": None}
        if uplink is not None:
            up = {
                "loss_pct": _bounded(uplink.loss_pct, 100.0),
                "rtt_ms": _bounded(uplink.rtt_ms, MAX_MS),
                "jitter_ms": _bounded(uplink.jitter_ms, MAX_MS),
                "bitrate_kbps": _bounded(uplink.bitrate_kbps, MAX_KBPS),
                "level": uplink.level,
            }
        downlink = [
            {
                "peer_id": leg.peer_id,
                "source_id": leg.source_id,
                "kind": leg.kind,
                "loss_pct": _bounded(q.loss_pct, 100.0),
                "jitter_ms": _bounded(q.jitter_ms, MAX_MS),
                "bitrate_kbps": _bounded(q.bitrate_kbps, MAX_KBPS),
                "packets": min(q.packets, 10_000_000),
                "frames_decoded": 0,
                "silent_s": _bounded(q.silent_s, 86_400.0),
            }
            for leg, q in self._legs
        ]
        return {"type": "quality-report", "uplink": up, "downlink": downlink}
