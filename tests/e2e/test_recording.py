"""Recording a room end to end: api → streams → recorder (codec factories raising) →
MinIO files ffprobe reads, Postgres rows, presigned downloads."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from aiortc.codecs import CODECS

from media_node.aiortc_glue import register_vp9
from producers.kafka import EventProducer
from producers.sessions import RecordingSegmentUploaded, RecordingStarted
from producers.topics import Topics
from tests.e2e.recording_stack import (
    Publisher,
    admin_headers,
    close_all,
    create_room,
    ffprobe,
    minio,
    missing_frames,
    object_bytes,
    pattern_counters,
    publisher,
    record_headers,
    start_recording_stack,
    tile_codes,
    wait_status,
)
from tests.harness import Infra, Service, of_type, read_events, unique, wait_for

RECORD_S = 30


def packet_times_increase(path: Path) -> bool:
    """Every packet of the file has a later timestamp than the one before (no frame twice)."""
    import av

    with av.open(str(path)) as container:
        pts = [p.pts for p in container.demux(container.streams[0]) if p.pts is not None]
    return all(b > a for a, b in zip(pts, pts[1:], strict=False))


async def test_two_publishers_recorded_for_30s_without_decoding(
    infra: Infra, topics: Topics, prefix: str, producer: EventProducer, services: list[Service], tmp_path: Path
) -> None:
    base, (recorder,) = await start_recording_stack(infra, topics, prefix, producer, services, tmp_path)
    room_id = unique("recroom-")
    async with httpx.AsyncClient(base_url=base, timeout=30) as client:
        await create_room(client, room_id, await admin_headers(base))
        alice = await publisher(base, room_id, "alice", 11)
        bob = await publisher(base, room_id, "bob", 22)
        rec = await record_headers(base, room_id)
        try:
            await asyncio.sleep(2)
            r = await client.post(f"/v1/rooms/{room_id}/recordings", json={"segment_s": 5}, headers=rec)
            assert r.status_code == 201, r.text
            recording_id = r.json()["recording_id"]

            async def started() -> bool:
                events = await read_events(infra.kafka, topics.name("recording.events"))
                assert recorder.alive(), recorder.tail()
                return any(e.recording_id == recording_id for e in of_type(events, RecordingStarted))

            await wait_for(started, 30, "RecordingStarted")
            # every peer is told the room is being recorded; the recorder is not a participant
            for p in (alice, bob):
                await wait_for(
                    lambda p=p: any(k == "recording" and m["active"] for k, m in p.events),
                    10,
                    f"{p.identity} told about the recording",
                )
                assert not any(k == "peer-joined" and "recorder" in str(m) for k, m in p.events)
            members = (await client.get(f"/v1/rooms/{room_id}", headers=await admin_headers(base))).json()["members"]
            assert sorted(m["identity"] for m in members) == ["alice", "bob"]

            await asyncio.sleep(RECORD_S)
            stop_at = time.time()
            r = await client.delete(f"/v1/recordings/{recording_id}", headers=rec)
            assert r.status_code == 202, r.text
            done = await wait_status(client, recording_id, rec, "completed", 60)
        finally:
            await close_all(alice.room, bob.room)

    assert recorder.alive(), recorder.tail()
    assert "CodecForbidden" not in recorder.log_path.read_text(), "the recorder never builds a codec"
    # segments were acknowledged as they closed, in order per track
    uploads = [
        e
        for e in of_type(await read_events(infra.kafka, topics.name("recording.events")), RecordingSegmentUploaded)
        if e.recording_id == recording_id
    ]
    by_track: dict[str, list[int]] = {}
    for e in uploads:
        by_track.setdefault(str(e.track_id), []).append(int(e.index or 0))
    assert sorted(by_track) == sorted(t["track_id"] for t in done["tracks"])
    assert all(idx == list(range(len(idx))) and len(idx) >= RECORD_S // 5 for idx in by_track.values()), by_track

    # one file per track in MinIO; the presigned URL downloads the same bytes
    assert sorted((t["identity"], t["kind"], t["codec"]) for t in done["tracks"]) == [
        ("alice", "camera", "vp8"),
        ("alice", "microphone", "opus"),
        ("bob", "camera", "vp8"),
        ("bob", "microphone", "opus"),
    ]
    assert sorted(done["participants"]) == ["alice", "bob"]
    assert done["size_bytes"] == sum(t["size_bytes"] for t in done["tracks"]) > 0
    store = minio(infra)
    manifest = json.loads(object_bytes(store, done["manifest"]["object_key"]))
    started_at = datetime.fromisoformat(manifest["started_at"]).timestamp()
    stopped_at = datetime.fromisoformat(manifest["stopped_at"]).timestamp()
    assert 0 <= stopped_at - stop_at < 3, "the recorder stops within seconds of the request"
    code_of = {"alice": 11, "bob": 22}
    for track in done["tracks"]:
        key = track["file"]["object_key"]
        data = object_bytes(store, key)
        async with httpx.AsyncClient(timeout=30) as plain:
            downloaded = (await plain.get(track["file"]["url"])).content
        assert downloaded == data and len(data) == track["size_bytes"]
        path = tmp_path / key.replace("/", "_")
        path.write_bytes(data)
        probe = ffprobe(path)
        (stream,) = probe["streams"]
        wall = stopped_at - started_at - track["start_s"]  # the recorder's time in the room for this track
        duration = float(probe["format"]["duration"])
        assert abs(duration - wall) < 0.5, (track, duration, wall, stream.get("nb_read_frames"))
        assert abs(track["duration_s"] - duration) < 0.1
        if track["kind"] == "camera":
            assert (stream["codec_name"], stream["width"], stream["height"]) == ("vp8", 320, 180)
            frames = pattern_counters(path)
            codes = {c for c, _ in frames}
            assert codes == {code_of[track["identity"]]}, codes
            counters = [n for _, n in frames]
            # a compressed pattern can be misread by one (a flipped low bit): tolerate two
            # misreads, never a reordering or a run of repeated frames
            steps_back = sum(1 for a, b in zip(counters, counters[1:], strict=False) if b <= a)
            repeated = len(counters) - len(set(counters))
            assert steps_back <= 2 and repeated <= 2, f"{steps_back} steps back, {repeated} repeated counters"
            assert packet_times_increase(path)
            sent = counters[-1] - counters[0] + 1  # what the publisher sent over the file's span
            assert int(stream["nb_read_frames"]) == len(frames) == track["frames"]
            assert sent - len(frames) <= 2, f"{sent - len(frames)} of {sent} frames missing"
            assert abs((counters[-1] - counters[0]) / 15 - duration) < 0.5
        else:
            assert stream["codec_name"] == "opus"
            assert abs(int(stream["nb_read_frames"]) * 0.02 - duration) < 0.5

    # the composite: one MP4 (H.264 + AAC) showing both patterns side by side, with audio
    async with httpx.AsyncClient(base_url=base, timeout=30) as client:
        r = await client.post(f"/v1/recordings/{recording_id}/composite", json={"layout": "grid"}, headers=rec)
        assert r.status_code == 202, r.text
        progress: list[float] = []

        async def rendered() -> dict[str, Any] | None:
            body = (await client.get(f"/v1/recordings/{recording_id}", headers=rec)).json()
            composite = body.get("composite") or {}
            assert composite.get("status") != "failed", composite
            if composite.get("progress") is not None:
                progress.append(composite["progress"])
            return composite if composite.get("status") == "done" else None

        composite = await wait_for(rendered, 180, "composite rendered", interval=0.1)
    assert progress == sorted(progress) and progress[-1] == 100.0
    async with httpx.AsyncClient(timeout=60) as plain:
        video = (await plain.get(composite["file"]["url"])).content
    path = tmp_path / "composite.mp4"
    path.write_bytes(video)
    probe = ffprobe(path)
    kinds = {(s["codec_type"], s["codec_name"]) for s in probe["streams"]}
    assert kinds == {("video", "h264"), ("audio", "aac")}, kinds
    (video_stream,) = [s for s in probe["streams"] if s["codec_type"] == "video"]
    assert (video_stream["width"], video_stream["height"]) == (1280, 360)
    assert abs(float(probe["format"]["duration"]) - manifest["duration_s"]) < 1.0
    for at, codes in tile_codes(path, [5.0, 15.0, 25.0]).items():
        assert sorted(codes) == [11, 22], (at, codes)


async def record_lone_publisher(
    infra: Infra, topics: Topics, base: str, name: str, code: int, codec: str, tmp_path: Path
) -> tuple[Publisher, dict[str, Any], list[RecordingSegmentUploaded], Path]:
    """One ``codec`` publisher alone in a new room, recorded for 12 s in 4 s segments: the
    publisher, the completed recording, its camera's segment uploads and its file."""
    async with httpx.AsyncClient(base_url=base, timeout=30) as client:
        room_id = unique(f"{codec.lower()}-")
        await create_room(client, room_id, await admin_headers(base))
        pub = await publisher(base, room_id, name, code, video_codec=codec)
        rec = await record_headers(base, room_id)
        try:
            await asyncio.sleep(2)
            r = await client.post(f"/v1/rooms/{room_id}/recordings", json={"segment_s": 4}, headers=rec)
            assert r.status_code == 201, r.text
            recording_id = r.json()["recording_id"]

            async def started() -> bool:
                events = await read_events(infra.kafka, topics.name("recording.events"))
                return any(e.recording_id == recording_id for e in of_type(events, RecordingStarted))

            await wait_for(started, 30, "RecordingStarted")
            await asyncio.sleep(12)
            assert (await client.delete(f"/v1/recordings/{recording_id}", headers=rec)).status_code == 202
            done = await wait_status(client, recording_id, rec, "completed", 60)
        finally:
            await close_all(pub.room)
    (camera,) = [t for t in done["tracks"] if t["kind"] == "camera"]
    uploads = [
        e
        for e in of_type(await read_events(infra.kafka, topics.name("recording.events")), RecordingSegmentUploaded)
        if e.recording_id == recording_id and e.track_id == camera["track_id"]
    ]
    path = tmp_path / str(camera["file"]["object_key"]).rsplit("/", 1)[-1]
    path.write_bytes(object_bytes(minio(infra), camera["file"]["object_key"]))
    return pub, camera, uploads, path


