"""Recorder media path without network: RTP packets of real VP8/Opus frames → frames
(reordered, a lost packet dropped) → WebM segments (codec copy) → one remuxed track
file whose packets are the sent frames, byte for byte."""

from __future__ import annotations

import fractions
from pathlib import Path

import av
import numpy as np
from aiortc.rtp import RtpPacket

from client.synthetic import encode_pattern
from recorder.assemble import gaps_of, remux
from recorder.frames import FrameAssembler, vp8_size
from recorder.segments import Segment, TrackWriter


def vp8_frames(n: int, fps: int = 30) -> list[tuple[bytes, bool]]:
    enc = av.CodecContext.create("libvpx", "w")
    enc.width, enc.height, enc.pix_fmt = 320, 180, "yuv420p"
    enc.time_base = fractions.Fraction(1, fps)
    enc.options = {"g": "15"}  # a keyframe every 15 frames (0.5 s)
    out = []
    for i in range(n):
        frame = av.VideoFrame.from_ndarray(encode_pattern(320, 180, 7, i), format="yuv420p")
        frame.pts = i
        out += [(bytes(p), p.is_keyframe) for p in enc.encode(frame)]
    out += [(bytes(p), p.is_keyframe) for p in enc.encode(None)]
    return out


def packetize(frames: list[tuple[bytes, bool]], step: int, mtu: int = 400) -> list[RtpPacket]:
    packets, seq = [], 65_000  # wraps past 65535
    for i, (data, _) in enumerate(frames):
        chunks = [data[j : j + mtu] for j in range(0, len(data), mtu)]
        for k, chunk in enumerate(chunks):
            descriptor = b"\x10" if k == 0 else b"\x00"
            packets.append(
                RtpPacket(
                    payload_type=96,
                    marker=int(k == len(chunks) - 1),
                    sequence_number=seq & 0xFFFF,
                    timestamp=(4_294_000_000 + i * step) & 0xFFFFFFFF,
                    ssrc=1,
                    payload=descriptor + chunk,
                )
            )
            seq += 1
    return packets


def test_vp8_packets_become_keyframe_aligned_segments_and_one_track_file(tmp_path: Path) -> None:
    frames = vp8_frames(90)  # 3 s at 30 fps
    assert vp8_size(frames[0][0]) == (320, 180)
    packets = packetize(frames, 3000)
    # swap two packets (reordering) and lose every packet of frame 40 (never retransmitted)
    packets[10], packets[11] = packets[11], packets[10]
    lost_ts = packets[0].timestamp + 40 * 3000 & 0xFFFFFFFF
    packets = [p for p in packets if p.timestamp != lost_ts]
    closed: list[Segment] = []
    asm = FrameAssembler("vp8", hold_s=0.3)
    writer = TrackWriter("p1/cam", "vp8", tmp_path / "spool", 1.0, 0, closed.append)
    now = 0.0
    for p in packets:
        now += 0.01
        for f in asm.add(p, now):
            writer.write(f)
    for f in asm.flush(now + 1):
        writer.write(f)
    writer.close_segment()
    # frame 40 lost; 41..44 reference it and are dropped up to the keyframe at 45
    assert asm.lost == 1 + 4
    assert [s.index for s in closed] == [0, 1, 2]
    assert sum(s.frames for s in closed) == 90 - 5
    for s in closed:
        with av.open(str(s.path)) as c:
            first = next(p for p in c.demux(c.streams[0]) if p.pts is not None)
            assert first.is_keyframe  # every segment starts on a keyframe
            assert c.streams[0].codec_context.name == "vp8"
    out = tmp_path / "track.webm"
    info = remux([(s.index, s.path) for s in closed], out)
    assert info["frames"] == 85 and (info["width"], info["height"]) == (320, 180)
    with av.open(str(out)) as c:
        got = [bytes(p) for p in c.demux(c.streams[0]) if p.pts is not None]
    sent = [d for i, (d, _) in enumerate(frames) if not 40 <= i <= 44]
    assert got == sent
    assert abs(info["end_s"] - 3.0) < 0.05


def test_opus_packets_segment_on_time_and_a_missing_segment_is_a_gap(tmp_path: Path) -> None:
    enc = av.CodecContext.create("libopus", "w")
    enc.sample_rate, enc.layout, enc.format = 48_000, "stereo", "s16"
    payloads = []
    for i in range(150):
        frame = av.AudioFrame.from_ndarray(np.zeros((1, 1920), dtype=np.int16), format="s16", layout="stereo")
        frame.sample_rate, frame.pts = 48_000, i * 960
        payloads += [bytes(p) for p in enc.encode(frame)]
    closed: list[Segment] = []
    asm = FrameAssembler("opus")
    writer = TrackWriter("p1/mic", "opus", tmp_path, 1.0, 0, closed.append)
    for i, data in enumerate(payloads):
        packet = RtpPacket(payload_type=111, sequence_number=i, timestamp=i * 960, ssrc=2, payload=data)
        for f in asm.add(packet, i * 0.02):
            writer.write(f)
    writer.close_segment()
    assert [s.index for s in closed] == [0, 1, 2] and sum(s.frames for s in closed) == len(payloads)
    kept = [closed[0], closed[2]]
    info = remux([(s.index, s.path) for s in kept], tmp_path / "mic.webm")
    assert gaps_of([0, 2], info["spans"]) == [{"segment": 1, "from_s": 1.0, "to_s": 2.0}]
