"""Pre-encoded media for the SFU benchmark: a VP8 720p loop and an Opus loop, encoded once.

The video loop is ``LOOP_S`` seconds of 1280x720, 30 fps, ~1.5 Mbps VP8 (libvpx realtime,
CBR). Every frame carries ``client.synthetic``'s pattern (source code + loop frame index)
in its top rows, so a decoding canary can say which frame it shows; below it a moving
texture with fresh noise makes the encoder spend its bitrate. Pre-encoded media cannot
answer a keyframe request (PLI), so the loop has a keyframe every ``KEYFRAME_EVERY``
frames (2 s): a subscriber that asks waits at most that long. The loop starts on a
keyframe, so it wraps cleanly. Audio is 20 ms Opus frames of a wobbling tone.

Encoded once per parameter set and cached under ``<run dir>/media/`` (a JSON index and
one blob per kind: no pickle).
"""

from __future__ import annotations

import asyncio
import fractions
import hashlib
import json
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import av
import numpy as np
from aiortc import MediaStreamTrack

from client.synthetic import encode_pattern

WIDTH, HEIGHT, FPS = 1280, 720, 30
LOOP_S = 10
KEYFRAME_EVERY = 2 * FPS
VIDEO_BITRATE = 1_300_000  # + keyframes every 2 s ≈ 1.5 Mbps
AUDIO_RATE, AUDIO_FRAME = 48_000, 960
SOURCE_CODE = 7  # the pattern's source code: canaries check they see this publisher
PATTERN_ROWS = 30  # encode_pattern's bits live in the top 3 block rows
NOISE = 6  # ± amplitude of fresh per-frame noise: what makes the encoder spend its bitrate
PAN = 2  # pixels per frame the texture moves

__all__ = ["MediaLoop", "LoopTrack", "load_or_encode"]


@dataclass(frozen=True)
class MediaLoop:
    """Encoded frames of one kind: payloads, keyframe flags, frame duration."""

    kind: str
    frames: list[bytes]
    keyframes: list[bool]
    clock_rate: int
    frame_ticks: int  # pts increment per frame, in 1/clock_rate

    @property
    def bitrate(self) -> float:
        seconds = len(self.frames) * self.frame_ticks / self.clock_rate
        return sum(len(f) for f in self.frames) * 8 / seconds


def _texture(rng: np.random.Generator) -> np.ndarray:
    raw = rng.integers(16, 235, size=(HEIGHT, WIDTH + PAN * (LOOP_S + 2) * FPS), dtype=np.uint16)
    smooth = (raw + np.roll(raw, 1, 1) + np.roll(raw, 1, 0) + np.roll(raw, (1, 1), (0, 1))) // 4
    return smooth.astype(np.uint8)


