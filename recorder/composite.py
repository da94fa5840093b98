"""Render a completed recording into one MP4 (H.264 + AAC) with ffmpeg, off the
forwarding path (decoding and encoding are fine here).

Inputs are the track files the manifest lists. Each video track becomes a tile, padded
with black before its start offset (``tpad``) so every tile runs on the recording's
timeline; a tile whose track ended keeps its last frame. ``grid``: tiles in rows of
``ceil(sqrt(n))``; ``speaker``: the first camera large on the left, the others stacked
at its right. Audio tracks are delayed by their offsets (``adelay``) and mixed. Progress
comes from ffmpeg's ``-progress`` output (``out_time_us`` over the recording's length).
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

TILE = (640, 360)
FPS = 15

Progress = Callable[[float], Awaitable[None]]


def _tile(i: int, track: dict[str, Any], w: int, h: int, out: str) -> str:
    start = max(0.0, float(track.get("start_s", 0.0)))
    return (
        f"[{i}:v]fps={FPS},scale={w}:{h}:force_original_aspect_ratio=decrease,"
        f"pad={w}:{h}:(ow-iw)/2:(oh-ih)/2:color=black,setsar=1,"
        f"tpad=start_duration={start:.3f}:start_mode=add:color=black,setpts=PTS-STARTPTS[{out}]"
    )


def filter_graph(tracks: list[dict[str, Any]], layout: str, duration_s: float) -> tuple[str, bool]:
    """The ``-filter_complex`` graph for ``tracks`` (input i is tracks[i]); whether it has audio."""
    videos = [(i, t) for i, t in enumerate(tracks) if t.get("kind") != "microphone" and t.get("codec") != "opus"]
    audios = [(i, t) for i, t in enumerate(tracks) if t.get("codec") == "opus"]
    parts: list[str] = []
    w, h = TILE
    if not videos:
        parts.append(f"color=c=black:s={w}x{h}:r={FPS}:d={duration_s:.3f}[v]")
    elif layout == "speaker" and len(videos) > 1:
        small_h = h // (len(videos) - 1)
        small_w = small_h * 16 // 9
        main_i, main_t = videos[0]
        parts.append(_tile(main_i, main_t, w, h, "m"))
        for n, (i, t) in enumerate(videos[1:]):
            parts.append(_tile(i, t, small_w, small_h, f"s{n}"))
        side = "".join(f"[s{n}]" for n in range(len(videos) - 1))
        if len(videos) > 2:
            parts.append(f"{side}vstack=inputs={len(videos) - 1}:shortest=0,pad={small_w}:{h}[side]")
        else:
            parts.append(f"{side}pad={small_w}:{h}[side]")
        parts.append("[m][side]hstack=inputs=2:shortest=0[v]")
    else:
        cols = math.ceil(math.sqrt(len(videos)))
        for n, (i, t) in enumerate(videos):
            parts.append(_tile(i, t, w, h, f"t{n}"))
        if len(videos) == 1:
            parts.append("[t0]null[v]")
        else:
            layout_spec = "|".join(f"{(n % cols) * w}_{(n // cols) * h}" for n in range(len(videos)))
            tiles = "".join(f"[t{n}]" for n in range(len(videos)))
            parts.append(f"{tiles}xstack=inputs={len(videos)}:layout={layout_spec}:fill=black:shortest=0[v]")
    if audios:
        for n, (i, t) in enumerate(audios):
            delay = round(max(0.0, float(t.get("start_s", 0.0))) * 1000)
            parts.append(f"[{i}:a]aresample=48000,adelay={delay}:all=1[a{n}]")
        mix = "".join(f"[a{n}]" for n in range(len(audios)))
        parts.append(f"{mix}amix=inputs={len(audios)}:duration=longest:normalize=0[a]")
    return ";".join(parts), bool(audios)


def command(inputs: list[Path], graph: str, audio: bool, duration_s: float, out: Path) -> list[str]:
    args = ["ffmpeg", "-y", "-v", "error", "-nostats", "-progress", "pipe:1"]
    for path in inputs:
        args += ["-i", str(path)]
    args += ["-filter_complex", graph, "-map", "[v]"]
    if audio:
        args += ["-map", "[a]", "-c:a", "aac", "-b:a", "128k"]
    args += [
        "-c:v",
        "libx264",
        "-preset",
        "veryfast",
        "-pix_fmt",
        "yuv420p",
        "-r",
        str(FPS),
        "-t",
        f"{duration_s:.3f}",
        "-movflags",
        "+faststart",
        str(out),
    ]
    return args


async def render(
    inputs: list[Path], tracks: list[dict[str, Any]], layout: str, duration_s: float, out: Path, progress: Progress
) -> float:
    """Run ffmpeg; report progress (percent) as it goes; returns the render's wall time."""
    graph, audio = filter_graph(tracks, layout, duration_s)
    started = time.monotonic()
    proc = await asyncio.create_subprocess_exec(
        *command(inputs, graph, audio, duration_s, out), stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    assert proc.stdout is not None and proc.stderr is not None
    errors = asyncio.create_task(proc.stderr.read())
    async for raw in proc.stdout:
        key, _, value = raw.decode(errors="replace").strip().partition("=")
        if key == "out_time_us" and value.isdigit() and duration_s > 0:
            await progress(min(99.9, int(value) / 1e6 / duration_s * 100))
    code = await proc.wait()
    if code != 0:
        raise RuntimeError(f"ffmpeg exited with {code}: {(await errors).decode(errors='replace')[-800:]}")
    return time.monotonic() - started
