"""Receive a room's tracks as encoded RTP packets, never decoded (for the recorder).

:class:`PacketTaps` is a ``Room.receiver_hook``: each subscriber-side receiver is turned
into a packet source with ``media_node.aiortc_glue.tap_receiver`` before media arrives
(aiortc's depayloader, jitter buffer and decoder never start; NACKs and receiver reports
go on), and every packet goes to ``on_packet(tap, source, packet)`` with the source the
node offered on that transceiver (``peer_id``, ``source_id``, ``kind``).
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from typing import Any

from aiortc import RTCRtpReceiver, RTCRtpTransceiver
from aiortc.rtp import RtpPacket

from media_node.aiortc_glue import InboundTap, tap_receiver

PacketCallback = Callable[[InboundTap, dict[str, Any], RtpPacket, float], Awaitable[None]]


class PacketTaps:
    def __init__(self, on_packet: PacketCallback, clock: Callable[[], float] = time.time) -> None:
        self.on_packet = on_packet
        self.clock = clock
        self.taps: dict[RTCRtpReceiver, InboundTap] = {}
        #: The source currently offered on each receiver (a renegotiation may change it).
        self.sources: dict[RTCRtpReceiver, dict[str, Any]] = {}

    def __call__(self, transceiver: RTCRtpTransceiver, source: dict[str, Any]) -> None:
        receiver = transceiver.receiver
        if source:
            self.sources[receiver] = dict(source)
        if receiver in self.taps:
            return

        async def handle(packet: RtpPacket, _arrival_ms: int) -> None:
            await self.on_packet(tap, self.sources.get(receiver, {}), packet, self.clock())

        tap = tap_receiver(receiver, handle)
        self.taps[receiver] = tap

    def decoding(self) -> bool:
        """Whether any tapped receiver runs aiortc's decoder (never, once tapped)."""
        return any(tap.decoding for tap in self.taps.values())
