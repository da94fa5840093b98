"""One recording of one room: join hidden, write every track into segments.

The recorder joins through ``client.Room`` with a token holding ``join``, ``subscribe``
and ``record`` (streams make such a peer hidden and auto-subscribe it to every source,
including ones published later). Each received RTP packet goes through the track's
:class:`FrameAssembler` into its :class:`TrackWriter`; closed segments are queued for
upload under ``recordings/<room>/<recording>/<peer>/<source>/<n>.webm`` (``.mp4`` for H.264). A track is one
publication: a source unpublished and published again, or a peer that leaves and joins
again (a new peer id), starts a new track. ``track.json`` records each track's peer,
source, codec and start offset (seconds after the recording started, from the arrival
of its first frame) before its first segment.

Taking over (another instance died): the spool the dead instance left on this host is
uploaded first (``recorder.spool``), then the recording's ``recording.json`` gives its
start time; a track already in MinIO continues on its timeline (``base_s``) at the
segment number after the next (the dead instance's open segment is the gap).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiortc.rtp import RtpPacket

from client.recording import PacketTaps
from client.room import Room
from media_node.aiortc_glue import InboundTap, ntp_to_unix
from recorder.frames import FrameAssembler
from recorder.segments import CODECS, Segment, TrackWriter, write_json_atomic
from recorder.spool import track_dir
from recorder.uploads import Upload, Uploader

log = logging.getLogger(__name__)

KEYFRAME_INTERVAL_S = 0.5


@dataclass
class Track:
    track_id: str
    meta: dict[str, Any]
    assembler: FrameAssembler
    writer: TrackWriter
    tap: InboundTap
    ssrc: int
    keyframe_asked: float = 0.0
    ended: bool = False
    #: Continued after a takeover: its start offset was set by the instance that began it.
    resumed: bool = False
    #: The last sender report seen, and whether ``track.json`` is behind the start offset.
    report: tuple[int, int] | None = None
    start_changed: bool = False


@dataclass
class Resumed:
    """What MinIO held for a recording another instance began."""

    started_at: float
    tracks: dict[str, tuple[dict[str, Any], int]] = field(default_factory=dict)  # id -> (meta, last segment)


class RoomRecording:
    def __init__(
        self,
        *,
        room_id: str,
        recording_id: str,
        segment_s: float,
        spool: Path,
        uploader: Uploader,
        hold_s: float,
        resumed: Resumed | None,
        started_at: float,
        on_segment_queued: Callable[[], None] | None = None,
    ) -> None:
        self.room_id = room_id
        self.recording_id = recording_id
        self.segment_s = segment_s
        self.spool = spool
        self.uploader = uploader
        self.hold_s = hold_s
        self.resumed = resumed
        self.started_at = resumed.started_at if resumed else started_at
        self.prefix = f"recordings/{room_id}/{recording_id}/"
        self.tracks: dict[tuple[str, str], Track] = {}
        self.track_count: dict[tuple[str, str], int] = {}
        self.room: Room | None = None
        self.taps = PacketTaps(self._on_packet)
        self.lost_frames = 0
        self.closed = False
        self.kinds: dict[tuple[str, str], str] = {}
        #: Publications that ended; a track for the key starts again only on a new publication.
        self.gone: set[tuple[str, str]] = set()
        self._poller: asyncio.Task[None] | None = None
        self._on_segment_queued = on_segment_queued

    # --- lifecycle ---------------------------------------------------------------------

    async def join(self, ws_url: str, token: str, ice_servers: list[dict[str, Any]] | None) -> None:
        if self.resumed is None:
            self._queue_json(
                self.spool / "recording.json",
                "recording.json",
                {"recording_id": self.recording_id, "room_id": self.room_id, "started_at": self.started_at},
            )
        self.room = await Room.connect(
            ws_url, token, self.room_id, name="recorder", ice_servers=ice_servers, receiver_hook=self.taps
        )
        self.room.on(self._on_room_event)
        self._poller = asyncio.create_task(self._poll())

    async def close(self, *, keep_open_segment: bool = True) -> None:
        """Close every track (its last segment is queued for upload), then leave the room:
        nothing received after the stop is written."""
        if self._poller is not None:
            self._poller.cancel()
        now = time.time()
        for track in self.tracks.values():
            self._end(track, now, keep_open_segment)
        self.closed = True
        if self.room is not None:
            try:
                await asyncio.wait_for(self.room.leave(), 10)
            except (TimeoutError, OSError):
                await self.room.close()

    def decoding(self) -> bool:
        return self.taps.decoding()

    # --- tracks ------------------------------------------------------------------------

    def _track_for(self, tap: InboundTap, source: dict[str, Any], packet: RtpPacket) -> Track | None:
        peer_id, source_id = source.get("peer_id", ""), source.get("source_id", "")
        if not peer_id or not source_id:
            return None
        key = (peer_id, source_id)
        track = self.tracks.get(key)
        if track is not None and not track.ended:
            return track
        if key in self.gone:
            return None  # packets still in flight after the peer left or the source was unpublished
        codec_info = tap.codec_of(packet.payload_type)
        if codec_info is None:
            return None
        codec = codec_info[0].lower()
        if codec not in CODECS:
            log.warning("not recording %s/%s: codec %s", peer_id, source_id, codec, extra={"room_id": self.room_id})
            return None
        n = self.track_count.get(key, 0) + 1
        self.track_count[key] = n
        track_id = f"{peer_id}/{source_id}" + (f"~{n}" if n > 1 else "")
        first_index, base_s, meta = 0, 0.0, None
        if self.resumed is not None and track_id in self.resumed.tracks:
            meta, last = self.resumed.tracks[track_id]
            first_index = last + 2  # the dead instance's open segment is lost
            base_s = max(0.0, time.time() - float(meta.get("start_wall", time.time())))
        if meta is None:
            peer = self.room.peers.get(peer_id, {}) if self.room else {}
            meta = {
                "track_id": track_id,
                "peer_id": peer_id,
                "identity": peer.get("identity", ""),
                "source_id": source_id,
                "kind": self._kind(peer_id, source_id, source.get("kind", "")),
                "codec": codec,
                "start_wall": time.time(),
                "start_s": round(time.time() - self.started_at, 3),
            }
            directory = track_dir(self.spool, track_id)
            directory.mkdir(parents=True, exist_ok=True)
            self._queue_json(directory / "track.json", f"{track_id}/track.json", meta)
        else:
            directory = track_dir(self.spool, track_id)
            directory.mkdir(parents=True, exist_ok=True)
            write_json_atomic(directory / "track.json", meta)  # a later takeover on this host reads it
        writer = TrackWriter(
            track_id,
            codec,
            directory,
            self.segment_s,
            first_index,
            self._segment_closed,
            base_s=base_s,
        )
        track = Track(
            track_id, meta, FrameAssembler(codec, self.hold_s), writer, tap, packet.ssrc, resumed=first_index > 0
        )
        self.tracks[key] = track
        log.info(
            "recording track %s (%s) from segment %d", track_id, codec, first_index, extra={"room_id": self.room_id}
        )
        return track

    async def _on_packet(self, tap: InboundTap, source: dict[str, Any], packet: RtpPacket, now: float) -> None:
        if self.closed:
            return
        track = self._track_for(tap, source, packet)
        if track is None:
            return
        track.ssrc = packet.ssrc
        for frame in track.assembler.add(packet, now):
            track.writer.write(frame)
        self._sync(track)
        await self._keyframe_if_needed(track, now)

    def _sync(self, track: Track) -> None:
        """Place the track's first frame on the sender's clock through its sender reports:
        ``start_s`` = (NTP of the first frame's RTP timestamp) − the recording's start. The
        node's reports carry the publisher's mapping, so this is the capture time, not the
        arrival (a track replayed from its start arrives late). ``track.json`` is rewritten
        on the first report and, if a later report placed it earlier, when the track ends."""
        first = track.writer.first_timestamp
        if track.resumed or first is None:
            return
        report = track.tap.sender_report(track.ssrc)
        if report is None or report == track.report or not report[0]:
            return  # none yet, the same, or a sender without a wall clock (NTP 0)
        initial = track.report is None
        track.report = report
        ntp, rtp = report
        delta = ((first - rtp + 0x80000000) & 0xFFFFFFFF) - 0x80000000  # first frame − reported, in ticks
        wall = ntp_to_unix(ntp) + delta / track.writer.clock
        # every report places the first frame at or after its capture (a report is made
        # when a packet leaves, after capture and encoding; a publisher that falls behind
        # its timestamps only adds to that): the earliest placement is the closest
        if not initial and wall >= float(track.meta.get("first_frame_wall", wall)):
            return
        track.meta.update(start_s=round(wall - self.started_at, 3), first_frame_wall=round(wall, 3), clock="rtcp-sr")
        track.start_changed = True
        if initial:
            self._write_track_json(track)
            track.start_changed = False

    def _write_track_json(self, track: Track) -> None:
        self._queue_json(
            track_dir(self.spool, track.track_id) / "track.json", f"{track.track_id}/track.json", track.meta
        )

    async def _keyframe_if_needed(self, track: Track, now: float) -> None:
        if (
            track.writer.want_keyframe or track.assembler.needs_keyframe
        ) and now - track.keyframe_asked >= KEYFRAME_INTERVAL_S:
            track.keyframe_asked = now
            await track.tap.request_keyframe(track.ssrc)

    async def _poll(self) -> None:
        """Frames behind a hole nobody retransmitted are released after ``hold_s``."""
        while True:
            await asyncio.sleep(self.hold_s / 2)
            now = time.time()
            for track in list(self.tracks.values()):
                if track.ended:
                    continue
                for frame in track.assembler.poll(now):
                    track.writer.write(frame)
                await self._keyframe_if_needed(track, now)

    def _end(self, track: Track, now: float, keep_open_segment: bool = True) -> None:
        if track.ended:
            return
        track.ended = True
        self.gone.add((str(track.meta.get("peer_id", "")), str(track.meta.get("source_id", ""))))
        for frame in track.assembler.flush(now):
            track.writer.write(frame)
        self._sync(track)
        if track.start_changed and not track.resumed:
            self._write_track_json(track)  # an earlier placement than the first report gave
        self.lost_frames += track.assembler.lost
        if keep_open_segment:
            track.writer.close_segment()
        else:
            track.writer.abandon()

    def _kind(self, peer_id: str, source_id: str, fallback: str) -> str:
        """The source's kind (camera, microphone, screen) as published, else the media kind."""
        if (peer_id, source_id) in self.kinds:
            return self.kinds[(peer_id, source_id)]
        peer = self.room.peers.get(peer_id, {}) if self.room else {}
        return next((str(t["kind"]) for t in peer.get("tracks", []) if t.get("source_id") == source_id), fallback)

    async def _on_room_event(self, kind: str, message: Any) -> None:
        now = time.time()
        if kind == "track-published":
            track = message.get("track", {})
            key = (message["peer_id"], track.get("source_id", ""))
            self.kinds[key] = track.get("kind", "")
            self.gone.discard(key)
        elif kind == "track-unpublished":
            track = self.tracks.get((message["peer_id"], message["source_id"]))
            if track is not None:
                self._end(track, now)
        elif kind == "peer-left":
            for (peer_id, _), track in self.tracks.items():
                if peer_id == message["peer_id"]:
                    self._end(track, now)

    # --- uploads -----------------------------------------------------------------------

    def _queue_json(self, path: Path, name: str, value: dict[str, Any]) -> None:
        """Spool ``value`` (kept: an instance taking over on this host reads it) and queue it."""
        path.parent.mkdir(parents=True, exist_ok=True)
        write_json_atomic(path, value)
        self.uploader.add(
            Upload(self.recording_id, self.prefix + name, path=path, content_type="application/json", keep=True)
        )

    def _segment_closed(self, segment: Segment) -> None:
        track = next((t for t in self.tracks.values() if t.track_id == segment.track_id), None)
        meta = dict(track.meta) if track else {}
        self.uploader.add(
            Upload(
                self.recording_id,
                f"{self.prefix}{segment.track_id}/{segment.path.name}",
                path=segment.path,
                content_type="video/mp4" if segment.path.suffix == ".mp4" else "video/webm",
                meta={"segment": segment, "track": meta},
                sidecar=segment.path.with_suffix(".json"),
            )
        )
        if self._on_segment_queued is not None:
            self._on_segment_queued()
