"""Live recorder cost: ``python -m bench.recording --live N`` adds these keys.

N publishers send pre-encoded 720p VP8 (~1.35 Mbit/s) + Opus (``bench.sfu_media`` loops:
aiortc packetizes them, nothing is encoded in the load generator) through one real media
node (codec factories raising) to one ``python -m recorder`` process (codec factories
raising), all over real sockets in the loopback namespace, with streams, the api, Kafka,
Postgres and MinIO running. Once every track is being recorded, the recorder process's
CPU time (``/proc/<pid>/stat`` utime + stime) is read over ``window_s``:

- ``live_tracks_per_core`` = tracks × window / recorder CPU seconds (one core fully busy
  would record that many tracks);
- ``live_recorder_cpu_ms_per_track_s``: the same, inverted;
- ``live_video_frames_missing``: per video track, the frames the publisher sent over the
  recorded span minus the frames in the file (0: none lost), summed.

It measures N tracks at a time, not the saturation point: it extrapolates CPU time, which
holds while the process keeps up (check ``live_video_frames_missing``).
"""

from __future__ import annotations

import asyncio
import json
import os
import time
from pathlib import Path
from typing import Any

import httpx

from bench.infra import say
from bench.sfu_media import FPS, LoopTrack, load_or_encode
from client import LocalTrack, Room
from producers.admin import create_topics
from producers.kafka import EventProducer
from producers.topics import Topics
from tests.e2e.recording_stack import (
    admin_headers,
    close_all,
    create_room,
    minio,
    object_bytes,
    record_headers,
    start_recording_stack,
    wait_status,
)
from tests.harness import REPO, Infra, Service, mint_token, unique, wait_for

CLK_TCK = os.sysconf("SC_CLK_TCK")


def process_cpu_s(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK  # utime, stime


async def publish(base: str, room_id: str, n: int, loops: Any) -> tuple[Room, LoopTrack]:
    video, audio = loops
    room = await Room.connect(
        base.replace("http", "ws") + "/v1/rtc",
        await mint_token(base, f"pub{n}", ["join", "publish", "subscribe"], room_id),
        room_id,
        name=f"pub{n}",
    )
    track = LoopTrack(video)
    await room.publish(
        [LocalTrack(track, f"pub{n}-cam", "camera"), LocalTrack(LoopTrack(audio), f"pub{n}-mic", "microphone")]
    )
    return room, track


async def live(env: dict[str, str], publishers: int, window_s: float, work: Path) -> dict[str, Any]:
    infra = Infra(
        env["KAFKA_BOOTSTRAP"],
        env["DATABASE_URL"],
        env["MINIO_ENDPOINT"],
        env.get("MINIO_ACCESS_KEY", "roomlog"),
        env.get("MINIO_SECRET_KEY", "roomlog-secret"),
    )
    prefix = unique("b") + "-"
    await create_topics(infra.kafka, prefix, quiet=True)
    topics = Topics(prefix)
    loops = load_or_encode(REPO / ".run" / "bench-sfu" / "media", say)
    services: list[Service] = []
    rooms: list[Room] = []
    try:
        async with EventProducer(infra.kafka, client_id="bench-recording") as producer:
            say("starting streams, api, media node and one recorder")
            base, (recorder,) = await start_recording_stack(infra, topics, prefix, producer, services, work)
            room_id = unique("live-")
            async with httpx.AsyncClient(base_url=base, timeout=30) as client:
                await create_room(client, room_id, await admin_headers(base))
                sent = []
                for n in range(publishers):
                    room, track = await publish(base, room_id, n, loops)
                    rooms.append(room)
                    sent.append(track)
                rec = await record_headers(base, room_id)
                r = await client.post(f"/v1/rooms/{room_id}/recordings", json={"segment_s": 10}, headers=rec)
                assert r.status_code == 201, r.text
                recording_id = r.json()["recording_id"]
                await wait_for(
                    lambda: recorder.log_path.read_text().count("recording track") >= 2 * publishers,
                    60,
                    "every track recorded",
                )
                await asyncio.sleep(3)  # warm up
                say(f"measuring the recorder's CPU over {window_s:.0f} s ({2 * publishers} tracks)")
                cpu0, t0 = process_cpu_s(recorder.pid), time.monotonic()
                await asyncio.sleep(window_s)
                cpu = process_cpu_s(recorder.pid) - cpu0
                wall = time.monotonic() - t0
                assert (await client.delete(f"/v1/recordings/{recording_id}", headers=rec)).status_code == 202
                done = await wait_status(client, recording_id, rec, "completed", 120)
    finally:
        await close_all(*rooms)
        for service in services:
            service.stop(timeout=10)
    store = minio(infra)
    manifest = json.loads(object_bytes(store, done["manifest"]["object_key"]))
    cams = [t for t in manifest["tracks"] if t["kind"] == "camera"]
    missing = sum(max(0, round(t["duration_s"] * FPS) - t["frames"]) for t in cams)
    tracks = 2 * publishers
    return {
        "live_tracks": tracks,
        "live_window_s": round(wall, 1),
        "live_recorder_cpu_s": round(cpu, 2),
        "live_recorder_cpu_ms_per_track_s": round(1000 * cpu / (tracks * wall), 2),
        "live_tracks_per_core": round(tracks * wall / cpu, 1) if cpu else None,
        "live_video_frames_missing": missing,
        "live_video_frames": sum(t["frames"] for t in cams),
    }