def _encode_video() -> MediaLoop:
    rng = np.random.default_rng(1)
    texture = _texture(rng)
    codec = av.CodecContext.create("libvpx", "w")
    codec.width, codec.height, codec.pix_fmt = WIDTH, HEIGHT, "yuv420p"
    codec.time_base = fractions.Fraction(1, FPS)
    codec.framerate = fractions.Fraction(FPS, 1)
    codec.bit_rate = VIDEO_BITRATE
    codec.gop_size = 10 * KEYFRAME_EVERY  # keyframes are forced below, at fixed positions
    codec.qmin, codec.qmax = 2, 56
    rate = str(VIDEO_BITRATE)
    # aiortc's own VP8 settings (CBR, 1 s buffer, realtime), a little faster
    codec.options = {
        "bufsize": rate,
        "minrate": rate,
        "maxrate": rate,
        "cpu-used": "-8",
        "deadline": "realtime",
        "lag-in-frames": "0",
        "noise-sensitivity": "0",
        "overshoot-pct": "15",
        "undershoot-pct": "25",
        "static-thresh": "1",
        "partitions": "0",
        "max-intra-rate": "400",
    }
    warmup = KEYFRAME_EVERY  # the encoder's first keyframe is oversized: skip one gop
    frames: list[bytes] = []
    keys: list[bool] = []
    for i in range(warmup + LOOP_S * FPS):
        index = i - warmup
        planes = encode_pattern(WIDTH, HEIGHT, SOURCE_CODE, max(index, 0))
        y = planes[:HEIGHT]
        shift = PAN * i
        noise = rng.integers(-NOISE, NOISE + 1, size=(HEIGHT - PATTERN_ROWS, WIDTH), dtype=np.int16)
        y[PATTERN_ROWS:, :] = np.clip(texture[PATTERN_ROWS:, shift : shift + WIDTH] + noise, 16, 235)
        frame = av.VideoFrame.from_ndarray(planes, format="yuv420p")
        frame.pts, frame.time_base = i, codec.time_base
        if i % KEYFRAME_EVERY == 0:
            frame.pict_type = av.video.frame.PictureType.I
        for packet in codec.encode(frame):
            if index >= 0:
                frames.append(bytes(packet))
                keys.append(bool(packet.is_keyframe))
    for packet in codec.encode(None):
        frames.append(bytes(packet))
        keys.append(bool(packet.is_keyframe))
    frames, keys = frames[: LOOP_S * FPS], keys[: LOOP_S * FPS]
    if not keys[0]:
        raise RuntimeError("the video loop does not start on a keyframe")
    return MediaLoop("video", frames, keys, 90_000, 90_000 // FPS)


def _encode_audio() -> MediaLoop:
    codec = av.CodecContext.create("libopus", "w")
    codec.sample_rate = AUDIO_RATE
    codec.layout = "stereo"
    codec.format = "s16"
    codec.bit_rate = 64_000
    codec.time_base = fractions.Fraction(1, AUDIO_RATE)
    frames: list[bytes] = []
    n_frames = LOOP_S * AUDIO_RATE // AUDIO_FRAME
    rng = np.random.default_rng(2)
    for i in range(n_frames):
        t = (np.arange(AUDIO_FRAME) + i * AUDIO_FRAME) / AUDIO_RATE
        freq = 440 + 60 * math.sin(i / 25)
        pcm = np.sin(2 * math.pi * freq * t) * 6000 + rng.normal(0, 300, AUDIO_FRAME)
        stereo = np.repeat(pcm.astype(np.int16), 2).reshape(1, -1)
        frame = av.AudioFrame.from_ndarray(stereo, format="s16", layout="stereo")
        frame.sample_rate, frame.pts, frame.time_base = AUDIO_RATE, i * AUDIO_FRAME, codec.time_base
        frames += [bytes(p) for p in codec.encode(frame)]
    frames += [bytes(p) for p in codec.encode(None)]
    frames = frames[:n_frames]
    return MediaLoop("audio", frames, [True] * len(frames), AUDIO_RATE, AUDIO_FRAME)


def _params_key() -> str:
    text = (
        f"v5 n{NOISE} p{PAN} {WIDTH}x{HEIGHT}@{FPS} {VIDEO_BITRATE} kf{KEYFRAME_EVERY} {LOOP_S}s "
        f"{SOURCE_CODE} opus{AUDIO_FRAME}"
    )
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def _save(loop: MediaLoop, base: Path) -> None:
    base.with_suffix(".bin").write_bytes(b"".join(loop.frames))
    index = {
        "kind": loop.kind,
        "sizes": [len(f) for f in loop.frames],
        "keyframes": loop.keyframes,
        "clock_rate": loop.clock_rate,
        "frame_ticks": loop.frame_ticks,
    }
    base.with_suffix(".json").write_text(json.dumps(index))


def _load(base: Path) -> MediaLoop:
    index = json.loads(base.with_suffix(".json").read_text())
    blob = base.with_suffix(".bin").read_bytes()
    frames, at = [], 0
    for size in index["sizes"]:
        frames.append(blob[at : at + size])
        at += size
    return MediaLoop(index["kind"], frames, index["keyframes"], index["clock_rate"], index["frame_ticks"])


def load_or_encode(cache_dir: Path, say: Callable[[str], None]) -> tuple[MediaLoop, MediaLoop]:
    """The (video, audio) loops, from the cache or encoded now (~30 s, once)."""
    cache_dir.mkdir(parents=True, exist_ok=True)
    key = _params_key()
    loops = []
    for kind, encode in (("video", _encode_video), ("audio", _encode_audio)):
        base = cache_dir / f"{kind}-{key}"
        if base.with_suffix(".json").exists() and base.with_suffix(".bin").exists():
            loops.append(_load(base))
            continue
        say(f"pre-encoding the {kind} loop (once; cached in {cache_dir})")
        started = time.monotonic()
        loop = encode()
        _save(loop, base)
        say(f"{kind}: {len(loop.frames)} frames, {loop.bitrate / 1000:.0f} kbps, {time.monotonic() - started:.0f} s")
        loops.append(loop)
    return loops[0], loops[1]


class LoopTrack(MediaStreamTrack):
    """A track that yields the loop's encoded frames as ``av.Packet`` in real time.

    aiortc's sender packetizes pre-encoded packets (``encoder.pack``) instead of encoding.
    ``on_frame(loop_index, monotonic_time)`` is called as each frame is handed over.
    """

    def __init__(self, loop: MediaLoop, on_frame: Callable[[int, float], None] | None = None) -> None:
        super().__init__()
        self.kind = loop.kind
        self.loop = loop
        self.on_frame = on_frame
        self.count = 0
        self.late_s = 0.0  # worst lateness of a frame against its schedule
        self._start: float | None = None
        self._time_base = fractions.Fraction(1, loop.clock_rate)

    async def recv(self) -> av.Packet:  # type: ignore[type-arg]
        loop = self.loop
        now = time.monotonic()
        if self._start is None:
            self._start = now
        due = self._start + self.count * loop.frame_ticks / loop.clock_rate
        if due > now:
            await asyncio.sleep(due - now)
        else:
            self.late_s = max(self.late_s, now - due)
        index = self.count % len(loop.frames)
        packet = av.Packet(loop.frames[index])
        packet.pts = self.count * loop.frame_ticks
        packet.time_base = self._time_base
        self.count += 1
        if self.on_frame is not None:
            self.on_frame(index, time.monotonic())
        return packet
