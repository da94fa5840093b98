"""y4m camera files for Chromium's fake capture (``--use-file-for-fake-video-capture``).

Every frame carries the same pattern as ``client.synthetic`` (a source code and a frame
counter as 10-pixel black/white blocks in the top row, a moving gradient below), so a
browser fed this file and a Python ``PatternVideoTrack`` are read back by the one
decoder (``client.synthetic.decode_pattern`` in Python, ``web/sdk/pattern.js`` in the
page). Chromium loops the file, so the counter wraps every ``seconds``.

    python -m tests.e2e.y4m OUT.y4m --code 7 [--seconds 30] [--width 640 --height 360 --fps 15]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from client.synthetic import decode_pattern, encode_pattern

WIDTH, HEIGHT, FPS = 640, 360, 15


def write_y4m(
    path: Path, code: int, *, seconds: float = 30, width: int = WIDTH, height: int = HEIGHT, fps: int = FPS
) -> Path:
    """Write ``seconds`` of I420 frames carrying ``code`` and counters 0.. to ``path`` (idempotent)."""
    if not 0 <= code <= 255:
        raise ValueError("code must fit in 8 bits")
    frames = int(seconds * fps)
    header = f"YUV4MPEG2 W{width} H{height} F{fps}:1 Ip A1:1 C420jpeg\n".encode()
    size = len(header) + frames * (6 + width * height * 3 // 2)
    if path.exists() and path.stat().st_size == size:
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    with tmp.open("wb") as out:
        out.write(header)
        for counter in range(frames):
            out.write(b"FRAME\n")
            out.write(encode_pattern(width, height, code, counter).tobytes())
    tmp.replace(path)
    return path


def read_first_frame(path: Path) -> tuple[int, int]:
    """(code, counter) of the file's first frame, through the shared decoder (a self-check)."""
    import av

    with path.open("rb") as f:
        header = f.readline().split()
        width = int(next(h[1:] for h in header if h.startswith(b"W")))
        height = int(next(h[1:] for h in header if h.startswith(b"H")))
        f.readline()  # FRAME
        raw = f.read(width * height * 3 // 2)
    import numpy as np

    frame = av.VideoFrame.from_ndarray(np.frombuffer(raw, np.uint8).reshape(height * 3 // 2, width), format="yuv420p")
    return decode_pattern(frame)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.e2e.y4m", description=__doc__.split("\n\n")[0])
    parser.add_argument("out", type=Path)
    parser.add_argument("--code", type=int, required=True, help="source code 0-255 drawn into every frame")
    parser.add_argument("--seconds", type=float, default=30)
    parser.add_argument("--width", type=int, default=WIDTH)
    parser.add_argument("--height", type=int, default=HEIGHT)
    parser.add_argument("--fps", type=int, default=FPS)
    args = parser.parse_args(argv)
    path = write_y4m(args.out, args.code, seconds=args.seconds, width=args.width, height=args.height, fps=args.fps)
    print(f"{path}: code {args.code}, first frame decodes as {read_first_frame(path)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
