"""Helpers of the recording tests: the stack with recorders, publishers, ffprobe."""

from __future__ import annotations

import asyncio
import contextlib
import json
import subprocess
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Any

import av
import httpx
import numpy as np
from aiortc import RTCRtpTransceiver
from aiortc.codecs.base import Encoder
from aiortc.codecs.h264 import H264Encoder
from aiortc.codecs.vpx import Vp8Encoder
from minio import Minio

from client import LocalTrack, Room
from client.aiortc_glue import use_encoder
from client.synthetic import PatternVideoTrack, ToneAudioTrack, decode_pattern
from producers.kafka import EventProducer
from producers.topics import Topics
from tests.harness import API_SECRET, Infra, Service, http_ready, media_stack, mint_token, streams_ready, wait_for

BUCKET = "roomlog-recordings"


def recorder_service(infra: Infra, prefix: str, log_dir: Path, base: str, name: str, **settings: Any) -> Service:
    env = {
        "KAFKA_BOOTSTRAP": infra.kafka,
        "ROOMLOG_TOPIC_PREFIX": prefix,
        "MINIO_ENDPOINT": infra.minio_endpoint,
        "MINIO_ACCESS_KEY": infra.minio_access_key,
        "MINIO_SECRET_KEY": infra.minio_secret_key,
        "ROOMLOG_RECORDER_API_URL": base,
        "ROOMLOG_RECORDER_API_SECRET": API_SECRET,
        "ROOMLOG_RECORDER_RECORDER_ID": name,
        "ROOMLOG_RECORDER_FORBID_CODECS": "true",
        "ROOMLOG_RECORDER_SPOOL_DIR": str(log_dir / "spool"),
    }
    env.update({f"ROOMLOG_RECORDER_{k.upper()}": str(v) for k, v in settings.items()})
    return Service(name, "recorder", env, log_dir / f"{name}.log")


async def start_recording_stack(
    infra: Infra,
    topics: Topics,
    prefix: str,
    producer: EventProducer,
    services: list[Service],
    log_dir: Path,
    recorders: int = 1,
    **recorder_settings: Any,
) -> tuple[str, list[Service]]:
    stack = media_stack(infra, prefix, log_dir, forbid_codecs="true")
    stack[-1].env.update(
        {
            "MINIO_ENDPOINT": infra.minio_endpoint,
            "MINIO_ACCESS_KEY": infra.minio_access_key,
            "MINIO_SECRET_KEY": infra.minio_secret_key,
        }
    )
    for service in stack:
        services.append(service.start())
    base = f"http://127.0.0.1:{stack[-1].env['ROOMLOG_API_PORT']}"
    await streams_ready(producer, infra, topics, stack[0])
    await http_ready(f"{base}/healthz", stack[-1])
    recs = [
        recorder_service(infra, prefix, log_dir, base, f"{prefix}rec{i}", **recorder_settings).start()
        for i in range(recorders)
    ]
    services += recs
    return base, recs


class Vp9Encoder(Encoder):
    """VP9 for a test publisher (aiortc has no VP9): libvpx-vp9 through PyAV, RTP payloads
    per RFC 9628 in non-flexible mode (one spatial layer, a 15-bit picture id, P set on
    inter frames), 1 s keyframe interval and a keyframe when asked."""

    MTU = 1100

    def __init__(self) -> None:
        self.codec: av.VideoCodecContext | None = None
        self.picture_id = 0
        self.target_bitrate = 500_000

    def encode(self, frame: Any, force_keyframe: bool = False) -> tuple[list[bytes], int]:
        timestamp = int(frame.pts * frame.time_base * 90_000)  # before PyAV rescales it
        if self.codec is None:
            codec = av.CodecContext.create("libvpx-vp9", "w")
            assert isinstance(codec, av.VideoCodecContext)
            codec.width, codec.height, codec.pix_fmt = frame.width, frame.height, "yuv420p"
            codec.time_base = Fraction(1, 90_000)
            codec.bit_rate = self.target_bitrate
            codec.options = {"deadline": "realtime", "cpu-used": "8", "lag-in-frames": "0", "g": "15"}
            self.codec = codec
        frame.pict_type = av.video.frame.PictureType.I if force_keyframe else av.video.frame.PictureType.NONE
        data = b"".join(bytes(p) for p in self.codec.encode(frame))
        if not data:
            return [], timestamp
        inter = bool(data[0] >> 2 & 0x01)  # frame_type of profile 0
        chunks = [data[i : i + self.MTU] for i in range(0, len(data), self.MTU)]
        pid = self.picture_id
        self.picture_id = (pid + 1) & 0x7FFF
        payloads = []
        for k, chunk in enumerate(chunks):
            b0 = 0x80 | (0x40 if inter else 0) | (0x08 if k == 0 else 0) | (0x04 if k == len(chunks) - 1 else 0)
            payloads.append(bytes([b0, 0x80 | pid >> 8, pid & 0xFF]) + chunk)
        return payloads, timestamp

    def pack(self, packet: Any) -> tuple[list[bytes], int]:
        raise NotImplementedError("encodes frames only")


