"""The latest group of pictures (GOP) of a video encoding, for subscribers that join late.

A subscriber starts at a keyframe. The node asks the publisher for one (PLI), but a camera
published through the edge agent (RTSP passed through, ``edge/rtsp.py``) has no encoder to
honour it: a viewer who joins between two of the camera's keyframes waits up to a keyframe
interval (1 s for the test camera, often 2–4 s for real ones) for its first picture. As
MediaMTX and SRS (``gop_cache``) do, each video encoding keeps its packets since its latest
keyframe began; a subscriber whose leg is ready and who has not started yet gets them at once
(the keyframe and the frames since), then the live packets: it decodes a picture right away,
whatever the publisher does with PLIs.

The replayed frames are squeezed in time (``squeezed``): their RTP timestamps are rewritten to
one tick apart, ending at the newest frame's, so the live frames that follow keep their pace
and a receiver's playout is not delayed by the age of the cached keyframe. Sequence numbers are
the publisher's (the downstream renumbers them as usual). The cache is dropped when it grows
past ``max_packets`` or ``max_age_s`` (a very long GOP is not worth a burst) and starts again at
the next keyframe.
"""

from __future__ import annotations

import copy
from collections.abc import Callable

from aiortc.rtp import RtpPacket

MAX_PACKETS = 1000
MAX_AGE_S = 3.0


class GopCache:
    def __init__(
        self, is_keyframe: Callable[[bytes], bool], *, max_packets: int = MAX_PACKETS, max_age_s: float = MAX_AGE_S
    ) -> None:
        self.is_keyframe = is_keyframe
        self.max_packets = max_packets
        self.max_age_s = max_age_s
        self._packets: list[RtpPacket] = []
        self._started_at = 0.0

    def add(self, packet: RtpPacket, now: float) -> None:
        """One incoming packet, in arrival order."""
        packets = self._packets
        if self.is_keyframe(packet.payload) and (not packets or packets[0].timestamp != packet.timestamp):
            self._packets = [packet]  # a new keyframe (its SPS, PPS and slices share a timestamp)
            self._started_at = now
            return
        if not packets:
            return  # nothing to start from until the next keyframe
        if len(packets) >= self.max_packets or now - self._started_at > self.max_age_s:
            self._packets = []
            return
        packets.append(packet)

    def __len__(self) -> int:
        return len(self._packets)

    def packets(self, *, squeeze: bool = True) -> list[RtpPacket]:
        """The cached GOP (keyframe first), with squeezed timestamps unless ``squeeze`` is
        false (a recorder keeps every frame at its time); ``[]`` if none is kept."""
        return squeezed(self._packets) if squeeze else list(self._packets)


def squeezed(packets: list[RtpPacket]) -> list[RtpPacket]:
    """Copies of ``packets`` whose frames (runs of one timestamp) are one tick apart, the last
    frame keeping its timestamp."""
    frames: list[int] = []
    for p in packets:
        if not frames or frames[-1] != p.timestamp:
            frames.append(p.timestamp)
    if not frames:
        return []
    newest = frames[-1]
    out = []
    index = -1
    previous: int | None = None
    for p in packets:
        if p.timestamp != previous:
            index += 1
            previous = p.timestamp
        q = copy.copy(p)
        q.timestamp = (newest - (len(frames) - 1 - index)) & 0xFFFFFFFF
        out.append(q)
    return out