def assert_every_sent_frame(path: Path, pub: Publisher, camera: dict[str, Any], codec: str) -> None:
    """The file is ``codec`` 320x180 and holds every frame the publisher encoded between its
    first and last, each once, in order, none invented."""
    (stream,) = ffprobe(path)["streams"]
    assert (stream["codec_name"], stream["width"], stream["height"]) == (codec, 320, 180), stream
    frames = pattern_counters(path)
    assert int(stream["nb_read_frames"]) == len(frames) == camera["frames"] >= 12 * 15 - 30
    assert {c for c, _ in frames} == {pub.code}
    assert packet_times_increase(path)
    missing, extra = missing_frames(path, frames, pub.sent)
    assert not missing and not extra, f"{len(missing)} sent frames missing {missing}, {len(extra)} never sent {extra}"


async def test_h264_is_recorded_into_fragmented_mp4_without_decoding(
    infra: Infra, topics: Topics, prefix: str, producer: EventProducer, services: list[Service], tmp_path: Path
) -> None:
    """A publisher sending H.264 (aiortc's encoder, on the publisher's side): the recorder,
    its codec factories raising, writes fragmented MP4 segments and one MP4 track file."""
    base, (recorder,) = await start_recording_stack(infra, topics, prefix, producer, services, tmp_path)
    carol, camera, uploads, path = await record_lone_publisher(infra, topics, base, "carol", 33, "H264", tmp_path)
    assert recorder.alive(), recorder.tail()
    assert "CodecForbidden" not in recorder.log_path.read_text(), "the recorder never builds a codec"
    assert camera["codec"] == "h264" and camera["file"]["object_key"].endswith("/carol-cam.mp4"), camera
    assert len(uploads) >= 3 and all(str(e.object_key).endswith(f"/{e.index}.mp4") for e in uploads), uploads
    assert [e.index for e in uploads] == list(range(len(uploads)))
    head = path.read_bytes()[:4096]
    assert b"ftyp" in head and b"moov" in head and b"moof" in path.read_bytes()  # fragmented MP4
    # every frame the publisher encoded between the file's first and last is in the file,
    # none twice or invented (loopback, no loss injected: the node measured none). Not the
    # pattern counter's span: until the recorder subscribed nobody did, so the publisher's
    # sender was paused (dynacast) and dropped frames before its encoder, while the node's
    # from-start replay put the track's first second in front (recorder/README.md)
    assert_every_sent_frame(path, carol, camera, "h264")