ENCODERS: dict[str, type[Encoder]] = {"h264": H264Encoder, "vp8": Vp8Encoder, "vp9": Vp9Encoder}


class SentFrames(Encoder):
    """The publisher's own encoder (aiortc's), noting the RTP timestamp (90 kHz, from 0 at
    the track's first frame) of every frame it encodes: what the publisher really sent. The
    pattern's counter is not that: a paused sender (dynacast: nobody subscribes) reads and
    drops frames before its encoder, so the counter runs on while nothing is sent."""

    def __init__(self, inner: Encoder, timestamps: list[int]) -> None:
        self.inner = inner
        self.timestamps = timestamps

    def encode(self, frame: Any, force_keyframe: bool = False) -> tuple[list[bytes], int]:
        payloads, timestamp = self.inner.encode(frame, force_keyframe)
        if payloads:
            self.timestamps.append(timestamp)
        return payloads, timestamp

    def pack(self, packet: Any) -> tuple[list[bytes], int]:
        return self.inner.pack(packet)

    @property
    def target_bitrate(self) -> int:
        return int(getattr(self.inner, "target_bitrate", 0))

    @target_bitrate.setter
    def target_bitrate(self, bitrate: int) -> None:
        if hasattr(self.inner, "target_bitrate"):
            self.inner.target_bitrate = bitrate


@dataclass
class Publisher:
    identity: str
    code: int
    room: Room
    video: PatternVideoTrack
    audio: ToneAudioTrack
    events: list[tuple[str, Any]] = field(default_factory=list)
    #: RTP timestamps of the camera frames the publisher encoded (``video_codec`` given).
    sent: list[int] = field(default_factory=list)


