"""Closed segments to MinIO, in order, surviving an outage.

Every closed segment is queued with its object key; one worker uploads them first in,
first out (so each track's segments arrive in order), retrying with backoff while MinIO
refuses. Meanwhile the files wait in the spool directory: when the spool would exceed
``spool_limit_bytes`` the recording that adds to it fails (:class:`SpoolFull`), and when
MinIO refuses for longer than ``give_up_s`` every recording with uploads waiting fails
(:class:`StorageUnavailable`) — never a silent stop. ``on_uploaded`` runs after each
upload (the service reports ``RecordingSegmentUploaded``).
"""

from __future__ import annotations

import asyncio
import io
import json
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import urllib3
from minio import Minio
from minio.error import S3Error

from recorder.errors import SpoolFull, StorageUnavailable

log = logging.getLogger(__name__)


@dataclass
class Upload:
    recording_id: str
    object_key: str
    path: Path | None = None
    data: bytes | None = None
    content_type: str = "video/webm"
    meta: dict[str, Any] = field(default_factory=dict)
    #: Removed with ``path`` once uploaded (a segment's ``<n>.json`` description).
    sidecar: Path | None = None
    #: Keep ``path`` after the upload (``track.json``: a takeover on this host reads it).
    keep: bool = False
    #: Bytes counted against the spool limit when queued.
    spooled_size: int = 0

    @property
    def size(self) -> int:
        if self.data is not None:
            return len(self.data)
        try:
            return self.path.stat().st_size if self.path else 0
        except FileNotFoundError:
            return 0

    def done(self) -> None:
        """The object is in MinIO: its spooled files are no longer needed."""
        if self.path is not None and not self.keep:
            self.path.unlink(missing_ok=True)
        if self.sidecar is not None:
            self.sidecar.unlink(missing_ok=True)


def minio_client(endpoint: str, access_key: str, secret_key: str, secure: bool = False) -> Minio:
    """A client that fails fast (no urllib3 retries): the uploader does its own retrying."""
    http = urllib3.PoolManager(timeout=urllib3.Timeout(connect=2.0, read=30.0), retries=False, maxsize=8)
    return Minio(
        endpoint, access_key=access_key, secret_key=secret_key, secure=secure, region="us-east-1", http_client=http
    )


def put(client: Minio, bucket: str, upload: Upload) -> None:
    if upload.data is not None:
        client.put_object(
            bucket, upload.object_key, io.BytesIO(upload.data), len(upload.data), content_type=upload.content_type
        )
    else:
        assert upload.path is not None
        # fput_object switches to multipart above its part size (large segments, track files)
        client.fput_object(bucket, upload.object_key, str(upload.path), content_type=upload.content_type)


def put_json(client: Minio, bucket: str, key: str, value: Any) -> None:
    data = json.dumps(value, indent=2, sort_keys=True).encode()
    client.put_object(bucket, key, io.BytesIO(data), len(data), content_type="application/json")


