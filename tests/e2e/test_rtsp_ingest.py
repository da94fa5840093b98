"""A real RTSP camera (GStreamer's RTSP server, tests/rtsp_server.py) published into a room by
the edge's ``CameraStream`` without decoding or encoding (the edge process's codec factories
raise), forwarded by a media node whose codec factories raise too; an aiortc subscriber decodes
the camera's counter, and the H.264 parameter sets it receives are the camera's own."""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any

import av
from aiortc.rtp import RtpPacket

from client import Room
from client.passthrough import NAL_PPS, NAL_SPS, nal_units
from client.recording import PacketTaps
from producers.kafka import EventProducer
from producers.rtc import PublishRequested
from producers.topics import Topics
from tests.e2e.edge_process import Edge
from tests.e2e.media import Watcher, advancing
from tests.harness import Infra, Service, mint_token, read_events, start_media_stack, unique, wait_for
from tests.rtsp_server import RtspCamera

STAP_A = 24


def parameter_sets_in(payload: bytes) -> list[bytes]:
    """SPS/PPS NAL units carried by one RTP payload (single NAL or STAP-A)."""
    if not payload:
        return []
    kind = payload[0] & 0x1F
    if kind in (NAL_SPS, NAL_PPS):
        return [payload]
    out, pos = [], 1
    while kind == STAP_A and pos + 2 <= len(payload):
        size = int.from_bytes(payload[pos : pos + 2], "big")
        nal = payload[pos + 2 : pos + 2 + size]
        if nal and nal[0] & 0x1F in (NAL_SPS, NAL_PPS):
            out.append(nal)
        pos += 2 + size
    return out


def source_parameter_sets(url: str) -> list[bytes]:
    """The camera's SPS and PPS as the RTSP session describes them (PyAV's extradata)."""
    container = av.open(url, options={"rtsp_transport": "tcp"}, timeout=(5, 5))
    try:
        extradata = bytes(container.streams.video[0].codec_context.extradata or b"")
    finally:
        container.close()
    return [n for n in nal_units(extradata) if n and n[0] & 0x1F in (NAL_SPS, NAL_PPS)]


async def test_rtsp_camera_reaches_a_subscriber_untouched(
    infra: Infra, topics: Topics, prefix: str, producer: EventProducer, services: list[Service], tmp_path: Path
) -> None:
    camera = RtspCamera(host="127.0.0.1")
    camera.start()
    edge: Edge | None = None
    rooms: list[Room] = []
    watcher = Watcher()
    try:
        _, base = await start_media_stack(infra, topics, prefix, producer, services, tmp_path, forbid_codecs="true")
        source_sets = source_parameter_sets(camera.url())
        assert [n[0] & 0x1F for n in source_sets] == [NAL_SPS, NAL_PPS]
        await wait_for(lambda: camera.sessions() == 0, 10, "the probe's RTSP session to close")

        room_id = unique("station-")
        ws_url = base.replace("http", "ws") + "/v1/rtc"
        edge_token = await mint_token(base, "edge-bj01", ["join", "publish"], room_id)
        edge = Edge(
            ["--rtsp", camera.url(), "--api", base, "--token", edge_token, "--room", room_id, "--source", "cam-1"],
            tmp_path / "edge.log",
        )
        await wait_for(lambda: edge.of("started") or edge.of("error"), 60, "the edge to start the camera stream")
        assert not edge.of("error"), edge.events
        profile = source_sets[0][1:4].hex()
        assert edge.of("started")[0]["profile"] == profile
        # the offer on the log names only H.264, with the camera's own profile-level-id
        offers = [
            e.sdp
            for e in await read_events(infra.kafka, topics.name("rtc.intents"))
            if isinstance(e, PublishRequested) and e.room_id == room_id
        ]
        assert offers and f"profile-level-id={profile}" in offers[0] and "VP8" not in offers[0], offers

        viewer_token = await mint_token(base, "viewer", ["join", "subscribe"], room_id)
        viewer = Room(url=ws_url, token=viewer_token, room=room_id, name="viewer")
        watcher.attach(viewer)
        rooms.append(viewer)
        await viewer.open()

        received: list[bytes] = []

        async def on_packet(_tap: Any, _source: dict[str, Any], packet: RtpPacket, _at: float) -> None:
            received.extend(parameter_sets_in(packet.payload))

        tapper_token = await mint_token(base, "tapper", ["join", "subscribe"], room_id)
        tapper = await Room.connect(ws_url, tapper_token, room_id, name="tapper", receiver_hook=PacketTaps(on_packet))
        rooms.append(tapper)

        await wait_for(lambda: advancing(watcher.video.get(1, [])), 60, "the viewer decoding the camera's counter")
        await wait_for(lambda: len(received) >= 2, 30, "parameter sets in the forwarded RTP")
        assert set(received) == set(source_sets), (received, source_sets)
        assert camera.sessions() == 1, "one RTSP session for the camera"

        # the camera drops: reported with a reason, pulled again when it is back
        camera.stop()
        await wait_for(lambda: edge.of("failure"), 20, "the edge to report the dropped camera")
        reason = edge.of("failure")[0]["reason"]
        assert reason.startswith(("rtsp_dropped", "rtsp_ended", "rtsp_unreachable")), reason
        camera.start()
        await wait_for(lambda: camera.sessions() == 1, 40, "the edge to open the RTSP session again")
        frames_before = len(watcher.video[1])  # the camera's counter starts again at 0

        def resumed() -> bool:
            # the first pictures after the outage may still be the old session's (in flight)
            after = watcher.video[1][frames_before:]
            return len(after) >= 30 and advancing(after[-20:]) and after[-1] < 1000

        try:
            await wait_for(resumed, 40, "the viewer decoding the camera again")
        except AssertionError as exc:
            seen = watcher.video[1]
            around = seen[frames_before - 5 : frames_before + 20]
            raise AssertionError(f"{exc}: {len(seen)} frames, {frames_before} before; around {around}") from None
        print("after the outage:", watcher.video[1][frames_before - 5 : frames_before + 20])
        assert edge.proc.poll() is None and not edge.of("error")
    finally:
        watcher.stop()
        for room in rooms:
            with contextlib.suppress(Exception):
                await room.close()
        if edge is not None:
            await edge.stop()
        camera.stop()
    assert edge.of("stopped"), edge.events
