"""The recorder executor: a consumer group on ``recording.commands``.

Instances share the topic's partitions. A ``StartRecording`` stays uncommitted while its
recording runs: the partition's committed offset is held at the oldest running
recording's start command. So when an instance dies (SIGKILL), the group hands its
partitions to another instance within the session timeout, which reads the start
command again and takes the recording over (``RecordingStarted`` with ``takeover``).
A command already executed is recognised by its event id; a recording whose
``manifest.json`` exists is finished and is not started again.

Start → join hidden and record (``recorder.session``); each uploaded segment →
``RecordingSegmentUploaded``; stop → close the tracks, wait for their uploads, assemble
one file per track and the manifest (``recorder.assemble``) → ``RecordingCompleted``. A
spool overflow, MinIO refusing too long, or a join that fails → ``RecordingFailed``.
``RenderComposite`` → ffmpeg renders the track files into one MP4 (``recorder.composite``):
``CompositeProgress`` as it goes, then ``CompositeRendered`` (or ``CompositeFailed``).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

import httpx
import urllib3
from aiokafka import AIOKafkaConsumer, ConsumerRebalanceListener, TopicPartition
from aiokafka.structs import ConsumerRecord
from minio import Minio
from minio.error import S3Error

from observability import metrics, tracing
from producers.catalog import decode
from producers.envelope import Event
from producers.errors import DecodeError
from producers.kafka import EventProducer
from producers.recordings import CompositeFailed, CompositeProgress, CompositeRendered, RenderComposite
from producers.sessions import (
    RecordingCompleted,
    RecordingFailed,
    RecordingSegmentUploaded,
    RecordingStarted,
    StartRecording,
    StopRecording,
)
from producers.topics import Topics
from recorder import composite
from recorder.assemble import assemble, list_tracks, recording_prefix
from recorder.segments import Segment
from recorder.session import Resumed, RoomRecording
from recorder.settings import RecorderSettings
from recorder.spool import recording_spool, recover
from recorder.spool import remove as remove_spool
from recorder.uploads import Upload, Uploader, put

log = logging.getLogger(__name__)
T = TypeVar("T")


@dataclass
class Running:
    command: StartRecording
    partition: TopicPartition
    offset: int
    recording: RoomRecording | None = None
    task: asyncio.Task[None] | None = None
    stopping: bool = False


@dataclass
class Holds:
    """Per partition: the next offset to read, and the start offsets of running recordings."""

    next: dict[TopicPartition, int] = field(default_factory=dict)
    running: dict[str, tuple[TopicPartition, int]] = field(default_factory=dict)

    def commit_points(self) -> dict[TopicPartition, int]:
        points = dict(self.next)
        for tp, offset in self.running.values():
            points[tp] = min(points.get(tp, offset), offset)
        return points


class Recorder:
    def __init__(self, settings: RecorderSettings, producer: EventProducer, topics: Topics, minio: Minio) -> None:
        self.settings = settings
        self.producer = producer
        self.topics = topics
        self.minio = minio
        self.uploader = Uploader(
            minio,
            settings.bucket,
            spool_limit_bytes=settings.spool_limit_bytes,
            give_up_s=settings.upload_give_up_s,
            on_uploaded=self._uploaded,
            on_failed=self._upload_failed,
        )
        self.running: dict[str, Running] = {}
        self.holds = Holds()
        self.executed: set[str] = set()
        self.consumer: AIOKafkaConsumer | None = None
        self.segments_uploaded = 0

    # --- events ------------------------------------------------------------------------

    async def emit(self, event: Event) -> None:
        await self.producer.send(self.topics.name("recording.events"), event)

    async def _uploaded(self, upload: Upload) -> None:
        segment: Segment | None = upload.meta.get("segment")
        if segment is None:
            return
        run = self.running.get(upload.recording_id)
        room_id = run.command.room_id if run else upload.object_key.split("/")[1]
        track = upload.meta.get("track", {})
        self.segments_uploaded += 1
        metrics.RECORDER_SEGMENTS_UPLOADED.inc()
        metrics.RECORDER_SPOOL_BYTES.set(self.uploader.spooled)
        await self.emit(
            RecordingSegmentUploaded.new(
                room_id=room_id,
                recording_id=upload.recording_id,
                object_key=upload.object_key,
                size_bytes=segment.size_bytes,
                duration_s=round(segment.duration_s, 3),
                track_id=segment.track_id,
                peer_id=track.get("peer_id"),
                identity=track.get("identity"),
                source_id=track.get("source_id"),
                kind=track.get("kind"),
                codec=track.get("codec"),
                index=segment.index,
                start_s=round(float(track.get("start_s", 0.0)) + segment.start_s, 3),
                frames=segment.frames,
                width=segment.width,
                height=segment.height,
            )
        )

    async def _upload_failed(self, recording_id: str, exc: Exception) -> None:
        await self.fail(recording_id, str(exc))

    async def fail(self, recording_id: str, reason: str) -> None:
        run = self.running.pop(recording_id, None)
        if run is None:
            return
        log.error("recording %s failed: %s", recording_id, reason, extra={"room_id": run.command.room_id})
        self.uploader.drop(recording_id)
        if run.recording is not None:
            with contextlib.suppress(Exception):
                await run.recording.close(keep_open_segment=False)
        await self.emit(RecordingFailed.new(room_id=run.command.room_id, recording_id=recording_id, error=reason))
        self.holds.running.pop(recording_id, None)
        remove_spool(recording_spool(self.settings.spool_dir, recording_id))
        metrics.RECORDER_RECORDINGS.set(len(self.running))

    # --- commands ----------------------------------------------------------------------

    async def handle(self, record: ConsumerRecord[bytes, bytes]) -> None:
        """Run one command; with tracing on, in a span of the trace its record carries (the
        tasks it starts inherit it, so their results are its children)."""
        if not tracing.enabled():
            await self._handle(record)
            return
        kind = tracing.header(record.headers, "type") or "command"
        with tracing.consumed(f"recorder {kind}", record.headers, topic=record.topic):
            await self._handle(record)

    async def _handle(self, record: ConsumerRecord[bytes, bytes]) -> None:
        tp = TopicPartition(record.topic, record.partition)
        try:
            command = decode(record.value or b"")
        except DecodeError as exc:
            log.warning("undecodable command at %s:%s: %s", tp, record.offset, exc)
            command = None
        if isinstance(command, StartRecording):
            await self.start(command, tp, record.offset)
        elif isinstance(command, StopRecording):
            await self.stop(command)
        elif isinstance(command, RenderComposite) and str(command.event_id) not in self.executed:
            self.executed.add(str(command.event_id))
            key = f"composite:{command.event_id}"
            self.holds.running[key] = (tp, record.offset)  # a crash mid-render renders again elsewhere
            task = asyncio.create_task(self._composite(command))
            task.add_done_callback(lambda _: self.holds.running.pop(key, None))
        self.holds.next[tp] = record.offset + 1

    async def start(self, command: StartRecording, tp: TopicPartition, offset: int) -> None:
        key = str(command.event_id)
        if key in self.executed or command.recording_id in self.running:
            return  # redelivered
        self.executed.add(key)
        prefix = recording_prefix(command.room_id, command.recording_id)
        if await self._storage(self._exists, prefix + "manifest.json"):
            return  # finished before (a re-read after a takeover or restart)
        await self._recover_spool(command.recording_id, prefix)
        resumed = await self._storage(self._resumed, prefix)
        run = Running(command, tp, offset)
        self.running[command.recording_id] = run
        self.holds.running[command.recording_id] = (tp, offset)
        run.task = asyncio.create_task(self._join(run, resumed))
        metrics.RECORDER_RECORDINGS.set(len(self.running))

    async def _recover_spool(self, recording_id: str, prefix: str) -> None:
        """Upload, in order, the closed segments an instance that died on this host left in
        the shared spool, before numbering goes on after them."""
        uploads = recover(recording_spool(self.settings.spool_dir, recording_id), recording_id, prefix)
        if not uploads:
            return
        log.info("recording %s: uploading %d spooled files first", recording_id, len(uploads))
        for upload in uploads:
            self.uploader.add(upload)
        await self.uploader.drained(recording_id)

    async def _join(self, run: Running, resumed: Resumed | None) -> None:
        c = run.command
        spool = recording_spool(self.settings.spool_dir, c.recording_id)
        recording = RoomRecording(
            room_id=c.room_id,
            recording_id=c.recording_id,
            segment_s=c.segment_s or self.settings.segment_s,
            spool=spool,
            uploader=self.uploader,
            hold_s=self.settings.reorder_hold_s,
            resumed=resumed,
            started_at=time.time(),
        )
        run.recording = recording
        try:
            token = await self._token(c.room_id)
            ws_url = self.settings.api_url.replace("http", "ws", 1).rstrip("/") + "/v1/rtc"
            await recording.join(ws_url, token, self.settings.ice_servers)
        except Exception as exc:  # noqa: BLE001 - any join failure ends the recording, reported
            await self.fail(c.recording_id, f"could not join room {c.room_id}: {exc}")
            return
        log.info(
            "recording %s of room %s%s",
            c.recording_id,
            c.room_id,
            " (taken over)" if resumed else "",
            extra={"room_id": c.room_id},
        )
        await self.emit(
            RecordingStarted.new(
                room_id=c.room_id,
                recording_id=c.recording_id,
                recorder_id=self.settings.recorder_id,
                takeover=resumed is not None,
            )
        )

    async def _token(self, room_id: str) -> str:
        async with httpx.AsyncClient(timeout=10) as client:
            r = await client.post(
                f"{self.settings.api_url.rstrip('/')}/v1/tokens",
                headers={"X-API-Secret": self.settings.api_secret.get_secret_value()},
                json={
                    "identity": f"recorder-{self.settings.recorder_id}",
                    "name": "recorder",
                    "room": room_id,
                    "grants": ["join", "subscribe", "record"],
                    "ttl_s": 86_400,
                },
            )
            r.raise_for_status()
            return str(r.json()["token"])

    async def stop(self, command: StopRecording) -> None:
        key = str(command.event_id)
        if key in self.executed:
            return
        self.executed.add(key)
        run = self.running.get(command.recording_id)
        if run is None:
            run = Running(
                StartRecording.new(room_id=command.room_id, recording_id=command.recording_id), TopicPartition("", 0), 0
            )
            prefix = recording_prefix(command.room_id, command.recording_id)
            if await self._storage(self._exists, prefix + "manifest.json"):
                return  # finished before (a re-read after a takeover or restart)
            await self._recover_spool(command.recording_id, prefix)
            if not await self._storage(self._exists, prefix + "recording.json"):
                await self.emit(
                    RecordingFailed.new(
                        room_id=command.room_id,
                        recording_id=command.recording_id,
                        error="stopped before anything was recorded",
                    )
                )
                return
            self.running[command.recording_id] = run
        if run.stopping:
            return
        run.stopping = True
        asyncio.create_task(self._finish(run))  # noqa: RUF006 - tracked in self.running

    async def _finish(self, run: Running) -> None:
        c = run.command
        stopped_at = datetime.now(UTC).isoformat()  # the recording ends here, not when assembled
        if run.task is not None:
            with contextlib.suppress(Exception):
                await run.task
        if run.recording is not None:
            await run.recording.close()
        await self.uploader.drained(c.recording_id)
        if c.recording_id not in self.running:
            return  # failed meanwhile
        started = run.recording.started_at if run.recording else None
        try:
            manifest = await self._storage(
                assemble,
                self.minio,
                self.settings.bucket,
                c.room_id,
                c.recording_id,
                datetime.fromtimestamp(started, UTC).isoformat() if started else None,
                stopped_at,
            )
        except Exception as exc:  # noqa: BLE001 - reported as the recording's failure
            await self.fail(c.recording_id, f"assembling the track files failed: {exc}")
            return
        await self.emit(
            RecordingCompleted.new(
                room_id=c.room_id,
                recording_id=c.recording_id,
                duration_s=manifest["duration_s"],
                size_bytes=manifest["size_bytes"],
                manifest_key=recording_prefix(c.room_id, c.recording_id) + "manifest.json",
                tracks=manifest["tracks"],
                participants=manifest["peers"],
                codecs=manifest["codecs"],
            )
        )
        self.running.pop(c.recording_id, None)
        self.holds.running.pop(c.recording_id, None)
        remove_spool(recording_spool(self.settings.spool_dir, c.recording_id))
        metrics.RECORDER_RECORDINGS.set(len(self.running))
        log.info(
            "recording %s completed: %d tracks", c.recording_id, len(manifest["tracks"]), extra={"room_id": c.room_id}
        )

    async def _composite(self, c: RenderComposite) -> None:
        prefix = recording_prefix(c.room_id, c.recording_id)
        last = -100.0

        async def progress(percent: float) -> None:
            nonlocal last
            if percent - last >= 5:
                last = percent
                await self.emit(
                    CompositeProgress.new(room_id=c.room_id, recording_id=c.recording_id, percent=round(percent, 1))
                )

        try:
            with tempfile.TemporaryDirectory(prefix="roomlog-composite-") as tmp:
                work = Path(tmp)
                manifest = json.loads(await asyncio.to_thread(self._get, prefix + "manifest.json"))
                tracks = [t for t in manifest["tracks"] if t.get("object_key")]
                inputs = []
                for n, track in enumerate(tracks):
                    path = work / f"{n}.{track['object_key'].rsplit('.', 1)[-1]}"
                    await asyncio.to_thread(
                        self.minio.fget_object, self.settings.bucket, track["object_key"], str(path)
                    )
                    inputs.append(path)
                out = work / "composite.mp4"
                duration = float(manifest["duration_s"])
                render_s = await composite.render(inputs, tracks, c.layout, duration, out, progress)
                key = f"{prefix}composite-{c.layout}.mp4"
                await asyncio.to_thread(
                    put,
                    self.minio,
                    self.settings.bucket,
                    Upload(c.recording_id, key, path=out, content_type="video/mp4"),
                )
                size = out.stat().st_size
        except Exception as exc:  # noqa: BLE001 - reported as the render's failure
            log.exception("composite of %s failed", c.recording_id, extra={"room_id": c.room_id})
            await self.emit(CompositeFailed.new(room_id=c.room_id, recording_id=c.recording_id, error=str(exc)))
            return
        await self.emit(
            CompositeRendered.new(
                room_id=c.room_id,
                recording_id=c.recording_id,
                object_key=key,
                size_bytes=size,
                duration_s=duration,
                render_s=round(render_s, 3),
                layout=c.layout,
            )
        )

    def _get(self, key: str) -> bytes:
        response = self.minio.get_object(self.settings.bucket, key)
        try:
            return bytes(response.read())
        finally:
            response.close()
            response.release_conn()

    # --- MinIO lookups -----------------------------------------------------------------

    async def _storage(self, fn: Callable[..., T], *args: Any) -> T:
        """Run a blocking MinIO call, retrying while MinIO is unreachable (an outage delays
        a command, it does not crash the consumer)."""
        delay = 0.2
        while True:
            try:
                return await asyncio.to_thread(fn, *args)
            except (OSError, urllib3.exceptions.HTTPError) as exc:
                log.warning("MinIO unreachable (%s); retrying in %.1fs", exc, delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 2.0)

    def _exists(self, key: str) -> bool:
        try:
            self.minio.stat_object(self.settings.bucket, key)
            return True
        except S3Error as exc:
            if exc.code in ("NoSuchKey", "NoSuchObject", "NotFound"):
                return False
            raise

    def _resumed(self, prefix: str) -> Resumed | None:
        if not self._exists(prefix + "recording.json"):
            return None
        response = self.minio.get_object(self.settings.bucket, prefix + "recording.json")
        try:
            info: dict[str, Any] = json.loads(response.read())
        finally:
            response.close()
            response.release_conn()
        tracks = list_tracks(self.minio, self.settings.bucket, prefix)
        return Resumed(
            started_at=float(info["started_at"]),
            tracks={t: (f.meta, max(f.segments, default=-1)) for t, f in tracks.items() if f.meta},
        )

    # --- the consumer ------------------------------------------------------------------

    async def commit(self) -> None:
        if self.consumer is None:
            return
        points = {tp: o for tp, o in self.holds.commit_points().items() if tp in self.consumer.assignment()}
        if points:
            with contextlib.suppress(Exception):
                await self.consumer.commit(points)

    async def revoked(self, partitions: set[TopicPartition]) -> None:
        """Partitions move to another instance: commit, and let go of their recordings (the
        new owner takes them over from the held start commands)."""
        await self.commit()
        for recording_id, run in list(self.running.items()):
            if run.partition in partitions and not run.stopping:
                self.running.pop(recording_id, None)
                if run.recording is not None:
                    await run.recording.close()
                self.holds.running.pop(recording_id, None)
        for tp in partitions:
            self.holds.next.pop(tp, None)

    async def run(self) -> None:
        s = self.settings
        listener = _Listener(self)
        consumer = AIOKafkaConsumer(
            bootstrap_servers=s.kafka_bootstrap,
            group_id=f"{s.topic_prefix}{s.group_id}",
            client_id=s.recorder_id,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            session_timeout_ms=int(s.session_timeout_s * 1000),
            heartbeat_interval_ms=1000,
        )
        self.consumer = consumer
        await consumer.start()
        consumer.subscribe([self.topics.name("recording.commands")], listener=listener)
        await self.uploader.ensure_bucket()
        uploads = asyncio.create_task(self.uploader.run())
        try:
            while True:
                batches = await consumer.getmany(timeout_ms=500, max_records=50)
                for records in batches.values():
                    for record in records:
                        await self.handle(record)
                await self.commit()
        finally:
            uploads.cancel()
            await self.commit()
            await consumer.stop()


class _Listener(ConsumerRebalanceListener):  # type: ignore[misc]
    def __init__(self, recorder: Recorder) -> None:
        self.recorder = recorder

    async def on_partitions_revoked(self, revoked: set[TopicPartition]) -> None:
        await self.recorder.revoked(set(revoked))

    async def on_partitions_assigned(self, assigned: set[TopicPartition]) -> None:
        log.info("assigned %s", sorted(f"{tp.topic}:{tp.partition}" for tp in assigned))
