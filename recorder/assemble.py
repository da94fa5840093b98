"""At stop: one playable file per track from its segments, and ``manifest.json``.

Works from what MinIO holds (so it also finishes what another instance began): the
segments under ``recordings/<room>/<recording>/<peer>/<source>/<n>.webm`` (``<n>.mp4``:
H.264 in fragmented MP4) and each track's ``track.json``. A track's segments are remuxed
in order into ``recordings/<room>/<recording>/<peer>/<source>.webm`` (or ``.mp4``) —
packets copied with their timestamps, nothing decoded — and a missing segment number is listed as a gap (with the
time it covers). The manifest lists tracks, peers, start offsets, codecs, durations,
frame counts and sizes.
"""

from __future__ import annotations

import asyncio
import json
import tempfile
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Any

import av
from minio import Minio

from recorder.segments import FORMATS, START_PTS_TAG
from recorder.uploads import Upload, put, put_json


def recording_prefix(room_id: str, recording_id: str) -> str:
    return f"recordings/{room_id}/{recording_id}/"


@dataclass
class TrackFiles:
    track_id: str
    meta: dict[str, Any] = field(default_factory=dict)
    segments: dict[int, str] = field(default_factory=dict)

    @property
    def ext(self) -> str:
        """The container of its segments (``webm``, or ``mp4`` for H.264)."""
        return next((key.rsplit(".", 1)[1] for key in self.segments.values()), "webm")


def list_tracks(client: Minio, bucket: str, prefix: str) -> dict[str, TrackFiles]:
    tracks: dict[str, TrackFiles] = {}
    for obj in client.list_objects(bucket, prefix=prefix, recursive=True):
        rest = (obj.object_name or "")[len(prefix) :]
        track_id, _, name = rest.rpartition("/")
        if not track_id or "/" not in track_id:
            continue  # manifest.json, track files (<peer>/<source>.webm)
        files = tracks.setdefault(track_id, TrackFiles(track_id))
        if name == "track.json":
            response = client.get_object(bucket, obj.object_name or "")
            try:
                files.meta = json.loads(response.read())
            finally:
                response.close()
                response.release_conn()
        else:
            stem, _, ext = name.rpartition(".")
            if ext in FORMATS and stem.isdigit():
                files.segments[int(stem)] = obj.object_name or ""
    return tracks


def _start_pts(comment: str) -> int:
    """An MP4 segment's first timestamp on its track's timeline (its muxer starts it at 0)."""
    if comment.startswith(START_PTS_TAG) and comment[len(START_PTS_TAG) :].isdigit():
        return int(comment[len(START_PTS_TAG) :])
    return 0


def remux(sources: list[tuple[int, Path]], out: Path) -> dict[str, Any]:
    """Copy every packet of ``sources`` (one stream each, in order) into ``out``."""
    frames, first_pts, last_end = 0, None, 0.0
    spans: list[tuple[int, float, float]] = []
    width = height = None
    container_format, options = FORMATS[out.suffix.lstrip(".")]
    with av.open(str(out), "w", format=container_format, options=dict(options)) as output:
        stream = None
        for index, path in sources:
            with av.open(str(path)) as source:
                template = source.streams[0]
                if stream is None:
                    stream = output.add_stream_from_template(template)
                    width = getattr(template, "width", None) or None
                    height = getattr(template, "height", None) or None
                tb = template.time_base or Fraction(1, 1000)
                shift = _start_pts(source.metadata.get("comment", ""))
                seg_first = seg_last = None
                count = 0
                for packet in source.demux(template):
                    if packet.pts is None:
                        continue
                    if shift:
                        packet.pts += shift
                        packet.dts = packet.pts if packet.dts is None else packet.dts + shift
                    t = float(packet.pts * tb)
                    seg_first = t if seg_first is None else seg_first
                    seg_last = t
                    packet.stream = stream
                    output.mux(packet)
                    count += 1
                frames += count
                if seg_first is not None and seg_last is not None:
                    # the last frame lasts as long as the segment's average frame
                    end = seg_last + ((seg_last - seg_first) / (count - 1) if count > 1 else 0.02)
                    spans.append((index, seg_first, end))
                    first_pts = seg_first if first_pts is None else first_pts
                    last_end = max(last_end, end)
    return {
        "frames": frames,
        "first_s": first_pts or 0.0,
        "end_s": last_end,
        "spans": spans,
        "width": width,
        "height": height,
    }


