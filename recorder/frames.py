"""Encoded frames from RTP packets, without decoding: reorder, wait for retransmissions,
strip the payload descriptor, join a frame's packets (``recorder.payloads`` per codec).

:class:`FrameAssembler` takes the packets of one stream in arrival order and returns
complete frames in RTP order. A hole waits ``hold_s`` for its retransmission (the tap
keeps NACKing); after that the frames it breaks are dropped and ``lost`` counts them,
and a video stream reports that it needs a keyframe (its next frames reference what was
lost). VP8 and VP9 frames are the concatenated payloads after each packet's descriptor
(RFC 7741, RFC 9628); an H.264 frame is its NAL units as an Annex B byte stream (RFC
6184); an Opus packet is one frame (RFC 7587). Pure: time is passed in.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from aiortc.rtp import RtpPacket

from recorder import payloads
from recorder.payloads import vp8_frame_start, vp8_size

#: Per video codec: frame start, keyframe (from the frame's packets), packet → frame data.
VIDEO: dict[str, tuple[Callable[[bytes], bool], Callable[[list[bytes]], bool], Callable[[bytes], bytes]]] = {
    "vp8": (vp8_frame_start, lambda p: payloads.vp8_keyframe_start(p[0]), payloads.vp8_data),
    "vp9": (payloads.vp9_frame_start, lambda p: payloads.vp9_keyframe_start(p[0]), payloads.vp9_data),
    "h264": (payloads.h264_frame_start, payloads.h264_keyframe, payloads.h264_data),
}


@dataclass(frozen=True)
class Frame:
    data: bytes
    #: RTP timestamp unwrapped to 64 bits (monotonic in the stream).
    timestamp: int
    keyframe: bool
    #: When its last packet arrived (the caller's clock, seconds).
    arrival: float
    #: Its first packet's payload, descriptor included (VP9 carries the size there).
    first_payload: bytes = b""


class FrameAssembler:
    def __init__(self, codec: str, hold_s: float = 0.3) -> None:
        self.codec = codec.lower()
        self.video = self.codec in VIDEO
        self._is_start, self._is_keyframe, self._data = VIDEO.get(self.codec, VIDEO["vp8"])
        self.hold_s = hold_s
        self.lost = 0
        self.needs_keyframe = self.video
        self._packets: dict[int, tuple[RtpPacket, float]] = {}
        self._next: int | None = None
        self._last_seq: int | None = None
        self._last_ts: int | None = None

    # --- 16/32-bit unwrapping --------------------------------------------------------

    def _seq(self, seq: int) -> int:
        if self._last_seq is None:
            self._last_seq = seq + (1 << 16)  # room below for late packets
            return self._last_seq
        delta = (seq - self._last_seq) & 0xFFFF
        ext = self._last_seq + delta if delta < 0x8000 else self._last_seq + delta - 0x10000
        self._last_seq = max(self._last_seq, ext)
        return ext

    def timestamp(self, ts: int) -> int:
        if self._last_ts is None:
            self._last_ts = ts + (1 << 32)
            return self._last_ts
        delta = (ts - self._last_ts) & 0xFFFFFFFF
        ext = self._last_ts + delta if delta < 0x80000000 else self._last_ts + delta - 0x100000000
        self._last_ts = max(self._last_ts, ext)
        return ext

    # --- assembly --------------------------------------------------------------------

    def add(self, packet: RtpPacket, now: float) -> list[Frame]:
        seq = self._seq(packet.sequence_number)
        if self._next is not None and seq < self._next:
            return []  # late or a duplicate retransmission
        self._packets.setdefault(seq, (packet, now))
        if self._next is None:
            self._next = seq
        return self._drain(now, force=False)

    def poll(self, now: float) -> list[Frame]:
        """Frames released because a hole waited ``hold_s`` (no packet needed to arrive)."""
        return self._drain(now, force=False)

    def flush(self, now: float) -> list[Frame]:
        """Everything complete, skipping holes at once (the stream ended)."""
        return self._drain(now, force=True)

    def _start(self, packet: RtpPacket) -> bool:
        return self._is_start(packet.payload) if self.video else True

    def _complete(self, seq: int) -> tuple[list[RtpPacket], float] | None:
        first = self._packets.get(seq)
        if first is None or not self._start(first[0]):
            return None
        if not self.video:
            return [first[0]], first[1]
        packets, arrival, s = [], first[1], seq
        while (entry := self._packets.get(s)) is not None and entry[0].timestamp == first[0].timestamp:
            packets.append(entry[0])
            arrival = max(arrival, entry[1])
            if entry[0].marker:
                return packets, arrival
            s += 1
        return None

    def _frame(self, packets: list[RtpPacket], arrival: float) -> Frame:
        if self.video:
            data = b"".join(self._data(p.payload) for p in packets)
            keyframe = self._is_keyframe([p.payload for p in packets])
        else:
            data, keyframe = packets[0].payload, True
        return Frame(data, self.timestamp(packets[0].timestamp), keyframe, arrival, packets[0].payload)

    def _drain(self, now: float, force: bool) -> list[Frame]:
        out: list[Frame] = []
        while self._packets and self._next is not None:
            done = self._complete(self._next)
            if done is not None:
                packets, arrival = done
                for i in range(len(packets)):
                    self._packets.pop(self._next + i, None)
                self._next += len(packets)
                frame = self._frame(packets, arrival)
                if self.video and self.needs_keyframe and not frame.keyframe:
                    self.lost += 1
                    continue
                if frame.keyframe:
                    self.needs_keyframe = False
                out.append(frame)
                continue
            first = self._packets.get(self._next)
            if not force and (first is None or self._start(first[0])):
                age = self._hole_age(now)
                if age is None or age < self.hold_s:
                    break  # still arriving, or a hole still waiting for its retransmission
            self._skip()
        return out

    def _hole_age(self, now: float) -> float | None:
        """How long the first missing packet after ``_next`` has been missing (since the
        first packet behind it arrived); None when nothing is missing."""
        assert self._next is not None
        seq = self._next
        while seq in self._packets:
            seq += 1
        behind = [arrival for s, (_, arrival) in self._packets.items() if s > seq]
        return now - min(behind) if behind else None

    def _skip(self) -> None:
        """Give up the frame at ``_next``: resume at the next frame start after it."""
        assert self._next is not None
        current = self._packets.get(self._next)
        ts = current[0].timestamp if current is not None else None
        later = sorted(s for s in self._packets if s > self._next)
        resume = next(
            (s for s in later if self._start(self._packets[s][0]) and self._packets[s][0].timestamp != ts), None
        )
        self.lost += 1
        if self.video:
            self.needs_keyframe = True
        if resume is None:
            self._packets.clear()
            self._next = (later[-1] + 1) if later else self._next + 1
            return
        for s in [s for s in self._packets if s < resume]:
            del self._packets[s]
        self._next = resume


__all__ = ["VIDEO", "Frame", "FrameAssembler", "vp8_frame_start", "vp8_size"]
