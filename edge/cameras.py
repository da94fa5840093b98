"""The camera streams an agent runs: one per camera, started and stopped by command.

A stream is the RTSP piece's ``CameraStream`` (``edge/rtsp.py``): it pulls the camera and
publishes its packets into the room through the Python SDK without decoding. ``start``
returns once the first packet is published; a stream that fails later (after its own
retries) calls back, and the agent reports ``stream-ended``.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

from edge.config import CameraSection
from edge.errors import EdgeError, UnknownCamera

log = logging.getLogger(__name__)


class CameraStreamLike(Protocol):
    async def start(self) -> None: ...

    async def stop(self) -> None: ...


OnFailure = Callable[[str], Awaitable[None]]
#: ``factory(rtsp_url, api_url, token, room, source_id, on_failure=...)`` → a stream.
StreamFactory = Callable[..., CameraStreamLike]


def rtsp_factory(
    rtsp_url: str, api_url: str, token: str, room: str, source_id: str, *, on_failure: OnFailure
) -> CameraStreamLike:
    """The real thing: ``edge.rtsp.CameraStream`` (imported when first needed)."""
    from edge.rtsp import CameraStream

    stream: CameraStreamLike = CameraStream(rtsp_url, api_url, token, room, source_id, on_failure=on_failure)
    return stream


class StreamFailed(EdgeError):
    code = "stream_failed"


class Cameras:
    def __init__(
        self,
        cameras: list[CameraSection],
        api_url: str,
        factory: StreamFactory,
        on_ended: Callable[[str, str], Awaitable[None]],
    ) -> None:
        self.cameras = {c.id: c for c in cameras}
        self.api_url = api_url
        self.factory = factory
        self.on_ended = on_ended
        self.running: dict[str, CameraStreamLike] = {}
        self._locks: dict[str, asyncio.Lock] = {}

    def live(self) -> list[str]:
        return sorted(self.running)

    async def start(self, camera_id: str, room: str, source_id: str, token: str) -> dict[str, Any]:
        camera = self.cameras.get(camera_id)
        if camera is None:
            raise UnknownCamera(f"no camera {camera_id!r} at this station")
        async with self._locks.setdefault(camera_id, asyncio.Lock()):
            if camera_id not in self.running:
                stream = self.factory(
                    camera.rtsp_url, self.api_url, token, room, source_id, on_failure=self._failed(camera_id)
                )
                try:
                    await stream.start()
                except Exception as exc:  # noqa: BLE001 - CameraError(reason) or anything else: reported
                    reason = getattr(exc, "reason", None) or f"{type(exc).__name__}: {exc}"
                    raise StreamFailed(str(reason)) from None
                self.running[camera_id] = stream
                log.info("camera stream started", extra={"room_id": room, "camera_id": camera_id})
        return {"camera_id": camera_id, "room_id": room, "source_id": source_id}

    def _failed(self, camera_id: str) -> OnFailure:
        async def on_failure(reason: str) -> None:
            if self.running.pop(camera_id, None) is not None:
                log.warning("camera stream failed", extra={"camera_id": camera_id, "reason": reason})
                await self.on_ended(camera_id, reason)

        return on_failure

    async def stop(self, camera_id: str) -> dict[str, Any]:
        async with self._locks.setdefault(camera_id, asyncio.Lock()):
            stream = self.running.pop(camera_id, None)
            if stream is not None:
                await stream.stop()
        return {"camera_id": camera_id, "stopped": stream is not None}

    async def stop_all(self) -> None:
        for camera_id in list(self.running):
            await self.stop(camera_id)
