"""WHEP and WHIP against the real stack.

* A plain ``RTCPeerConnection`` + ``fetch`` in Chromium (no project SDK) plays a station
  camera over WHEP: the camera is GStreamer's RTSP server, published by the edge's
  ``CameraStream`` without transcoding; the page reads the camera's counter off the video.
* An independent WHIP client (a plain aiortc ``RTCPeerConnection`` and httpx, not the SDK)
  publishes into a room; an SFU peer (the SDK) decodes its frames; ``DELETE`` unpublishes.
* Bad input gets its documented code and writes nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
from pathlib import Path
from typing import Any

import httpx
from aiortc import RTCConfiguration, RTCPeerConnection, RTCSessionDescription

from client import Room
from client.synthetic import PatternVideoTrack
from producers.kafka import EventProducer
from producers.rtc import JoinRequested, PublishRequested
from producers.topics import Topics
from tests.e2e.browser import chromium, open_user
from tests.e2e.edge_process import Edge
from tests.e2e.media import Watcher, advancing
from tests.harness import Infra, Service, mint_token, read_events, start_media_stack, unique, wait_for
from tests.rtsp_server import RtspCamera

#: The WHEP player: nothing but the browser's WebRTC and fetch.
PLAY_JS = """async ({ url, token }) => {
    const pc = new RTCPeerConnection({ bundlePolicy: 'max-bundle' });
    pc.addTransceiver('video', { direction: 'recvonly' });
    const video = document.createElement('video');
    video.muted = true; video.autoplay = true; video.playsInline = true;
    document.body.appendChild(video);
    pc.ontrack = (e) => { video.srcObject = new MediaStream([e.track]); };
    await pc.setLocalDescription(await pc.createOffer());
    await new Promise((resolve) => {
        if (pc.iceGatheringState === 'complete') return resolve();
        pc.addEventListener('icegatheringstatechange', () => pc.iceGatheringState === 'complete' && resolve());
    });
    const res = await fetch(url, { method: 'POST', body: pc.localDescription.sdp,
        headers: { 'Content-Type': 'application/sdp', 'Authorization': 'Bearer ' + token } });
    const body = await res.text();
    if (res.status !== 201) return { status: res.status, body };
    await pc.setRemoteDescription({ type: 'answer', sdp: body });
    window.whep = { pc, video, counters: [] };
    const canvas = document.createElement('canvas');
    const ctx = canvas.getContext('2d', { willReadFrequently: true });
    const read = () => {
        if (video.videoWidth && video.readyState >= 2) {
            canvas.width = video.videoWidth; canvas.height = video.videoHeight;
            ctx.drawImage(video, 0, 0);
            const perRow = Math.floor(video.videoWidth / 10);
            let value = 0;
            for (let bit = 0; bit < 32; bit++) {
                const row = Math.floor(bit / perRow), col = bit % perRow;
                const { data } = ctx.getImageData(col * 10 + 3, row * 10 + 3, 5, 5);
                let sum = 0;
                for (let i = 0; i < data.length; i += 4) {
                    sum += 0.299 * data[i] + 0.587 * data[i + 1] + 0.114 * data[i + 2];
                }
                value = value * 2 + (sum / (data.length / 4) > 128 ? 1 : 0);
            }
            const code = Math.floor(value / 2 ** 24), counter = value % 2 ** 24;
            const last = window.whep.counters[window.whep.counters.length - 1];
            if (!last || last[1] !== counter) window.whep.counters.push([code, counter]);
        }
        video.requestVideoFrameCallback(read);
    };
    video.requestVideoFrameCallback(read);
    return { status: 201, location: res.headers.get('Location'), contentType: res.headers.get('Content-Type') };
}"""


async def _whep_writes(infra: Infra, topics: Topics) -> int:
    """JoinRequested events of WHEP/WHIP resources on the log."""
    events = await read_events(infra.kafka, topics.name("rtc.intents"))
    return len(
        [e for e in events if isinstance(e, JoinRequested) and (".whep-" in e.identity or ".whip-" in e.identity)]
    )


async def test_a_browser_plays_a_station_camera_over_whep(
    infra: Infra, topics: Topics, prefix: str, producer: EventProducer, services: list[Service], tmp_path: Path
) -> None:
    camera = RtspCamera(host="127.0.0.1")
    camera.start()
    edge: Edge | None = None
    try:
        _, base = await start_media_stack(infra, topics, prefix, producer, services, tmp_path, forbid_codecs="true")
        room_id = unique("station-bj01-")
        edge_token = await mint_token(base, "edge-bj01", ["join", "publish"], room_id)
        edge = Edge(
            ["--rtsp", camera.url(), "--api", base, "--token", edge_token, "--room", room_id, "--source", "cam-1"],
            tmp_path / "edge.log",
        )
        await wait_for(lambda: edge.of("started") or edge.of("error"), 60, "the edge to publish the camera")
        assert not edge.of("error"), edge.events

        viewer_token = await mint_token(base, "operator", ["join", "subscribe"], room_id)
        async with httpx.AsyncClient(base_url=base) as http:
            await _whep_refusals(http, infra, topics, room_id, viewer_token, edge_token, base)

        async with chromium() as pw:
            user = await open_user(pw, "player", 90)
            try:
                await user.page.goto(f"{base}/healthz")
                result = await user.page.evaluate(
                    PLAY_JS, {"url": f"{base}/v1/whep/{room_id}/cam-1", "token": viewer_token}
                )
                assert result["status"] == 201, result
                assert result["contentType"].startswith("application/sdp")
                location = result["location"]
                assert location.startswith(f"/v1/whep/{room_id}/cam-1/")

                async def counters() -> list[list[int]]:
                    got: list[list[int]] = await user.page.evaluate("() => window.whep.counters")
                    return got

                async def playing() -> bool:
                    seen = [c for code, c in await counters() if code == 1]
                    return advancing(seen, at_least=15)

                try:
                    await wait_for(playing, 60, "Chromium decoding the camera's counter over WHEP", interval=0.5)
                except AssertionError as exc:
                    stats = await user.page.evaluate(
                        "async () => { const r = []; (await window.whep.pc.getStats()).forEach((s) => "
                        "{ if (s.type === 'inbound-rtp') r.push(s); }); return [window.whep.pc.connectionState, r]; }"
                    )
                    raise AssertionError(f"{exc}: {(await counters())[-10:]} {stats}") from None
                codec = await user.page.evaluate(
                    "async () => { let m = null; (await window.whep.pc.getStats()).forEach((s) => "
                    "{ if (s.type === 'codec') m = s.mimeType; }); return m; }"
                )
                assert codec == "video/H264", codec  # the camera's H.264, passed through
                async with httpx.AsyncClient(base_url=base) as http:
                    bearer = {"Authorization": f"Bearer {viewer_token}"}
                    assert (await http.delete(location, headers=bearer)).status_code == 200
                    gone = await http.delete(location, headers=bearer)
                    assert gone.status_code == 404 and gone.json()["error"]["code"] == "resource_not_found"
            finally:
                await user.browser.close()
        assert camera.sessions() == 1, "one RTSP session whoever watches"
    finally:
        if edge is not None:
            await edge.stop()
        camera.stop()


async def _whep_refusals(
    http: httpx.AsyncClient, infra: Infra, topics: Topics, room_id: str, token: str, publisher_token: str, base: str
) -> None:
    """Each refused WHEP request gets its code and writes no JoinRequested."""
    bearer = {"Authorization": f"Bearer {token}", "Content-Type": "application/sdp"}
    url = f"/v1/whep/{room_id}/cam-1"
    before = await _whep_writes(infra, topics)

    async def refused(status: int, code: str, path: str, body: str, headers: dict[str, str]) -> None:
        r = await http.post(path, content=body, headers=headers)
        assert r.status_code == status and r.json()["error"]["code"] == code, (code, r.status_code, r.text)

    await refused(400, "invalid_sdp", url, "this is not SDP", bearer)
    audio_only = await _aiortc_offer(video=False)
    await refused(400, "no_video", url, audio_only, bearer)
    video_offer = await _aiortc_offer(video=True)
    await refused(415, "unsupported_media_type", url, video_offer, {**bearer, "Content-Type": "text/plain"})
    await refused(401, "unauthorized", url, video_offer, {"Content-Type": "application/sdp"})
    no_subscribe = {**bearer, "Authorization": f"Bearer {publisher_token}"}
    await refused(403, "forbidden", url, video_offer, no_subscribe)
    other_room_token = await mint_token(base, "operator", ["join", "subscribe"], None)
    other = {**bearer, "Authorization": f"Bearer {other_room_token}"}
    await refused(404, "room_not_found", f"/v1/whep/{unique('nowhere-')}/cam-1", video_offer, other)
    await asyncio.sleep(2)
    assert await _whep_writes(infra, topics) == before, "a refused WHEP request wrote to the log"
    # an unknown source is known only from `joined`: 404, the probe peer leaves at once
    await refused(404, "source_not_found", f"/v1/whep/{room_id}/no-such-cam", video_offer, bearer)


async def _aiortc_offer(video: bool) -> str:
    pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    try:
        pc.addTransceiver("video" if video else "audio", direction="recvonly")
        await pc.setLocalDescription(await pc.createOffer())
        return str(pc.localDescription.sdp)
    finally:
        await pc.close()


async def test_an_independent_whip_client_publishes_into_a_room(
    infra: Infra, topics: Topics, prefix: str, producer: EventProducer, services: list[Service], tmp_path: Path
) -> None:
    _, base = await start_media_stack(infra, topics, prefix, producer, services, tmp_path, forbid_codecs="true")
    room_id = unique("whip-")
    ws_url = base.replace("http", "ws") + "/v1/rtc"
    viewer = await Room.connect(
        ws_url, await mint_token(base, "viewer", ["join", "subscribe"], room_id), room_id, name="viewer"
    )
    watcher = Watcher()
    watcher.attach(viewer)
    events: list[tuple[str, Any]] = []
    viewer.on(lambda kind, payload: events.append((kind, payload)))
    encoder = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    try:
        token = await mint_token(base, "encoder", ["join", "publish"], room_id)
        async with httpx.AsyncClient(base_url=base) as http:
            headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/sdp"}
            before = await _whep_writes(infra, topics)
            bad = await http.post(f"/v1/whip/{room_id}", content="v=0\r\ngarbage", headers=headers)
            assert bad.status_code == 400 and bad.json()["error"]["code"] == "invalid_sdp", bad.text
            sub_token = await mint_token(base, "viewer2", ["join", "subscribe"], room_id)
            denied = await http.post(
                f"/v1/whip/{room_id}",
                content=await _aiortc_offer(True),
                headers={**headers, "Authorization": f"Bearer {sub_token}"},
            )
            assert denied.status_code == 403 and denied.json()["error"]["code"] == "forbidden", denied.text
            assert await _whep_writes(infra, topics) == before

            encoder.addTransceiver(PatternVideoTrack(5), direction="sendonly")
            await encoder.setLocalDescription(await encoder.createOffer())
            r = await http.post(f"/v1/whip/{room_id}", content=encoder.localDescription.sdp, headers=headers)
            assert r.status_code == 201, r.text
            assert r.headers["content-type"].startswith("application/sdp")
            location = r.headers["location"]
            await encoder.setRemoteDescription(RTCSessionDescription(sdp=r.text, type="answer"))

            await wait_for(lambda: advancing(watcher.video.get(5, [])), 60, "the SFU peer decoding the WHIP frames")
            published = [p for k, p in events if k == "track-published"]
            assert any(p["track"]["source_id"].startswith("whip-") for p in published), published
            intents = await read_events(infra.kafka, topics.name("rtc.intents"))
            assert any(isinstance(e, PublishRequested) and e.room_id == room_id for e in intents)

            assert (await http.delete(location, headers={"Authorization": f"Bearer {token}"})).status_code == 200
            await wait_for(
                lambda: any(k in ("peer-left", "track-unpublished") for k, _ in events), 30, "the WHIP peer to leave"
            )
    finally:
        watcher.stop()
        await encoder.close()
        with contextlib.suppress(Exception):
            await viewer.close()
