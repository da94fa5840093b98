"""One track written into segment files, codec copy: encoded frames in, WebM or fMP4 out.

A :class:`TrackWriter` muxes the frames :class:`recorder.frames.FrameAssembler` returns
into ``<spool>/<n>.webm`` (VP8, VP9, Opus) or ``<spool>/<n>.mp4`` (H.264, fragmented:
``movflags=frag_keyframe+empty_moov+default_base_moof``) with PyAV (``add_mux_stream``:
no codec context is opened, no frame is decoded or encoded). A video segment starts on a keyframe; once a segment is
``segment_s`` long the writer asks for a keyframe (``want_keyframe``) and closes it when
one arrives; audio closes on time. Timestamps are the sender's RTP timestamps, offset so
that the track's timeline starts at ``base_s`` seconds after the track's first frame
(non-zero when another recorder instance wrote the track's beginning). Closed segments
go to ``on_closed``.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from dataclasses import asdict, dataclass
from fractions import Fraction
from pathlib import Path

import av

from recorder.frames import Frame
from recorder.payloads import h264_size, vp8_size, vp9_size


@dataclass(frozen=True)
class Container:
    """How a codec is stored: PyAV codec name, RTP clock, container format and extension."""

    codec: str
    clock: int
    format: str
    ext: str
    video: bool
    options: tuple[tuple[str, str], ...] = ()


FRAGMENTED_MP4 = (("movflags", "frag_keyframe+empty_moov+default_base_moof"),)
CODECS = {
    "vp8": Container("vp8", 90_000, "webm", "webm", True),
    "vp9": Container("vp9", 90_000, "webm", "webm", True),
    "h264": Container("h264", 90_000, "mp4", "mp4", True, FRAGMENTED_MP4),
    "opus": Container("opus", 48_000, "webm", "webm", False),
}
#: Metadata comment prefix of an MP4 segment: its first timestamp on the track's timeline.
START_PTS_TAG = "roomlog-start-pts="
#: Segment and track file extensions, and the container format each is written in.
FORMATS = {"webm": ("webm", ()), "mp4": ("mp4", FRAGMENTED_MP4)}
#: The length of a frame when the next one is not known (last frame of a segment).
LAST_FRAME_S = {"vp8": 1 / 30, "vp9": 1 / 30, "h264": 1 / 30, "opus": 0.02}


def frame_size(codec: str, frame: Frame) -> tuple[int, int] | None:
    if codec == "vp8":
        return vp8_size(frame.data)
    if codec == "vp9":
        return vp9_size(frame.data, frame.first_payload)
    if codec == "h264":
        return h264_size(frame.data)
    return None


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

    def to_json(self) -> dict[str, object]:
        return {**asdict(self), "path": str(self.path)}

    @classmethod
    def from_json(cls, value: dict[str, object], path: Path) -> Segment:
        fields = {k: v for k, v in value.items() if k in cls.__dataclass_fields__}
        return cls(**{**fields, "path": path})  # type: ignore[arg-type]


def write_json_atomic(path: Path, value: object) -> None:
    """Write ``path`` so that it exists complete or not at all (a SIGKILL mid-write
    leaves only the temporary file)."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(value))
    os.replace(tmp, path)


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
        self.container = CODECS[self.codec]
        self.clock = self.container.clock
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
        return self.container.video

    @property
    def first_timestamp(self) -> int | None:
        """The (unwrapped) RTP timestamp of the track's first written frame, if any yet."""
        return None if self._first_ts is None else self._first_ts + round(self.base_s * self.clock)

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
            size = frame_size(self.codec, frame)
            if size is not None:
                self.width, self.height = size
        c = self.container
        # an open segment is ``<n>.<ext>.part``; it becomes ``<n>.<ext>`` once closed
        self._path = self.spool / f"{self.index}.{c.ext}.part"
        container = av.open(str(self._path), "w", format=c.format, options=dict(c.options))
        if c.format == "mp4":
            # the MP4 muxer starts every file at 0; the segment's place on the track's
            # timeline travels in its metadata (``recorder.assemble.remux`` reads it)
            container.metadata["comment"] = f"{START_PTS_TAG}{pts}"
        if self.video:
            stream = container.add_mux_stream(c.codec, width=self.width or 0, height=self.height or 0)
        else:
            stream = container.add_mux_stream(c.codec, rate=c.clock)
        stream.time_base = Fraction(1, self.clock)
        self._container, self._stream = container, stream
        self._seg_start = self._seg_last = pts
        self._seg_frames = 0
        self.want_keyframe = False

    def close_segment(self) -> Segment | None:
        """Close the open segment (if any) and hand it to ``on_closed``.

        Durable before it counts as closed: the file is complete and ``<n>.json`` (its
        :class:`Segment`) is written before ``<n>.<ext>.part`` is renamed ``<n>.<ext>``, so
        an instance taking the recording over after a SIGKILL finds every closed segment
        in the spool with its description (``recorder.spool``)."""
        if self._container is None or self._path is None:
            return None
        self._container.close()
        part = self._path
        final = part.with_name(f"{self.index}.{self.container.ext}")
        segment = Segment(
            track_id=self.track_id,
            index=self.index,
            path=final,
            start_s=self._seg_start / self.clock,
            duration_s=(self._seg_last - self._seg_start) / self.clock + LAST_FRAME_S[self.codec],
            frames=self._seg_frames,
            size_bytes=os.path.getsize(part),
            width=self.width,
            height=self.height,
        )
        self._container = self._stream = self._path = None
        self.index += 1
        if not segment.frames:
            part.unlink(missing_ok=True)
            return segment
        write_json_atomic(final.with_suffix(".json"), segment.to_json())
        os.replace(part, final)
        self.on_closed(segment)
        return segment

    def abandon(self) -> None:
        """Drop the open segment without handing it on (the recording moves elsewhere)."""
        if self._container is not None:
            self._container.close()
        if self._path is not None:
            self._path.unlink(missing_ok=True)
        self._container = self._stream = self._path = None