class Uploader:
    def __init__(
        self,
        client: Minio,
        bucket: str,
        *,
        spool_limit_bytes: int,
        give_up_s: float,
        on_uploaded: Callable[[Upload], Awaitable[None]],
        on_failed: Callable[[str, Exception], Awaitable[None]],
    ) -> None:
        self.client = client
        self.bucket = bucket
        self.spool_limit_bytes = spool_limit_bytes
        self.give_up_s = give_up_s
        self.on_uploaded = on_uploaded
        self.on_failed = on_failed
        self.spooled = 0
        self.failed_since: float | None = None
        self._queue: list[Upload] = []
        self._wake = asyncio.Event()
        self._idle = asyncio.Event()
        self._idle.set()
        self._dropped: set[str] = set()
        self._tasks: set[asyncio.Future[None]] = set()

    async def ensure_bucket(self) -> None:
        delay = 0.5
        while True:
            try:
                if not await asyncio.to_thread(self.client.bucket_exists, self.bucket):
                    await asyncio.to_thread(self.client.make_bucket, self.bucket)
                return
            except S3Error as exc:
                if exc.code in ("BucketAlreadyOwnedByYou", "BucketAlreadyExists"):
                    return
                raise
            except (OSError, urllib3.exceptions.HTTPError) as exc:
                log.warning("MinIO not reachable (%s); retrying in %.1fs", exc, delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)

    def add(self, upload: Upload) -> bool:
        """Queue an upload (in order); fails its recording at once if the spool would overflow."""
        if upload.recording_id in self._dropped:
            return False
        size = upload.size
        if self.spooled + size > self.spool_limit_bytes:
            self.drop(upload.recording_id)
            if upload.path is not None:
                upload.path.unlink(missing_ok=True)
            task = asyncio.ensure_future(
                self.on_failed(
                    upload.recording_id,
                    SpoolFull(
                        f"local spool full: {self.spooled + size} bytes waiting > limit {self.spool_limit_bytes}"
                    ),
                )
            )
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
            return False
        if any(u.object_key == upload.object_key and u.path == upload.path for u in self._queue):
            return True  # already waiting (a spool recovered twice)
        upload.spooled_size = size
        self.spooled += size
        self._queue.append(upload)
        self._idle.clear()
        self._wake.set()
        return True

    def drop(self, recording_id: str) -> None:
        """Forget a failed recording's waiting uploads."""
        self._dropped.add(recording_id)
        kept = []
        for upload in self._queue:
            if upload.recording_id == recording_id:
                self.spooled -= upload.spooled_size
                upload.keep = False
                upload.done()
            else:
                kept.append(upload)
        self._queue = kept

    def pending(self, recording_id: str) -> int:
        return sum(1 for u in self._queue if u.recording_id == recording_id)

    async def drained(self, recording_id: str) -> None:
        """Wait until nothing of ``recording_id`` waits (uploaded, or dropped on failure)."""
        while self.pending(recording_id):  # noqa: ASYNC110 - a recording's share of a shared queue
            await asyncio.sleep(0.05)

    async def run(self) -> None:
        delay = 0.2
        while True:
            if not self._queue:
                self._idle.set()
                self._wake.clear()
                await self._wake.wait()
                continue
            upload = self._queue[0]
            try:
                await asyncio.to_thread(put, self.client, self.bucket, upload)
            except FileNotFoundError:
                # another instance on this host uploaded the spooled file and removed it
                # (it let the recording go in a rebalance while finishing its uploads)
                log.info("%s was uploaded by another instance", upload.object_key)
                self._remove(upload)
                continue
            except (OSError, S3Error, urllib3.exceptions.HTTPError) as exc:
                now = time.monotonic()
                self.failed_since = self.failed_since or now
                if now - self.failed_since >= self.give_up_s:
                    await self._give_up(now - self.failed_since, exc)
                    continue
                log.warning(
                    "upload of %s failed (%s); %d waiting, retrying in %.1fs",
                    upload.object_key,
                    exc,
                    len(self._queue),
                    delay,
                )
                await asyncio.sleep(delay)
                delay = min(delay * 2, 2.0)
                continue
            self.failed_since, delay = None, 0.2
            self._remove(upload)
            upload.done()
            await self.on_uploaded(upload)

    def _remove(self, upload: Upload) -> None:
        if self._queue and self._queue[0] is upload:
            self._queue.pop(0)
            self.spooled -= upload.spooled_size

    async def _give_up(self, waited: float, exc: Exception) -> None:
        recordings = sorted({u.recording_id for u in self._queue})
        for recording_id in recordings:
            self.drop(recording_id)
            await self.on_failed(
                recording_id,
                StorageUnavailable(f"MinIO refused uploads for {waited:.0f} s (limit {self.give_up_s:.0f} s): {exc}"),
            )
        self.failed_since = None
