"""H.264 into fragmented MP4 and VP9 into WebM, codec copy: RTP packets (as RFC 6184 and
RFC 9628 packetize them) → frames → keyframe-aligned segments → one track file that
ffprobe reads with the sent codec, size and frame count, and whose frames decode to the
sent patterns."""

from __future__ import annotations

import fractions
import json
import subprocess
from pathlib import Path

import av
from aiortc.rtp import RtpPacket

from client.synthetic import decode_pattern, encode_pattern
from recorder.assemble import remux
from recorder.frames import FrameAssembler
from recorder.payloads import h264_size
from recorder.segments import Segment, TrackWriter


def encoded(codec: str, n: int, options: dict[str, str]) -> list[bytes]:
    enc = av.CodecContext.create(codec, "w")
    enc.width, enc.height, enc.pix_fmt = 320, 180, "yuv420p"
    enc.time_base = fractions.Fraction(1, 30)
    enc.options = options
    out = []
    for i in range(n):
        frame = av.VideoFrame.from_ndarray(encode_pattern(320, 180, 9, i), format="yuv420p")
        frame.pts = i
        out += [bytes(p) for p in enc.encode(frame)]
    return out + [bytes(p) for p in enc.encode(None)]


def h264_packets(frames: list[bytes], mtu: int = 300) -> list[RtpPacket]:
    """Packetization mode 1: small parameter sets in a STAP-A, large NALs as FU-A."""
    packets: list[RtpPacket] = []
    seq = 65_500
    for i, frame in enumerate(frames):
        nals = [n.lstrip(b"\x00") for n in frame.split(b"\x00\x00\x01") if n.strip(b"\x00")]
        payloads: list[bytes] = []
        small = [n for n in nals if n[0] & 0x1F in (7, 8)]
        if small:
            payloads.append(bytes([24]) + b"".join(len(n).to_bytes(2, "big") + n for n in small))
        for nal in (n for n in nals if n[0] & 0x1F not in (7, 8)):
            if len(nal) <= mtu:
                payloads.append(nal)
                continue
            body = nal[1:]
            chunks = [body[j : j + mtu] for j in range(0, len(body), mtu)]
            for k, chunk in enumerate(chunks):
                header = (0x80 if k == 0 else 0) | (0x40 if k == len(chunks) - 1 else 0) | (nal[0] & 0x1F)
                payloads.append(bytes([(nal[0] & 0xE0) | 28, header]) + chunk)
        for k, payload in enumerate(payloads):
            packets.append(
                RtpPacket(
                    payload_type=102,
                    marker=int(k == len(payloads) - 1),
                    sequence_number=seq & 0xFFFF,
                    timestamp=i * 3000,
                    ssrc=5,
                    payload=payload,
                )
            )
            seq += 1
    return packets


def vp9_packets(frames: list[bytes], mtu: int = 400) -> list[RtpPacket]:
    """Non-flexible mode, a 15-bit picture id; P set on inter frames."""
    packets: list[RtpPacket] = []
    for i, frame in enumerate(frames):
        inter = bool(frame[0] >> 2 & 0x01) if frame else True  # frame_type of profile 0
        chunks = [frame[j : j + mtu] for j in range(0, len(frame), mtu)]
        for k, chunk in enumerate(chunks):
            b0 = 0x80 | (0x40 if inter else 0) | (0x08 if k == 0 else 0) | (0x04 if k == len(chunks) - 1 else 0)
            descriptor = bytes([b0, 0x80 | (i >> 8 & 0x7F), i & 0xFF])
            packets.append(
                RtpPacket(
                    payload_type=98,
                    marker=int(k == len(chunks) - 1),
                    sequence_number=len(packets),
                    timestamp=i * 3000,
                    ssrc=6,
                    payload=descriptor + chunk,
                )
            )
    return packets


def probe(path: Path) -> dict[str, object]:
    out = subprocess.run(
        ["ffprobe", "-v", "error", "-count_frames", "-show_entries", "stream=codec_name,width,height,nb_read_frames"]
        + ["-of", "json", str(path)],
        capture_output=True,
        check=True,
    ).stdout
    stream: dict[str, object] = json.loads(out)["streams"][0]
    return stream


def record(codec: str, packets: list[RtpPacket], spool: Path) -> list[Segment]:
    closed: list[Segment] = []
    asm = FrameAssembler(codec)
    writer = TrackWriter(f"p/{codec}", codec, spool, 1.0, 0, closed.append)
    for n, p in enumerate(packets):
        for f in asm.add(p, n * 0.001):
            writer.write(f)
    for f in asm.flush(10.0):
        writer.write(f)
    writer.close_segment()
    assert asm.lost == 0
    return closed


def test_h264_becomes_fragmented_mp4_segments_and_one_mp4_track(tmp_path: Path) -> None:
    frames = encoded("libx264", 75, {"g": "15", "profile": "baseline", "tune": "zerolatency", "preset": "ultrafast"})
    assert h264_size(frames[0]) == (320, 180)
    closed = record("h264", h264_packets(frames), tmp_path / "spool")
    assert [s.path.name for s in closed] == ["0.mp4", "1.mp4", "2.mp4"]
    assert sum(s.frames for s in closed) == 75 and closed[0].width == 320 and closed[0].height == 180
    head = closed[0].path.read_bytes()[:64]
    assert b"ftyp" in head and b"moov" in head  # empty_moov: the moov comes first, fragments follow
    assert b"moof" in closed[0].path.read_bytes()
    info = remux([(s.index, s.path) for s in closed], tmp_path / "track.mp4")
    assert info["frames"] == 75
    assert probe(tmp_path / "track.mp4") == {"codec_name": "h264", "width": 320, "height": 180, "nb_read_frames": "75"}
    with av.open(str(tmp_path / "track.mp4")) as c:
        assert [decode_pattern(f) for f in c.decode(video=0)] == [(9, i) for i in range(75)]


def test_vp9_becomes_webm(tmp_path: Path) -> None:
    frames = encoded("libvpx-vp9", 45, {"g": "15", "deadline": "realtime", "cpu-used": "8", "lag-in-frames": "0"})
    closed = record("vp9", vp9_packets(frames), tmp_path / "spool")
    assert [s.path.name for s in closed] == ["0.webm", "1.webm"]
    assert (closed[0].width, closed[0].height) == (320, 180)
    remux([(s.index, s.path) for s in closed], tmp_path / "track.webm")
    assert probe(tmp_path / "track.webm") == {
        "codec_name": "vp9",
        "width": 320,
        "height": 180,
        "nb_read_frames": "45",
    }
    with av.open(str(tmp_path / "track.webm")) as c:
        assert [decode_pattern(f) for f in c.decode(video=0)] == [(9, i) for i in range(45)]
