"""Network-quality level 1-6 (the Agora seed's scale), computed by the client from its own
getStats, pure. The one mapping, also in ``web/sdk/quality.js`` and docs/web.md:

* 6 down: no packet for ``DOWN_AFTER_S`` (5 s) or more;
* otherwise the worse of the loss band and the RTT band over the last window:

  ===== ========= ========== ============
  level name      loss       RTT
  ===== ========= ========== ============
  1     excellent < 1 %      < 100 ms
  2     good      < 5 %      < 300 ms
  3     poor      < 10 %     < 500 ms
  4     bad       < 20 %     < 1000 ms
  5     very bad  >= 20 %    >= 1000 ms
  ===== ========= ========== ============

  An RTT not measured yet (None) counts as band 1.

A remote participant's downlink level is the worse of (a) the worst band over that
participant's legs (their loss, our RTT) — 6 when every one of its counted legs has been
silent for 5 s — and (b) the level in the latest ``quality`` notification streams sent us for
any of that participant's sources. :class:`QualityMeter` turns cumulative counters sampled
every interval into window figures; time comes in as an argument.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

LEVEL_NAMES = {1: "excellent", 2: "good", 3: "poor", 4: "bad", 5: "very bad", 6: "down"}
#: (level, loss below %, RTT below ms): the first band both values fit in is the level.
BANDS = ((1, 1.0, 100.0), (2, 5.0, 300.0), (3, 10.0, 500.0), (4, 20.0, 1000.0))
DOWN_AFTER_S = 5.0
#: RTP clock rates, to turn RTCP/receiver jitter (timestamp units) into milliseconds.
CLOCK_RATE = {"audio": 48_000, "video": 90_000}


def _band(value: float | None, index: int) -> int:
    if value is None or value != value:  # None or NaN: not measured
        return 1
    return next((b[0] for b in BANDS if value < b[index]), 5)


def quality_level(loss_pct: float = 0.0, rtt_ms: float | None = None, silent_s: float = 0.0) -> int:
    """The level for a window's loss (%), round-trip time (ms) and time since the last packet (s)."""
    if silent_s >= DOWN_AFTER_S:
        return 6
    return max(_band(loss_pct, 1), _band(rtt_ms, 2))


def participant_level(legs: Iterable[tuple[float, float]], rtt_ms: float | None, pushed: int | None) -> int:
    """A remote participant's level from its legs ``(loss_pct, silent_s)`` (only the legs that
    should carry packets: muted kinds left out), our RTT, and the level streams pushed."""
    legs = list(legs)
    own = max((quality_level(loss, rtt_ms) for loss, _ in legs), default=quality_level(0.0, rtt_ms))
    if legs and min(silent for _, silent in legs) >= DOWN_AFTER_S:
        own = 6
    return max(own, pushed or 1)


@dataclass(frozen=True)
class LinkQuality:
    """One direction's figures over the last window, and its level."""

    level: int
    loss_pct: float = 0.0
    rtt_ms: float | None = None
    jitter_ms: float = 0.0
    bitrate_kbps: float = 0.0
    silent_s: float = 0.0
    #: Packets in the window (received, or reported received by the node for the uplink).
    packets: int = 0

    @property
    def name(self) -> str:
        return LEVEL_NAMES[self.level]


@dataclass(frozen=True)
class ParticipantQuality(LinkQuality):
    """What we receive from one remote participant: ``level`` combines ``own_level`` (our
    receive stats) and ``pushed_level`` (streams' latest ``quality`` notification)."""

    own_level: int = 1
    pushed_level: int | None = None
    #: Latest decision per source of this participant: layer (high/mid/low/paused).
    layers: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class RoomQuality:
    """``Room.quality``: the uplink (None until we publish) and each remote participant."""

    uplink: LinkQuality | None = None
    downlink: dict[str, ParticipantQuality] = field(default_factory=dict)

    def levels(self) -> tuple[int | None, dict[str, int]]:
        """What a ``quality`` event reports a change of."""
        return (self.uplink.level if self.uplink else None, {peer: p.level for peer, p in self.downlink.items()})


@dataclass(frozen=True)
class Counters:
    """Cumulative counters of one RTP direction (a sum over streams) at one moment."""

    packets: int = 0  # received (downlink) or reported received by the node (uplink)
    lost: int = 0
    bytes: int = 0
    jitter_ms: float = 0.0
    rtt_ms: float | None = None
    #: Bytes received on the connection (uplink: the node's RTCP; a live node keeps sending it).
    heard: int = 0


