"""The Python SDK's end of the quality loop against the whole stack (streams with its
quality agent, a media node, the api): a publisher alone in its room is told that nobody
needs its camera (``encodings`` with nothing active) and its senders stop RTP, measured in
their own getStats; a viewer joins, the encoding it needs starts again and the viewer
decodes the publisher's pattern. Both keep ``room.quality`` and send ``quality-report``s,
which land on ``quality.samples``; the gateway refuses none."""

from __future__ import annotations

import asyncio
import contextlib
import time
from pathlib import Path

from aiortc import RTCRtpSender

from client import LocalTrack, Room
from client.synthetic import PatternVideoTrack, ToneAudioTrack
from producers.kafka import EventProducer
from producers.media import EncodingsChanged, QualitySample
from producers.topics import Topics
from tests.e2e.media import Watcher
from tests.harness import Infra, Service, mint_token, read_events, start_media_stack, unique, wait_for

HIGH, LOW = 31, 32


async def packets_sent(sender: RTCRtpSender) -> int:
    return sum(s.packetsSent for s in (await sender.getStats()).values() if getattr(s, "type", "") == "outbound-rtp")


async def test_dynacast_and_quality_reports_of_the_python_sdk(
    infra: Infra, topics: Topics, prefix: str, producer: EventProducer, services: list[Service], tmp_path: Path
) -> None:
    _, base = await start_media_stack(infra, topics, prefix, producer, services, tmp_path)
    room_id = unique("pyquality-")
    ws_url = base.replace("http", "ws") + "/v1/rtc"
    publisher = await Room.connect(ws_url, await mint_token(base, "pub", ["join", "publish"], room_id), room_id)
    viewer = Room(url=ws_url, token=await mint_token(base, "view", ["join", "subscribe"], room_id), room=room_id)
    watcher = Watcher()
    try:
        tracks = [
            LocalTrack(PatternVideoTrack(HIGH, 320, 180), "cam", "camera", "high"),
            LocalTrack(PatternVideoTrack(LOW, 160, 90), "cam", "camera", "low"),
            LocalTrack(ToneAudioTrack(), "mic", "microphone"),
        ]
        await publisher.publish(tracks)
        high, low, mic = (t.sender for t in publisher._publisher.getTransceivers())  # type: ignore[union-attr]

        # alone in the room: nobody needs any encoding of the camera, the senders stop
        await wait_for(lambda: publisher.encodings.get("cam") == [], 30, "encodings [] for the camera")
        assert publisher.sending("cam") == {"high": False, "low": False}
        assert publisher.sending("mic") == {"single": True}
        await asyncio.sleep(0.5)
        before = [await packets_sent(s) for s in (high, low, mic)]
        await asyncio.sleep(2)
        after = [await packets_sent(s) for s in (high, low, mic)]
        assert after[:2] == before[:2], f"stopped encodings still send: {before} -> {after}"
        assert after[2] > before[2] + 20, "the microphone must keep sending"
        assert publisher.quality.uplink is not None and publisher.quality.uplink.level <= 2, publisher.quality

        # a viewer joins (subscribed to high): high starts again and the viewer decodes it
        watcher.attach(viewer)
        joined = time.monotonic()
        await viewer.open()
        await wait_for(lambda: "high" in publisher.encodings.get("cam", []), 30, "high needed again")
        assert publisher.sending("cam")["high"] is True
        await wait_for(lambda: len(watcher.video.get(HIGH, [])) >= 30, 30, "the viewer decoding the high pattern")
        print(
            f"high decoded {time.monotonic() - joined:.1f} s after the viewer joined; encodings {publisher.encodings}"
        )

        # both have levels and send reports; the viewer's level for the publisher is good
        assert publisher.peer_id is not None and viewer.peer_id is not None
        await wait_for(
            lambda: (
                viewer.quality.downlink.get(publisher.peer_id or "") is not None
                and viewer.quality.downlink[publisher.peer_id or ""].bitrate_kbps > 0
            ),
            20,
            "the viewer's quality for the publisher",
        )
        seen = viewer.quality.downlink[publisher.peer_id]
        assert 1 <= seen.level <= 2 and seen.loss_pct < 5, seen
        assert viewer.quality.uplink is None  # publishes nothing
        assert publisher.report_errors == {} and viewer.report_errors == {}
        sent = {publisher.peer_id: publisher.reports_sent, viewer.peer_id: viewer.reports_sent}
        pub_id, viewer_id = publisher.peer_id, viewer.peer_id
    finally:
        watcher.stop()
        for room in (viewer, publisher):
            with contextlib.suppress(Exception):
                await room.close()

    # every report each client had sent when counted is a client sample (one more may have left before closing)
    async def reports() -> dict[str, list[QualitySample]] | None:
        events = await read_events(infra.kafka, topics.name("quality.samples"))
        client = [e for e in events if isinstance(e, QualitySample) and e.room_id == room_id and e.source == "client"]
        by_peer: dict[str, list[QualitySample]] = {p: [s for s in client if s.peer_id == p] for p in sent}
        return by_peer if all(len(by_peer[p]) >= n for p, n in sent.items()) else None

    by_peer = await wait_for(reports, 15, f"the clients' reports {sent} on quality.samples")
    for peer_id, n in sent.items():
        ids = [s.correlation_id for s in by_peer[peer_id]]
        assert n >= 1 and ids[:n] == [f"quality-{i}" for i in range(1, n + 1)] and len(ids) <= n + 1, ids
    assert all(s.level is not None and s.bitrate_kbps >= 0 for s in by_peer[pub_id])
    legs = [leg for s in by_peer[viewer_id] for leg in s.downlink]
    assert {(leg.peer_id, leg.source_id) for leg in legs} >= {(pub_id, "cam"), (pub_id, "mic")}
    facts = [
        e
        for e in await read_events(infra.kafka, topics.name("quality.facts"))
        if isinstance(e, EncodingsChanged) and e.room_id == room_id and e.source_id == "cam"
    ]
    assert [f.active for f in facts][:1] == [[]] and "high" in facts[-1].active, [f.active for f in facts]
