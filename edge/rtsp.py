"""A camera's RTSP stream published into a room as it is: demuxed, never decoded or encoded.

``CameraStream(rtsp_url, api_url, token, room, source_id)``: ``start()`` opens the RTSP
session (PyAV/FFmpeg demuxer over TCP, codec copy), waits for the first keyframe, joins
``room`` through the Python SDK and publishes the camera's H.264 access units with
:mod:`client.passthrough` (aiortc's RTP payloader only; the offer carries the camera's
``profile-level-id``; SPS/PPS in-band before each IDR). It returns once the first access unit
went to the sender, or raises :class:`CameraError` with a ``reason``.

After that, an RTSP session that drops (server gone, stream ended, read timeout) is reported
with ``on_failure(reason)`` and opened again with exponential backoff and jitter (0.5 s
doubling to 10 s); the room connection stays, so viewers see the picture again at the next
keyframe. With ``max_retries`` the stream gives up when that many reopen attempts in a row
failed (``on_failure("gave_up: ...")``, after the failure of the last attempt). ``stop()``
closes the RTSP session (TEARDOWN) and leaves.

``python -m edge.rtsp --rtsp URL --api URL --token T --room R [--forbid-codecs]`` runs one
camera stream and prints its events as JSON lines (``started``, ``failure``, ``stopped``).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import random
import signal
import sys
import threading
from collections.abc import Awaitable, Callable
from typing import Any

import av

from client.passthrough import EncodedVideoTrack, h264_track, offer_with_profile, profile_level_id, supported_profile
from client.room import Room
from client.signaling import RoomError

log = logging.getLogger(__name__)

VIDEO_CLOCK = 90_000
#: FFmpeg's RTSP options: interleaved over the RTSP TCP connection (no UDP ports to open);
#: no stream analysis beyond the SDP and the first packet (FFmpeg's default probing takes
#: about 2 s on a live camera), and the probed packets are kept (no ``nobuffer``: the first
#: keyframe is among them).
RTSP_OPTIONS = {"rtsp_transport": "tcp", "analyzeduration": "0", "probesize": "32"}
OPEN_TIMEOUT_S = 5.0
READ_TIMEOUT_S = 3.0
FIRST_KEYFRAME_S = 10.0
PUBLISH_TIMEOUT_S = 20.0
BACKOFF_START_S = 0.5
BACKOFF_MAX_S = 10.0

Item = tuple[str, Any, Any]


class CameraError(Exception):
    """The camera stream could not start; ``reason`` says why (``rtsp_unreachable: ...``,
    ``unsupported_codec: ...``, ``unsupported_profile: ...``, ``no_keyframe``,
    ``publish_failed: ...``, ``no_media``)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def rtc_url(api_url: str) -> str:
    """The signaling socket URL from the api's base URL (``http://host:port``) or a ws URL."""
    url = api_url.rstrip("/")
    if url.startswith("http"):
        url = "ws" + url[4:]
    return url if url.endswith("/v1/rtc") else url + "/v1/rtc"


def read_rtsp(url: str, emit: Callable[[Item], None], stopping: threading.Event) -> None:
    """Demux ``url`` (blocking; run in a thread): ``("ready", extradata, codec)``, then
    ``("packet", access_unit, pts_90khz)`` per access unit, and one ``("end", reason, None)``."""
    try:
        container = av.open(url, options=RTSP_OPTIONS, timeout=(OPEN_TIMEOUT_S, READ_TIMEOUT_S))
    except Exception as exc:  # noqa: BLE001 - any failure to open is the camera's
        emit(("end", f"rtsp_unreachable: {exc}", None))
        return
    reason = "rtsp_ended: the camera ended the stream"
    try:
        if not container.streams.video:
            emit(("end", "unsupported_codec: the RTSP session has no video", None))
            return
        stream = container.streams.video[0]
        emit(("ready", bytes(stream.codec_context.extradata or b""), stream.codec_context.name))
        for packet in container.demux(stream):
            if stopping.is_set():
                reason = "stopped"
                break
            if packet.size == 0:
                continue
            pts = None
            if packet.pts is not None and packet.time_base is not None:
                pts = int(packet.pts * packet.time_base * VIDEO_CLOCK)
            emit(("packet", bytes(packet), pts))
    except Exception as exc:  # noqa: BLE001 - a read error ends this session
        reason = f"rtsp_dropped: {exc}"
    finally:
        with contextlib.suppress(Exception):
            container.close()
    emit(("end", reason, None))