@dataclass(frozen=True)
class Leg:
    """One remote source we receive."""

    peer_id: str
    source_id: str
    kind: str  # audio | video
    counters: Counters


@dataclass
class _Seen:
    counters: Counters
    at: float
    changed_at: float


def _window_loss(prev: Counters, cur: Counters) -> float:
    lost = max(0, cur.lost - prev.lost)
    got = max(0, cur.packets - prev.packets)
    return 100.0 * lost / (got + lost) if lost and got + lost else 0.0


def _kbps(prev: Counters, cur: Counters, seconds: float) -> float:
    return max(0, cur.bytes - prev.bytes) * 8 / 1000 / seconds if seconds > 0 else 0.0


class QualityMeter:
    """Window figures from cumulative counters: call :meth:`uplink` and :meth:`leg` once per
    interval with the time (seconds, any monotonic origin)."""

    def __init__(self) -> None:
        self._seen: dict[str, _Seen] = {}

    def _window(self, key: str, cur: Counters, now: float, progress: int) -> tuple[Counters, float, float]:
        """(previous counters, seconds since them, seconds since ``progress`` last moved)."""
        seen = self._seen.get(key)
        if seen is None:
            self._seen[key] = _Seen(cur, now, now)
            return cur, 0.0, 0.0
        prev_progress = seen.counters.heard if key == "uplink" else seen.counters.packets
        changed_at = now if progress != prev_progress else seen.changed_at
        prev, at = seen.counters, seen.at
        self._seen[key] = _Seen(cur, now, changed_at)
        return prev, now - at, now - changed_at

    def uplink(self, cur: Counters, now: float) -> LinkQuality:
        prev, seconds, silent = self._window("uplink", cur, now, cur.heard)
        loss = _window_loss(prev, cur)
        return LinkQuality(
            level=quality_level(loss, cur.rtt_ms, silent),
            loss_pct=loss,
            rtt_ms=cur.rtt_ms,
            jitter_ms=cur.jitter_ms,
            bitrate_kbps=_kbps(prev, cur, seconds),
            silent_s=silent,
            packets=max(0, cur.packets - prev.packets),
        )

    def leg(self, leg: Leg, now: float) -> LinkQuality:
        cur = leg.counters
        prev, seconds, silent = self._window(f"{leg.peer_id}/{leg.source_id}", cur, now, cur.packets)
        loss = _window_loss(prev, cur)
        return LinkQuality(
            level=quality_level(loss, cur.rtt_ms, silent),
            loss_pct=loss,
            rtt_ms=cur.rtt_ms,
            jitter_ms=cur.jitter_ms,
            bitrate_kbps=_kbps(prev, cur, seconds),
            silent_s=silent,
            packets=max(0, cur.packets - prev.packets),
        )

    def forget(self, keep: set[str]) -> None:
        """Drop the windows of legs no longer received (``peer/source`` keys not in ``keep``)."""
        for key in [k for k in self._seen if k != "uplink" and k not in keep]:
            del self._seen[key]


def combine(
    peer_id: str,
    legs: list[tuple[Leg, LinkQuality]],
    rtt_ms: float | None,
    muted: set[str],
    pushed: dict[str, tuple[str, int]],
) -> ParticipantQuality:
    """One remote participant's quality from its legs (``muted``: kinds audio/video whose legs
    are expected silent) and streams' latest decisions per source (``source -> (layer, level)``)."""
    counted = [(q.loss_pct, q.silent_s) for leg, q in legs if leg.kind not in muted]
    pushed_level = max((level for _, level in pushed.values()), default=None)
    own = participant_level(counted, rtt_ms, None)
    total = sum(q.bitrate_kbps for _, q in legs)
    worst_loss = max((q.loss_pct for _, q in legs), default=0.0)
    jitter = max((q.jitter_ms for _, q in legs), default=0.0)
    silent = min((s for _, s in counted), default=0.0)
    return ParticipantQuality(
        level=max(own, pushed_level or 1),
        loss_pct=worst_loss,
        rtt_ms=rtt_ms,
        jitter_ms=jitter,
        bitrate_kbps=total,
        silent_s=silent,
        own_level=own,
        pushed_level=pushed_level,
        layers={s: layer for s, (layer, _) in pushed.items()},
    )
