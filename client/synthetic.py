"""Synthetic media whose frames say who sent them: a source code and a frame counter
drawn as black/white blocks, readable after VP8/H.264 compression."""

from __future__ import annotations

import asyncio
import fractions
import math
import time

import av
import numpy as np
from aiortc import MediaStreamTrack

BITS = 32  # 8 bits of source code, 24 bits of counter
BLOCK = 10
VIDEO_CLOCK = 90_000


def encode_pattern(width: int, height: int, code: int, counter: int) -> np.ndarray:
    """A YUV420p plane set as one array (h * 3/2, w) with the bits in the top rows."""
    y = np.full((height, width), 128, dtype=np.uint8)
    # a moving gradient so the encoder has real work and frames differ
    y[BLOCK * 3 :, :] = ((np.arange(width) + counter * 3) % 200 + 28).astype(np.uint8)
    value = ((code & 0xFF) << 24) | (counter & 0xFFFFFF)
    per_row = width // BLOCK
    for bit in range(BITS):
        row, col = divmod(bit, per_row)
        on = (value >> (BITS - 1 - bit)) & 1
        y[row * BLOCK : (row + 1) * BLOCK, col * BLOCK : (col + 1) * BLOCK] = 235 if on else 16
    uv = np.full((height // 2, width), 128, dtype=np.uint8)
    return np.vstack([y, uv])


def decode_pattern(frame: av.VideoFrame) -> tuple[int, int]:
    """(source code, counter) read back from a decoded frame."""
    y = frame.to_ndarray(format="gray")
    per_row = y.shape[1] // BLOCK
    value = 0
    for bit in range(BITS):
        row, col = divmod(bit, per_row)
        cy, cx = row * BLOCK + BLOCK // 2, col * BLOCK + BLOCK // 2
        block = y[cy - 2 : cy + 3, cx - 2 : cx + 3]
        value = (value << 1) | int(block.mean() > 128)
    return value >> 24, value & 0xFFFFFF


class PatternVideoTrack(MediaStreamTrack):
    """Frames carrying ``code`` and an advancing counter."""

    kind = "video"

    def __init__(self, code: int, width: int = 320, height: int = 180, fps: int = 15) -> None:
        super().__init__()
        if width // BLOCK * 3 < BITS:
            raise ValueError("frame too narrow for the pattern")
        self.code, self.width, self.height, self.fps = code, width, height, fps
        self.counter = 0
        self._start: float | None = None

    async def recv(self) -> av.VideoFrame:
        if self._start is None:
            self._start = time.time()
        target = self._start + self.counter / self.fps
        delay = target - time.time()
        if delay > 0:
            await asyncio.sleep(delay)
        frame = av.VideoFrame.from_ndarray(
            encode_pattern(self.width, self.height, self.code, self.counter), format="yuv420p"
        )
        frame.pts = int(self.counter * VIDEO_CLOCK / self.fps)
        frame.time_base = fractions.Fraction(1, VIDEO_CLOCK)
        self.counter += 1
        return frame


class ToneAudioTrack(MediaStreamTrack):
    """A 440 Hz tone, 20 ms frames at 48 kHz."""

    kind = "audio"

    def __init__(self, frequency: float = 440.0) -> None:
        super().__init__()
        self.frequency = frequency
        self.samples = 0
        self._start: float | None = None

    async def recv(self) -> av.AudioFrame:
        rate, n = 48_000, 960
        if self._start is None:
            self._start = time.time()
        delay = self._start + self.samples / rate - time.time()
        if delay > 0:
            await asyncio.sleep(delay)
        t = (np.arange(n) + self.samples) / rate
        pcm = (np.sin(2 * math.pi * self.frequency * t) * 8000).astype(np.int16).reshape(1, -1)
        frame = av.AudioFrame.from_ndarray(pcm, format="s16", layout="mono")
        frame.sample_rate = rate
        frame.pts = self.samples
        frame.time_base = fractions.Fraction(1, rate)
        self.samples += n
        return frame