class RtspSession:
    """One RTSP session read by a thread; its items arrive on ``queue``."""

    def __init__(self, url: str, loop: asyncio.AbstractEventLoop) -> None:
        self.queue: asyncio.Queue[Item] = asyncio.Queue()
        self.stopping = threading.Event()
        self._loop = loop
        self._thread = threading.Thread(target=read_rtsp, args=(url, self._emit, self.stopping), daemon=True)
        self._thread.start()

    def _emit(self, item: Item) -> None:
        with contextlib.suppress(RuntimeError):  # the loop is closed: nobody listens
            self._loop.call_soon_threadsafe(self.queue.put_nowait, item)

    async def close(self) -> None:
        self.stopping.set()
        await asyncio.get_running_loop().run_in_executor(None, self._thread.join, OPEN_TIMEOUT_S + READ_TIMEOUT_S)


class CameraStream:
    def __init__(
        self,
        rtsp_url: str,
        api_url: str,
        token: str,
        room: str,
        source_id: str = "camera",
        *,
        on_failure: Callable[[str], Awaitable[None]] | None = None,
        max_retries: int | None = None,
    ) -> None:
        self.rtsp_url, self.api_url, self.token, self.room_id = rtsp_url, api_url, token, room
        self.source_id = source_id
        self.on_failure = on_failure
        self.max_retries = max_retries
        self.track: EncodedVideoTrack | None = None
        self.room: Room | None = None
        #: ``profile-level-id`` of the camera's SPS, and the codec FFmpeg named.
        self.profile: str | None = None
        self.failures: list[str] = []
        self.sessions = 0
        self._session: RtspSession | None = None
        self._task: asyncio.Task[None] | None = None
        self._stopped = False
        #: ms from ``start()`` to each step (logged; bench.stations reads them for its hop profile)
        self.timings: dict[str, float] = {}
        self._began = 0.0

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        self._began = loop.time()
        self.timings = {}
        mark = self._mark
        session = self._session = RtspSession(self.rtsp_url, loop)
        self.sessions += 1
        try:
            extradata = await self._ready(session)
            mark("rtsp_ready")
            self.track = EncodedVideoTrack(extradata)
            first = await self._first_keyframe(session, self.track)
            mark("keyframe")
            profile = profile_level_id(first) or profile_level_id(extradata)
            if profile is None or not supported_profile(profile):
                raise CameraError(f"unsupported_profile: H.264 profile-level-id {profile} (baseline only)")
            self.profile = profile
            await self._publish(profile)
            mark("published")
            self._task = asyncio.create_task(self._pump(session), name=f"camera-{self.source_id}")
            try:
                await asyncio.wait_for(self.track.first_sent.wait(), PUBLISH_TIMEOUT_S)
            except TimeoutError:
                raise CameraError("no_media: the sender took no access unit") from None
            mark("first_sent")
        except BaseException:
            await self.stop()
            raise
        steps = " ".join(f"{k}={v}" for k, v in self.timings.items())
        log.info("camera %s publishing %s (H.264 %s); start ms: %s", self.source_id, self.rtsp_url, self.profile, steps)

    def _mark(self, step: str) -> None:
        self.timings[step] = round((asyncio.get_running_loop().time() - self._began) * 1000, 1)

    async def _ready(self, session: RtspSession) -> bytes:
        kind, value, codec = await session.queue.get()
        if kind == "end":
            raise CameraError(str(value))
        if codec != "h264":
            raise CameraError(f"unsupported_codec: {codec} (H.264 only)")
        return bytes(value)

    async def _first_keyframe(self, session: RtspSession, track: EncodedVideoTrack) -> bytes:
        """Feed ``track`` until its first keyframe is in (the access unit is returned)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + FIRST_KEYFRAME_S
        while True:
            try:
                kind, value, pts = await asyncio.wait_for(session.queue.get(), max(0.0, deadline - loop.time()))
            except TimeoutError:
                raise CameraError("no_keyframe: no IDR within 10 s") from None
            if kind == "end":
                raise CameraError(str(value))
            before = track.keyframe_seen
            track.put(value, pts)
            if not before and track.keyframe_seen:
                return bytes(value)

    async def _publish(self, profile: str) -> None:
        assert self.track is not None
        room = Room(url=rtc_url(self.api_url), token=self.token, room=self.room_id, name=self.source_id)
        room.offer_rewrite = lambda sdp: offer_with_profile(sdp, profile)
        self.room = room
        try:
            await asyncio.wait_for(room.open(), PUBLISH_TIMEOUT_S)
            self._mark("joined")
            await asyncio.wait_for(room.publish([h264_track(self.track, self.source_id, profile)]), PUBLISH_TIMEOUT_S)
        except (RoomError, OSError, TimeoutError) as exc:
            raise CameraError(f"publish_failed: {exc}") from None

    async def _pump(self, session: RtspSession) -> None:
        """Access units to the track; a dropped session is reported and opened again."""
        assert self.track is not None
        track = self.track
        failed = 0
        while not self._stopped:
            kind, value, pts = await session.queue.get()
            if kind == "packet":
                before = track.keyframe_seen
                track.put(value, pts)
                if not before and track.keyframe_seen:
                    log.info("camera %s: keyframe %d access units after the start", self.source_id, track.sent)
                failed = 0
                continue
            if kind == "ready":
                track.restart(bytes(value))
                if failed:
                    log.info("camera %s is back after %d attempts", self.source_id, failed)
                continue
            # "end": the session is over
            await session.close()
            if self._stopped:
                return
            failed += 1
            await self._report(str(value))
            if self.max_retries is not None and failed > self.max_retries:
                await self._report(f"gave_up: {failed} attempts failed, last: {value}")
                return
            delay = min(BACKOFF_MAX_S, BACKOFF_START_S * 2 ** (failed - 1)) * random.uniform(0.8, 1.2)
            await asyncio.sleep(delay)
            if self._stopped:
                return
            session = self._session = RtspSession(self.rtsp_url, asyncio.get_running_loop())
            self.sessions += 1

    async def _report(self, reason: str) -> None:
        self.failures.append(reason)
        log.warning("camera %s: %s", self.source_id, reason)
        if self.on_failure is not None:
            try:
                await self.on_failure(reason)
            except Exception:  # noqa: BLE001 - the reporter's failure must not end the retries
                log.exception("on_failure raised")

    async def stop(self) -> None:
        loop = asyncio.get_running_loop()
        began = loop.time()
        self._stopped = True
        if self._task is not None and self._task is not asyncio.current_task():
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self._session is not None:
            await self._session.close()
        rtsp_closed = loop.time()
        if self.track is not None:
            self.track.close()
        if self.room is not None:
            with contextlib.suppress(Exception):
                await self.room.leave()
            self.room = None
        log.info(
            "camera %s stopped; stop ms: rtsp_closed=%.1f left=%.1f",
            self.source_id,
            (rtsp_closed - began) * 1000,
            (loop.time() - began) * 1000,
        )


def forbid_codecs() -> None:
    """Make every codec construction in this process raise (aiortc's factories and PyAV's
    ``CodecContext.create``): proof that the edge only demuxes and packetizes."""
    from media_node.guard import CodecForbidden
    from media_node.guard import forbid_codecs as forbid_aiortc

    forbid_aiortc()

    def refuse(*_: Any, **__: Any) -> Any:
        raise CodecForbidden("the edge forwards camera video without decoding or encoding")

    av.CodecContext.create = refuse  # type: ignore[method-assign]
    av.codec.context.CodecContext.create = refuse  # type: ignore[method-assign]


async def _main(args: argparse.Namespace) -> int:
    def out(event: str, **fields: Any) -> None:
        print(json.dumps({"event": event, **fields}), flush=True)

    async def failed(reason: str) -> None:
        out("failure", reason=reason)

    stream = CameraStream(
        args.rtsp, args.api, args.token, args.room, args.source, on_failure=failed, max_retries=args.max_retries
    )
    try:
        await stream.start()
    except CameraError as exc:
        out("error", reason=exc.reason)
        return 1
    out("started", profile=stream.profile, peer_id=stream.room.peer_id if stream.room else None)
    done = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, done.set)
    await done.wait()
    await stream.stop()
    out("stopped", sessions=stream.sessions, sent=stream.track.sent if stream.track else 0)
    return 0


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Publish one RTSP camera into a room, without transcoding.")
    parser.add_argument("--rtsp", required=True)
    parser.add_argument("--api", required=True, help="the api's base URL, e.g. http://127.0.0.2:8080")
    parser.add_argument("--token", required=True)
    parser.add_argument("--room", required=True)
    parser.add_argument("--source", default="camera")
    parser.add_argument("--max-retries", type=int, default=None)
    parser.add_argument("--forbid-codecs", action="store_true", help="any codec construction raises")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(asctime)s %(name)s %(message)s")
    if args.forbid_codecs:
        forbid_codecs()
    sys.exit(asyncio.run(_main(args)))


if __name__ == "__main__":
    main()
