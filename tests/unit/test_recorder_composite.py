"""The composite render (ffmpeg, no network): both layouts from small VP8/Opus track
files, tiles placed by their start offsets, progress reported, audio present."""

from __future__ import annotations

import asyncio
import json
import shutil
import subprocess
from pathlib import Path

import av
import numpy as np
import pytest

from client.synthetic import decode_pattern
from recorder import composite
from recorder.frames import FrameAssembler
from recorder.segments import Segment, TrackWriter
from tests.unit.test_recorder_segments import packetize, vp8_frames

pytestmark = pytest.mark.skipif(shutil.which("ffmpeg") is None, reason="ffmpeg not installed")


def track_file(tmp: Path, name: str, frames: list[tuple[bytes, bool]]) -> Path:
    closed: list[Segment] = []
    asm = FrameAssembler("vp8")
    writer = TrackWriter(name, "vp8", tmp / name, 60, 0, closed.append)
    for i, p in enumerate(packetize(frames, 3000)):
        for f in asm.add(p, i * 0.001):
            writer.write(f)
    writer.close_segment()
    return closed[0].path


def opus_file(tmp: Path) -> Path:
    enc = av.CodecContext.create("libopus", "w")
    enc.sample_rate, enc.layout, enc.format = 48_000, "mono", "s16"
    closed: list[Segment] = []
    writer = TrackWriter("mic", "opus", tmp / "mic", 60, 0, closed.append)
    asm = FrameAssembler("opus")
    from aiortc.rtp import RtpPacket

    for i in range(100):
        frame = av.AudioFrame.from_ndarray(np.zeros((1, 960), dtype=np.int16), format="s16", layout="mono")
        frame.sample_rate, frame.pts = 48_000, i * 960
        for p in enc.encode(frame):
            packet = RtpPacket(payload_type=111, sequence_number=i, timestamp=i * 960, ssrc=3, payload=bytes(p))
            for f in asm.add(packet, i * 0.02):
                writer.write(f)
    writer.close_segment()
    return closed[0].path


def probe(path: Path) -> dict[str, object]:
    out = subprocess.run(
        ["ffprobe", "-v", "error", "-show_entries", "stream=codec_name,width,height", "-of", "json", str(path)],
        capture_output=True,
        check=True,
    ).stdout
    result: dict[str, object] = json.loads(out)
    return result


@pytest.mark.parametrize("layout,size", [("grid", (1280, 360)), ("speaker", (1280, 360))])
def test_both_layouts_render_with_offsets_and_audio(tmp_path: Path, layout: str, size: tuple[int, int]) -> None:
    frames = vp8_frames(60)  # 2 s of code 7
    a = track_file(tmp_path, "a", frames)
    b = track_file(tmp_path, "b", frames)
    mic = opus_file(tmp_path)
    tracks = [
        {"kind": "camera", "codec": "vp8", "start_s": 0.0},
        {"kind": "camera", "codec": "vp8", "start_s": 1.0},  # starts a second later
        {"kind": "microphone", "codec": "opus", "start_s": 0.0},
    ]
    progress: list[float] = []

    async def report(p: float) -> None:
        progress.append(p)

    out = tmp_path / f"{layout}.mp4"
    asyncio.run(composite.render([a, b, mic], tracks, layout, 3.0, out, report))
    streams = {s["codec_name"]: s for s in probe(out)["streams"]}  # type: ignore[union-attr]
    assert set(streams) == {"h264", "aac"}
    assert (streams["h264"]["width"], streams["h264"]["height"]) == size
    assert progress and progress == sorted(progress)
    with av.open(str(out)) as c:
        early = next(f for f in c.decode(video=0) if f.time is not None and f.time >= 0.5)
        gray = early.to_ndarray(format="gray")
    left = av.VideoFrame.from_ndarray(np.ascontiguousarray(gray[:360, :640]), format="gray").reformat(
        width=320, height=180
    )
    assert decode_pattern(left)[0] == 7  # the first track shows from the start
    if layout == "grid":
        assert gray[:360, 640:].mean() < 20  # the second starts at 1 s: black before it