def missing_frames(
    path: Path, frames: list[tuple[int, int]], sent: list[int], fps: int = 15
) -> tuple[list[int], list[int]]:
    """(sent but not in the file, in the file but never sent): the counters of the camera
    frames the publisher encoded between the file's first and last frame that the file lacks,
    and the file's frames the publisher never encoded. The file's packet times (90 kHz) are
    placed on the publisher's timeline by the decoded pattern counters (the median offset:
    a misread counter does not move it); the publisher's timestamps are ``counter * step``."""
    step = 90_000 // fps
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        assert stream.time_base is not None
        base = stream.time_base
        pts = sorted(round(float(p.pts * base) * 90_000) for p in container.demux(stream) if p.pts is not None)
    assert len(pts) == len(frames), (len(pts), len(frames))
    offsets = sorted(counter * step - t for t, (_, counter) in zip(pts, frames, strict=True))
    offset = offsets[len(offsets) // 2]
    # WebM keeps milliseconds: each time is put back on the publisher's frame grid
    recorded = {round((t + offset) / step) * step for t in pts}
    assert len(recorded) == len(pts), "two frames of the file at one publisher timestamp"
    span = [t for t in sent if min(recorded) <= t <= max(recorded)]
    missing = sorted(t // step for t in set(span) - recorded)
    extra = sorted(t // step for t in recorded - set(sent))
    return missing, extra


async def publisher(base: str, room_id: str, identity: str, code: int, video_codec: str | None = None) -> Publisher:
    ws_url = base.replace("http", "ws") + "/v1/rtc"
    room = await Room.connect(
        ws_url, await mint_token(base, identity, ["join", "publish", "subscribe"], room_id), room_id, name=identity
    )
    video = PatternVideoTrack(code, width=320, height=180, fps=15)
    audio = ToneAudioTrack()
    p = Publisher(identity, code, room, video, audio)
    room.on(lambda kind, payload: p.events.append((kind, payload)))

    def count_sent(transceiver: RTCRtpTransceiver) -> None:
        assert video_codec is not None
        use_encoder(transceiver.sender, SentFrames(ENCODERS[video_codec.lower()](), p.sent))

    # source ids are unique in a room (a subscription is keyed by source id)
    await room.publish(
        [
            LocalTrack(
                video, f"{identity}-cam", "camera", codec=video_codec, prepare=count_sent if video_codec else None
            ),
            LocalTrack(audio, f"{identity}-mic", "microphone"),
        ]
    )
    return p


async def close_all(*rooms: Room) -> None:
    for room in rooms:
        with contextlib.suppress(Exception):
            await asyncio.wait_for(room.close(), 10)


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def wait_status(
    client: httpx.AsyncClient, recording_id: str, headers: dict[str, str], status: str, timeout: float
) -> dict[str, Any]:
    async def check() -> dict[str, Any] | None:
        r = await client.get(f"/v1/recordings/{recording_id}", headers=headers)
        body: dict[str, Any] = r.json()
        if body.get("status") == "failed" and status != "failed":
            raise AssertionError(f"recording failed: {body}")
        return body if r.status_code == 200 and body.get("status") == status else None

    result: dict[str, Any] = await wait_for(check, timeout, f"recording {status}")
    return result


def ffprobe(path: Path) -> dict[str, Any]:
    out = subprocess.run(
        [
            "ffprobe",
            "-v",
            "error",
            "-count_frames",
            "-show_entries",
            "stream=codec_name,codec_type,width,height,nb_read_frames:format=duration",
            "-of",
            "json",
            str(path),
        ],
        capture_output=True,
        check=True,
        timeout=120,
    ).stdout
    probed: dict[str, Any] = json.loads(out)
    return probed


def pattern_counters(path: Path) -> list[tuple[int, int]]:
    """(code, counter) of every frame of a video file (the test decodes; the recorder never does)."""
    out = []
    with av.open(str(path)) as container:
        for frame in container.decode(video=0):
            out.append(decode_pattern(frame))
    return out


def minio(infra: Infra) -> Minio:
    return Minio(
        infra.minio_endpoint, access_key=infra.minio_access_key, secret_key=infra.minio_secret_key, secure=False
    )


def object_bytes(client: Minio, key: str) -> bytes:
    response = client.get_object(BUCKET, key)
    try:
        return bytes(response.read())
    finally:
        response.close()
        response.release_conn()


async def admin_headers(base: str) -> dict[str, str]:
    return bearer(await mint_token(base, "admin", ["admin"]))


async def record_headers(base: str, room_id: str) -> dict[str, str]:
    return bearer(await mint_token(base, "rita", ["join", "record"], room_id))


async def create_room(client: httpx.AsyncClient, room_id: str, headers: dict[str, str]) -> None:
    r = await client.post("/v1/rooms", json={"room_id": room_id}, headers=headers)
    assert r.status_code == 201, r.text


def tile_codes(path: Path, at_s: list[float], tile: tuple[int, int] = (640, 360)) -> dict[float, list[int]]:
    """Pattern codes in each tile of a composite's frames nearest ``at_s`` (left to right)."""
    wanted = sorted(at_s)
    out: dict[float, list[int]] = {}
    with av.open(str(path)) as container:
        for frame in container.decode(video=0):
            if not wanted or frame.time is None or frame.time < wanted[0]:
                continue
            gray = frame.to_ndarray(format="gray")
            codes = []
            for x in range(0, gray.shape[1] - tile[0] + 1, tile[0]):
                crop = np.ascontiguousarray(gray[0 : tile[1], x : x + tile[0]], dtype=np.uint8)
                small = av.VideoFrame.from_ndarray(crop, format="gray").reformat(width=320, height=180)
                codes.append(decode_pattern(small)[0])
            out[wanted.pop(0)] = codes
    return out
