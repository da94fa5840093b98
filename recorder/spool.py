"""The local spool of one recording, and what a takeover finds in it.

Instances on one host share ``ROOMLOG_RECORDER_SPOOL_DIR``; a recording spools under
``<spool_dir>/<recording_id>/`` whichever instance writes it::

    recording.json                 start time (uploaded first)
    <track dir>/track.json         the track's peer, source, codec, start offset (kept)
    <track dir>/<n>.webm + <n>.json  a closed segment (``.mp4`` for H.264) and its
                                   description, waiting for MinIO
    <track dir>/<n>.webm.part      the open segment (lost if its writer dies)

A segment counts as closed only once ``<n>.webm`` exists, and it exists only after its
``<n>.json`` (``TrackWriter.close_segment``). So after a SIGKILL, the instance that takes
the recording over calls :func:`recover` and uploads, in order, everything the dead
instance had closed but not uploaded; only the open ``.part`` is lost (it is removed).
"""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path
from typing import Any

from recorder.segments import Segment
from recorder.uploads import Upload

log = logging.getLogger(__name__)
SEGMENT_SUFFIXES = (".webm", ".mp4")


def recording_spool(spool_dir: str | Path, recording_id: str) -> Path:
    return Path(spool_dir) / recording_id


def track_dir(spool: Path, track_id: str) -> Path:
    return spool / track_id.replace("/", "_")


def _read(path: Path) -> dict[str, Any] | None:
    try:
        value = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return value if isinstance(value, dict) else None


def recover(spool: Path, recording_id: str, prefix: str) -> list[Upload]:
    """Uploads for what a previous instance left in ``spool``, in the order to send them:
    ``recording.json``, then per track ``track.json`` and its closed segments by number.
    Open segments (``.part``) and half-written descriptions (``.tmp``) are removed."""
    if not spool.is_dir():
        return []
    uploads: list[Upload] = []
    started = spool / "recording.json"
    if started.is_file():
        uploads.append(
            Upload(recording_id, prefix + "recording.json", path=started, content_type="application/json", keep=True)
        )
    for directory in sorted(p for p in spool.iterdir() if p.is_dir()):
        for stale in [*directory.glob("*.part"), *directory.glob("*.tmp")]:
            log.info("dropping %s (open when its writer stopped)", stale)
            stale.unlink(missing_ok=True)
        meta = _read(directory / "track.json")
        if meta is None or "track_id" not in meta:
            continue
        track_id = str(meta["track_id"])
        uploads.append(
            Upload(
                recording_id,
                f"{prefix}{track_id}/track.json",
                path=directory / "track.json",
                content_type="application/json",
                keep=True,
            )
        )
        closed = sorted(
            (int(p.stem), p) for p in directory.iterdir() if p.suffix in SEGMENT_SUFFIXES and p.stem.isdigit()
        )
        for _index, path in closed:
            description = _read(path.with_suffix(".json"))
            if description is None:
                continue  # cannot happen: the description is written before the rename
            segment = Segment.from_json(description, path)
            uploads.append(
                Upload(
                    recording_id,
                    f"{prefix}{track_id}/{path.name}",
                    path=path,
                    content_type="video/mp4" if path.suffix == ".mp4" else "video/webm",
                    meta={"segment": segment, "track": meta},
                    sidecar=path.with_suffix(".json"),
                )
            )
    return uploads


def remove(spool: Path) -> None:
    """A finished or failed recording's spool."""
    shutil.rmtree(spool, ignore_errors=True)
