"""A station camera end to end, in real Chromium: an operator clicks View on the stations page,
streams route `start-stream` to the edge agent (run with every codec factory raising), which
pulls the real RTSP camera (GStreamer's RTSP server, H.264 with a counter in every frame) and
publishes it without decoding; the page decodes frames whose counter increases within 3 s of
the click. A second viewer starts no second RTSP session; when both leave, the stream stops
within 35 s and the RTSP session closes."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import pytest

from producers.kafka import EventProducer
from producers.stations import StreamStopped
from producers.topics import Topics
from tests.e2e.browser import User, chromium, open_user, start_web_stack
from tests.harness import Infra, Service, of_type, read_events, wait_for
from tests.stations_stack import edge_service, station_token, write_config

rtsp_server = pytest.importorskip("tests.rtsp_server")

READ = """async () => {
    const { readVideo } = await import('/web/sdk/pattern.js');
    const page = window.stationsPage;
    const video = document.getElementById('camera-video');
    return { now: performance.now(), requestedAt: page.stream ? page.stream.requestedAt : null,
             read: readVideo(video, 320, 180), state: document.getElementById('viewer-state').dataset.state };
}"""

CODEC = """async () => {
    const pc = window.stationsPage.room?.subscriber?.pc;
    if (!pc) return null;
    const stats = await pc.getStats();
    let out = null;
    stats.forEach((s) => { if (s.type === 'inbound-rtp' && s.kind === 'video' && s.codecId) {
        const c = stats.get(s.codecId); out = { mimeType: c.mimeType, fmtp: c.sdpFmtpLine || '',
        framesDecoded: s.framesDecoded }; } });
    return out;
}"""


async def view(user: User, station: str) -> float:
    """Click View cam1; the ms from the click to a second, larger counter of camera 1."""
    await user.page.click(f'#stations tr[data-station="{station}"] button.camera[data-camera="cam1"]')
    first: dict[str, Any] | None = None
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        got = await user.page.evaluate(READ)
        read = got["read"]
        if read and read["code"] == 1 and read["std"] > 5:
            if first is None:
                first = read
            elif 0 < read["counter"] - first["counter"] < 1000:
                return float(got["now"] - got["requestedAt"])
        await asyncio.sleep(0.05)
    raise AssertionError(f"no increasing camera frames: last {got}; console {user.console[-10:]}")


async def test_station_camera_on_demand_one_pull_and_idle_stop(
    infra: Infra, topics: Topics, prefix: str, producer: EventProducer, services: list[Service], tmp_path: Path
) -> None:
    camera = rtsp_server.RtspCamera()
    camera.start()
    try:
        _, base = await start_web_stack(infra, topics, prefix, producer, services, tmp_path)
        station = f"bj_{prefix.strip('-')[-6:]}"
        config = write_config(
            tmp_path / "edge.toml",
            station_id=station,
            api=base,
            token=await station_token(base, station),
            state_dir=tmp_path / "state",
            cameras=(("cam1", camera.url(1)),),
            forbid_codecs=True,
        )
        agent = edge_service(config, tmp_path).start()
        services.append(agent)
        async with chromium() as pw:
            first = await open_user(pw, "Olga", 1)
            second = await open_user(pw, "Pavel", 2)
            try:
                for user in (first, second):
                    await user.sign_in(base)
                    await user.page.goto(f"{base}/web/stations.html")
                await wait_for(
                    lambda: first.page.evaluate(
                        f"(document.querySelector('#stations tr[data-station=\"{station}\"]') || {{}}).dataset?.status"
                        " === 'online'"
                    ),
                    30,
                    "the station online on the page",
                )
                assert camera.sessions() == 0
                took_ms = await view(first, station)
                assert took_ms < 3000, f"click → increasing frames took {took_ms:.0f} ms"
                codec = await first.page.evaluate(CODEC)
                assert codec is not None and codec["mimeType"].lower() == "video/h264", codec
                assert camera.sessions() == 1

                await second.page.wait_for_selector(f'#stations tr[data-station="{station}"][data-status="online"]')
                took2 = await view(second, station)
                assert took2 < 3000, took2
                assert camera.sessions() == 1, "a second viewer must not start a second RTSP session"
                assert agent.alive(), agent.tail()

                for user in (first, second):
                    await user.page.click("#viewer-close")
                left = time.monotonic()
                await wait_for(lambda: camera.sessions() == 0, 40, "the RTSP session closed", interval=0.5)
                stopped_after = time.monotonic() - left
                assert stopped_after < 35, stopped_after
                facts = await read_events(infra.kafka, topics.name("station.events"))
                assert [f.reason for f in of_type(facts, StreamStopped) if f.station_id == station] == ["idle"]
            finally:
                await first.browser.close()
                await second.browser.close()
    finally:
        camera.stop()
