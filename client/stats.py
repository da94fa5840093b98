"""Cumulative counters from aiortc's ``getStats`` of the SDK's own connections, for
``client.quality.QualityMeter``.

Uplink (the publisher connection): what the node's receiver reports say about our RTP
(``remote-inbound-rtp``: packets received and lost, jitter, RTT from RTCP), the bytes we
sent (``outbound-rtp``) and the bytes the connection received (``transport``: the node's
RTCP keeps arriving while it is alive). Downlink (the subscriber connection), per
receiver: packets received and lost and jitter (``inbound-rtp``) and the bytes the node
says it sent (``remote-outbound-rtp``, from its sender reports). aiortc exposes no
decoder counters, so the Python SDK reports ``frames_decoded`` as 0.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from aiortc import RTCRtpReceiver, RTCRtpSender

from client.quality import CLOCK_RATE, Counters


def _jitter_ms(units: float | None, kind: str) -> float:
    return 1000.0 * (units or 0) / CLOCK_RATE.get(kind, 90_000)


async def uplink_counters(senders: Iterable[RTCRtpSender]) -> Counters | None:
    """The publisher connection's counters, summed over its senders (None without senders)."""
    packets = lost = sent_bytes = heard = 0
    jitter = 0.0
    rtts: list[float] = []
    any_sender = False
    for sender in senders:
        any_sender = True
        for stat in (await sender.getStats()).values():
            kind: Any = getattr(stat, "type", None)
            if kind == "outbound-rtp":
                sent_bytes += stat.bytesSent
            elif kind == "remote-inbound-rtp":
                packets += stat.packetsReceived
                lost += max(0, stat.packetsLost)
                jitter = max(jitter, _jitter_ms(stat.jitter, stat.kind))
                if stat.roundTripTime is not None:
                    rtts.append(1000.0 * stat.roundTripTime)
            elif kind == "transport":
                heard = max(heard, stat.bytesReceived)  # one transport (max-bundle)
    if not any_sender:
        return None
    return Counters(
        packets=packets, lost=lost, bytes=sent_bytes, jitter_ms=jitter, rtt_ms=max(rtts) if rtts else None, heard=heard
    )


async def receiver_counters(receiver: RTCRtpReceiver, kind: str, rtt_ms: float | None) -> Counters:
    """One subscriber receiver's counters; ``rtt_ms`` is ours to the node (receivers measure none)."""
    packets = lost = got_bytes = 0
    jitter = 0.0
    for stat in (await receiver.getStats()).values():
        stat_type: Any = getattr(stat, "type", None)
        if stat_type == "inbound-rtp":
            packets += stat.packetsReceived
            lost += max(0, stat.packetsLost)
            jitter = max(jitter, _jitter_ms(stat.jitter, kind))
        elif stat_type == "remote-outbound-rtp":
            got_bytes += stat.bytesSent
    return Counters(packets=packets, lost=lost, bytes=got_bytes, jitter_ms=jitter, rtt_ms=rtt_ms)
