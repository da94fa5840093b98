"""``python -m bench.recording --json``: what the recorder costs and how fast it finishes.

- ``tracks_per_core``: the recorder's per-packet path for a 720p VP8 track at ~1.35 Mbit/s
  plus an Opus track, timed on one core — SRTP unprotect, RTP parse and receiver statistics
  (what the tapped aiortc receiver does), then :class:`FrameAssembler` →
  :class:`TrackWriter` WebM segments (codec copy) — as real-time seconds of media per CPU
  second, times two tracks, with every frame written (none lost). Not included: the UDP
  socket, asyncio, ICE/DTLS and RTCP, so this is an upper bound and a live recorder
  records fewer (not measured live: see bench/README.md);
  ``record_only_tracks_per_core`` is the assembly + mux share alone.
- ``stop_to_listed_p50_ms`` / ``_p99_ms``: from stop (open segments closed) to every object
  (segments, one file per track, ``manifest.json``) listed in MinIO: waiting uploads drained,
  tracks remuxed and uploaded, manifest written. ``--tracks`` tracks of ``--seconds`` each.
- ``live_*`` (``--live N``, ``bench.recording_live``): N publishers through a real media
  node to one recorder process; the recorder process's CPU time per track.
- ``composite_speed_x``: a 2×2 grid at 720p rendered from four 720p VP8 tracks + Opus by
  ``recorder.composite`` (ffmpeg), as a multiple of real time.

MinIO: ``MINIO_ENDPOINT`` (+ ``MINIO_ACCESS_KEY``/``MINIO_SECRET_KEY``) if set, else the
benchmark starts its own servers (``bench.infra``). Progress on stderr, JSON on stdout.
"""

from __future__ import annotations

import argparse
import asyncio
import fractions
import json
import os
import resource
import shutil
import statistics
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import av
import numpy as np
from aiortc.rtcrtpreceiver import StreamStatistics
from aiortc.rtp import RtpPacket
from pylibsrtp import Policy, Session

from bench.infra import _read_env_file, say, servers
from client.synthetic import encode_pattern
from recorder import composite
from recorder.assemble import assemble, recording_prefix
from recorder.frames import FrameAssembler
from recorder.segments import Segment, TrackWriter
from recorder.uploads import Upload, Uploader, minio_client

FPS = 30


def cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def vp8_720p(seconds: float, bitrate: int = 1_350_000) -> list[tuple[bytes, bool]]:
    enc = av.CodecContext.create("libvpx", "w")
    enc.width, enc.height, enc.pix_fmt = 1280, 720, "yuv420p"
    enc.time_base = fractions.Fraction(1, FPS)
    enc.bit_rate = bitrate
    enc.options = {"deadline": "realtime", "cpu-used": "8", "g": "90"}
    frames = []
    rng = np.random.default_rng(1)
    noise = rng.integers(0, 40, (720 * 3 // 2, 1280), dtype=np.uint8)
    for i in range(int(seconds * FPS)):
        picture = encode_pattern(1280, 720, 1, i) // 2 + np.roll(noise, i * 3, axis=1)  # motion and texture
        frame = av.VideoFrame.from_ndarray(picture, format="yuv420p")
        frame.pts = i
        frames += [(bytes(p), p.is_keyframe) for p in enc.encode(frame)]
    frames += [(bytes(p), p.is_keyframe) for p in enc.encode(None)]
    return frames


def opus(seconds: float) -> list[bytes]:
    enc = av.CodecContext.create("libopus", "w")
    enc.sample_rate, enc.layout, enc.format = 48_000, "mono", "s16"
    out = []
    for i in range(int(seconds * 50)):
        t = (np.arange(960) + i * 960) / 48_000
        pcm = (np.sin(2 * np.pi * 440 * t) * 8000).astype(np.int16).reshape(1, -1)
        frame = av.AudioFrame.from_ndarray(pcm, format="s16", layout="mono")
        frame.sample_rate, frame.pts = 48_000, i * 960
        out += [bytes(p) for p in enc.encode(frame)]
    return out


def rtp_video(frames: list[tuple[bytes, bool]], mtu: int = 1100) -> list[RtpPacket]:
    packets, seq = [], 0
    for i, (data, _) in enumerate(frames):
        chunks = [data[j : j + mtu] for j in range(0, len(data), mtu)]
        for k, chunk in enumerate(chunks):
            packets.append(
                RtpPacket(
                    payload_type=96,
                    marker=int(k == len(chunks) - 1),
                    sequence_number=seq & 0xFFFF,
                    timestamp=i * 3000,
                    ssrc=1,
                    payload=(b"\x10" if k == 0 else b"\x00") + chunk,
                )
            )
            seq += 1
    return packets


def rtp_audio(payloads: list[bytes]) -> list[RtpPacket]:
    return [
        RtpPacket(payload_type=111, sequence_number=i & 0xFFFF, timestamp=i * 960, ssrc=2, payload=p)
        for i, p in enumerate(payloads)
    ]


def record(packets: list[RtpPacket], codec: str, spool: Path, segment_s: float) -> list[Segment]:
    closed: list[Segment] = []
    asm = FrameAssembler(codec)
    writer = TrackWriter(f"p/{codec}", codec, spool, segment_s, 0, closed.append)
    step = 1 / FPS if codec == "vp8" else 0.02
    now = 0.0
    for p in packets:
        now += step / 4
        for f in asm.add(p, now):
            writer.write(f)
    for f in asm.flush(now + 1):
        writer.write(f)
    writer.close_segment()
    assert asm.lost == 0, f"{asm.lost} frames lost in the media path"
    return closed


def receive(protected: list[bytes], session: Session, clock_rate: int) -> list[RtpPacket]:
    """What the tapped receiver does per packet before the recorder: SRTP unprotect, parse,
    receiver statistics (aiortc's ``StreamStatistics``)."""
    stats = StreamStatistics(clock_rate)
    out = []
    for data in protected:
        packet = RtpPacket.parse(session.unprotect(data))
        stats.add(packet)
        out.append(packet)
    return out


def tracks_per_core(seconds: float, work: Path) -> dict[str, Any]:
    say(f"encoding {seconds:.0f} s of 720p VP8 and Opus (the input, not timed)")
    video, audio = vp8_720p(seconds), opus(seconds)
    vbits = sum(len(d) for d, _ in video) * 8 / seconds
    key = os.urandom(30)
    tx = Session(Policy(key=key, ssrc_type=Policy.SSRC_ANY_OUTBOUND))
    rx = Session(Policy(key=key, ssrc_type=Policy.SSRC_ANY_INBOUND))
    vprot = [tx.protect(p.serialize()) for p in rtp_video(video)]
    aprot = [tx.protect(p.serialize()) for p in rtp_audio(audio)]
    start = cpu()
    vp, ap = receive(vprot, rx, 90_000), receive(aprot, rx, 48_000)
    received = cpu() - start
    start = cpu()
    segments = record(vp, "vp8", work / "v", 10) + record(ap, "opus", work / "a", 10)
    recorded = cpu() - start
    frames = sum(s.frames for s in segments)
    assert frames == len(video) + len(audio), "every frame written"
    return {
        "tracks_per_core": round(2 * seconds / (received + recorded), 1),
        "video_kbps": round(vbits / 1000),
        "packets_per_track_s": round((len(vp) + len(ap)) / seconds / 2),
        "receive_cpu_s": round(received, 3),
        "record_cpu_s": round(recorded, 3),
        "record_only_tracks_per_core": round(2 * seconds / recorded, 1),
        "frames_written": frames,
        "frames_lost": 0,
    }


async def stop_to_listed(
    endpoint: str, access: str, secret: str, runs: int, tracks: int, seconds: float, work: Path
) -> dict[str, Any]:
    client = minio_client(endpoint, access, secret)
    bucket = "roomlog-bench-recording"
    done: list[Upload] = []

    async def uploaded(u: Upload) -> None:
        done.append(u)

    async def failed(_: str, exc: Exception) -> None:
        raise exc

    uploader = Uploader(client, bucket, spool_limit_bytes=1 << 34, give_up_s=60, on_uploaded=uploaded, on_failed=failed)
    await uploader.ensure_bucket()
    runner = asyncio.create_task(uploader.run())
    video = rtp_video(vp8_720p(seconds))
    audio = rtp_audio(opus(seconds))
    times = []
    try:
        for run in range(runs):
            recording_id = f"bench-{uuid.uuid4().hex[:8]}"
            prefix = recording_prefix("bench-room", recording_id)
            spool = work / recording_id
            all_segments: list[tuple[str, Segment]] = []
            for t in range(tracks):
                codec, packets = ("vp8", video) if t % 2 == 0 else ("opus", audio)
                track_id = f"peer{t // 2}/{codec}"
                for s in record(packets, codec, spool / str(t), seconds / 3):
                    all_segments.append((track_id, s))
                uploader.add(
                    Upload(
                        recording_id,
                        f"{prefix}{track_id}/track.json",
                        data=json.dumps({"track_id": track_id, "codec": codec, "start_s": 0}).encode(),
                    )
                )
            # all but each track's last segment are uploaded while recording; stop starts here
            last = {tid: max(s.index for t2, s in all_segments if t2 == tid) for tid, _ in all_segments}
            for tid, s in all_segments:
                if s.index != last[tid]:
                    uploader.add(Upload(recording_id, f"{prefix}{tid}/{s.index}.webm", path=s.path))
            await uploader.drained(recording_id)
            stop = time.perf_counter()
            for tid, s in all_segments:
                if s.index == last[tid]:
                    uploader.add(Upload(recording_id, f"{prefix}{tid}/{s.index}.webm", path=s.path))
            await uploader.drained(recording_id)
            manifest = await asyncio.to_thread(assemble, client, bucket, "bench-room", recording_id, None, "now")
            names = {o.object_name for o in client.list_objects(bucket, prefix=prefix, recursive=True)}
            times.append((time.perf_counter() - stop) * 1000)
            want = {f"{prefix}manifest.json"} | {t["object_key"] for t in manifest["tracks"]}
            assert want <= names, want - names
            say(f"run {run + 1}/{runs}: stop → listed {times[-1]:.0f} ms ({len(names)} objects)")
            shutil.rmtree(spool, ignore_errors=True)
    finally:
        runner.cancel()
    times.sort()
    p99 = times[min(len(times) - 1, int(round(0.99 * (len(times) - 1))))]
    return {
        "stop_to_listed_p50_ms": round(statistics.median(times)),
        "stop_to_listed_p99_ms": round(p99),
        "stop_runs": runs,
        "stop_tracks": tracks,
        "stop_track_seconds": seconds,
    }


async def composite_speed(seconds: float, work: Path) -> dict[str, Any]:
    say(f"composite: four {seconds:.0f} s 720p tracks + audio into a 2x2 grid")
    inputs, tracks = [], []
    video = rtp_video(vp8_720p(seconds))
    for t in range(4):
        segments = record(video, "vp8", work / f"c{t}", seconds + 1)
        inputs.append(segments[0].path)
        tracks.append({"kind": "camera", "codec": "vp8", "start_s": 0.0})
    audio = record(rtp_audio(opus(seconds)), "opus", work / "ca", seconds + 1)
    inputs.append(audio[0].path)
    tracks.append({"kind": "microphone", "codec": "opus", "start_s": 0.0})

    async def progress(_: float) -> None:
        return None

    render_s = await composite.render(inputs, tracks, "grid", seconds, work / "grid.mp4", progress)
    return {
        "composite_speed_x": round(seconds / render_s, 2),
        "composite_render_s": round(render_s, 2),
        "composite_seconds": seconds,
        "composite_output": "1280x720 H.264 + AAC",
    }


def measure_with_servers(env: dict[str, str], args: argparse.Namespace, work: Path, result: dict[str, Any]) -> None:
    access, secret = env.get("MINIO_ACCESS_KEY", "roomlog"), env.get("MINIO_SECRET_KEY", "roomlog-secret")
    result.update(asyncio.run(stop_to_listed(env["MINIO_ENDPOINT"], access, secret, args.runs, args.tracks, 6, work)))
    if args.live:
        from bench.recording_live import live

        result.update(asyncio.run(live(env, args.live, args.live_window, work)))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.recording", description=__doc__.split("\n\n")[0])
    parser.add_argument("--json", action="store_true", help="print the result as one JSON object")
    parser.add_argument("--seconds", type=float, default=20.0, help="media length for tracks_per_core")
    parser.add_argument("--runs", type=int, default=20, help="stop → listed repetitions")
    parser.add_argument("--tracks", type=int, default=4, help="tracks per recording for stop → listed")
    parser.add_argument("--composite-seconds", type=float, default=10.0)
    parser.add_argument(
        "--live",
        type=int,
        default=0,
        metavar="N",
        help="also measure a live recorder process recording N publishers (720p VP8 + Opus) through a media node",
    )
    parser.add_argument("--live-window", type=float, default=20.0, help="seconds of recorder CPU time measured")
    args = parser.parse_args(argv)
    result: dict[str, Any] = {"cores": os.cpu_count()}
    with tempfile.TemporaryDirectory(prefix="bench-recording-") as tmp:
        work = Path(tmp)
        result.update(tracks_per_core(args.seconds, work))
        result.update(asyncio.run(composite_speed(args.composite_seconds, work)))
        if os.environ.get("MINIO_ENDPOINT") and os.environ.get("KAFKA_BOOTSTRAP"):
            measure_with_servers(dict(os.environ), args, work, result)
        else:
            with servers() as s:
                measure_with_servers(_read_env_file(s.run_dir / "infra.env"), args, work, result)
    print(json.dumps(result, indent=None if args.json else 2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