@pytest.fixture
def vp9_in_aiortc() -> Iterator[None]:
    """This process's aiortc offers VP9 (the publisher's); taken out again afterwards."""
    video = CODECS["video"]
    before = list(video)
    register_vp9()
    yield
    video[:] = before


async def test_vp9_publisher_is_recorded_into_webm_without_decoding(
    infra: Infra,
    topics: Topics,
    prefix: str,
    producer: EventProducer,
    services: list[Service],
    tmp_path: Path,
    vp9_in_aiortc: None,
) -> None:
    """A publisher sending VP9 (libvpx-vp9 on its side, RFC 9628 payloads): the node and the
    recorder negotiate VP9 without a VP9 codec (``register_vp9``) and forward/record it as
    is; the WebM holds every frame the publisher encoded during the recording."""
    base, (recorder,) = await start_recording_stack(infra, topics, prefix, producer, services, tmp_path)
    dora, camera, uploads, path = await record_lone_publisher(infra, topics, base, "dora", 44, "VP9", tmp_path)
    assert recorder.alive(), recorder.tail()
    assert "CodecForbidden" not in recorder.log_path.read_text(), "the recorder never builds a codec"
    assert camera["codec"] == "vp9" and camera["file"]["object_key"].endswith("/dora-cam.webm"), camera
    assert len(uploads) >= 3 and [e.index for e in uploads] == list(range(len(uploads))), uploads
    assert_every_sent_frame(path, dora, camera, "vp9")