def gaps_of(segments: list[int], spans: list[tuple[int, float, float]]) -> list[dict[str, Any]]:
    """Segment numbers missing between the first and the last, with the time they cover."""
    if not segments:
        return []
    have = set(segments)
    by_index = {i: (a, b) for i, a, b in spans}
    gaps = []
    for n in range(min(segments), max(segments)):
        if n not in have:
            before = max((by_index[i][1] for i in by_index if i < n), default=None)
            after = min((by_index[i][0] for i in by_index if i > n), default=None)
            gaps.append({"segment": n, "from_s": before, "to_s": after})
    return gaps


def assemble_track(client: Minio, bucket: str, prefix: str, files: TrackFiles, work: Path) -> dict[str, Any]:
    local = []
    for index in sorted(files.segments):
        path = work / f"{files.track_id.replace('/', '_')}-{index}.{files.ext}"
        client.fget_object(bucket, files.segments[index], str(path))
        local.append((index, path))
    out = work / f"{files.track_id.replace('/', '_')}.{files.ext}"
    info = remux(local, out)
    key = f"{prefix}{files.track_id}.{files.ext}"
    content_type = "video/mp4" if files.ext == "mp4" else "video/webm"
    put(client, bucket, Upload(recording_id="", object_key=key, path=out, content_type=content_type))
    meta = files.meta
    start_s = float(meta.get("start_s", 0.0))
    return {
        "track_id": files.track_id,
        "peer_id": meta.get("peer_id", files.track_id.split("/")[0]),
        "identity": meta.get("identity", ""),
        "source_id": meta.get("source_id", ""),
        "kind": meta.get("kind", ""),
        "codec": meta.get("codec", ""),
        "object_key": key,
        "start_s": start_s,
        # "rtcp-sr": the first frame placed on the sender's clock by its sender reports;
        # "arrival": when its first packet reached the recorder (no report came)
        "clock": meta.get("clock", "arrival"),
        "duration_s": round(info["end_s"] - 0.0, 3),
        "first_frame_s": info["first_s"],
        "size_bytes": out.stat().st_size,
        "frames": info["frames"],
        "width": info["width"],
        "height": info["height"],
        "segments": len(files.segments),
        "gaps": gaps_of(sorted(files.segments), info["spans"]),
    }


def assemble(
    client: Minio, bucket: str, room_id: str, recording_id: str, started_at: str | None, stopped_at: str
) -> dict[str, Any]:
    """Build every track file and the manifest; returns the manifest (blocking I/O)."""
    prefix = recording_prefix(room_id, recording_id)
    tracks = list_tracks(client, bucket, prefix)
    with tempfile.TemporaryDirectory(prefix="roomlog-assemble-") as tmp:
        entries = [
            assemble_track(client, bucket, prefix, tracks[t], Path(tmp)) for t in sorted(tracks) if tracks[t].segments
        ]
    entries.sort(key=lambda e: (e["start_s"], e["track_id"]))
    duration = max((e["start_s"] + e["duration_s"] for e in entries), default=0.0)
    manifest = {
        "recording_id": recording_id,
        "room_id": room_id,
        "started_at": started_at,
        "stopped_at": stopped_at,
        "duration_s": round(duration, 3),
        "size_bytes": sum(e["size_bytes"] for e in entries),
        "peers": sorted({e["identity"] or e["peer_id"] for e in entries}),
        "codecs": sorted({e["codec"] for e in entries}),
        "tracks": entries,
    }
    put_json(client, bucket, f"{prefix}manifest.json", manifest)
    return manifest


async def assemble_async(
    client: Minio, bucket: str, room_id: str, recording_id: str, started_at: str | None, stopped_at: str
) -> dict[str, Any]:
    return await asyncio.to_thread(assemble, client, bucket, room_id, recording_id, started_at, stopped_at)
