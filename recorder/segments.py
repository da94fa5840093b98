"""One track written into segment files, codec copy: encoded frames in, WebM out.

A :class:`TrackWriter` muxes the frames :class:`recorder.frames.FrameAssembler` returns
into ``<spool>/<n>.webm`` with PyAV (``add_mux_stream``: no codec context is opened, no
frame is decoded or encoded). A video segment starts on a keyframe; once a segment is
``segment_s`` long the writer asks for a keyframe (``want_keyframe``) and closes it when
one arrives; audio closes on time. Timestamps are the sender's RTP timestamps, offset so
that the track's timeline starts at ``base_s`` seconds after the track's first frame
(non-zero when another recorder instance wrote the track's beginning). Closed segments
go to ``on_closed``.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import av

from recorder.frames import Frame, vp8_size

CODECS = {"vp8": ("vp8", 90_000), "opus": ("opus", 48_000)}
#: The length of a frame when the next one is not known (last frame of a segment).
LAST_FRAME_S = {"vp8": 1 / 30, "opus": 0.02}


@dataclass(frozen=True)
class Segment:
    track_id: str
    index: int
    path: Path
    #: Track-timeline seconds of its first frame, and its length.
    start_s: float
    duration_s: float
    frames: int
    size_bytes: int
    width: int | None
    height: int | None


class TrackWriter:
    def __init__(
        self,
        track_id: str,
        codec: str,
        spool: Path,
        segment_s: float,
        first_index: int,
        on_closed: Callable[[Segment], None],
        base_s: float = 0.0,
    ) -> None:
        self.track_id = track_id
        self.codec = codec.lower()
        if self.codec not in CODECS:
            raise ValueError(f"cannot record codec {codec!r} (recordable: {sorted(CODECS)})")
        self.clock = CODECS[self.codec][1]
        self.spool = spool
        self.segment_s = segment_s
        self.index = first_index
        self.on_closed = on_closed
        self.base_s = base_s
        self.frames = 0
        self.width: int | None = None
        self.height: int | None = None
        self.want_keyframe = False
        self._first_ts: int | None = None
        self._container: av.container.OutputContainer | None = None
        self._stream: av.stream.Stream | None = None
        self._path: Path | None = None
        self._seg_start = 0
        self._seg_last = 0
        self._seg_frames = 0
        spool.mkdir(parents=True, exist_ok=True)

    @property
    def video(self) -> bool:
        return self.codec == "vp8"

    def pts(self, frame: Frame) -> int:
        if self._first_ts is None:
            self._first_ts = frame.timestamp - round(self.base_s * self.clock)
        return frame.timestamp - self._first_ts

    def write(self, frame: Frame) -> None:
        if self._container is None and self.video and not frame.keyframe:
            self.want_keyframe = True
            return  # a video segment starts on a keyframe
        pts = self.pts(frame)
        if self._container is not None and pts - self._seg_start >= self.segment_s * self.clock:
            if not self.video or frame.keyframe:
                self.close_segment()
            else:
                self.want_keyframe = True
        if self._container is None:
            if self.video and not frame.keyframe:
                return
            self._open(frame, pts)
        assert self._container is not None and self._stream is not None
        if pts <= self._seg_last and self._seg_frames:
            return  # a repeated timestamp (a retransmitted frame): keep the first
        packet = av.Packet(frame.data)
        packet.stream = self._stream
        packet.time_base = Fraction(1, self.clock)
        packet.pts = packet.dts = pts
        packet.is_keyframe = frame.keyframe
        self._container.mux(packet)
        self._seg_last = pts
        self._seg_frames += 1
        self.frames += 1

    def _open(self, frame: Frame, pts: int) -> None:
        if self.video:
            size = vp8_size(frame.data)
            if size is not None:
                self.width, self.height = size
        self._path = self.spool / f"{self.index}.webm"
        container = av.open(str(self._path), "w", format="webm")
        name, rate = CODECS[self.codec]
        if self.video:
            stream = container.add_mux_stream(name, width=self.width or 0, height=self.height or 0)
        else:
            stream = container.add_mux_stream(name, rate=rate)
        stream.time_base = Fraction(1, self.clock)
        self._container, self._stream = container, stream
        self._seg_start = self._seg_last = pts
        self._seg_frames = 0
        self.want_keyframe = False

    def close_segment(self) -> Segment | None:
        """Close the open segment (if any) and hand it to ``on_closed``."""
        if self._container is None or self._path is None:
            return None
        self._container.close()
        segment = Segment(
            track_id=self.track_id,
            index=self.index,
            path=self._path,
            start_s=self._seg_start / self.clock,
            duration_s=(self._seg_last - self._seg_start) / self.clock + LAST_FRAME_S[self.codec],
            frames=self._seg_frames,
            size_bytes=os.path.getsize(self._path),
            width=self.width,
            height=self.height,
        )
        self._container = self._stream = self._path = None
        self.index += 1
        if segment.frames:
            self.on_closed(segment)
        else:
            segment.path.unlink(missing_ok=True)
        return segment

    def abandon(self) -> None:
        """Drop the open segment without handing it on (the recording moves elsewhere)."""
        if self._container is not None:
            self._container.close()
        if self._path is not None:
            self._path.unlink(missing_ok=True)
        self._container = self._stream = self._path = None
