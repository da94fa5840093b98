"""A publisher sends one source as two encodings; ``SetLayer`` (via a client subscribe
with another layer) moves a subscriber from high to low exactly at a keyframe of the
low encoding, and the subscriber's decoder never fails."""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any

import aiortc.rtcrtpreceiver
import pytest

from client import LocalTrack, Room
from client.synthetic import PatternVideoTrack
from producers.kafka import EventProducer
from producers.media import SetLayer
from producers.topics import Topics
from tests.e2e.media import Watcher
from tests.harness import (
    Infra,
    Service,
    mint_token,
    read_events,
    start_media_stack,
    unique,
    wait_for,
)


class CountingDecoder:
    """Wraps the subscriber's real decoder: counts errors, logs (input is keyframe, output size)."""

    def __init__(self, inner: Any, stats: dict[str, Any]) -> None:
        self.inner, self.stats = inner, stats

    def decode(self, encoded_frame: Any) -> Any:
        keyframe = bool(encoded_frame.data) and encoded_frame.data[0] & 0x01 == 0
        try:
            frames = self.inner.decode(encoded_frame)
        except Exception:
            self.stats["errors"] += 1
            raise
        for frame in frames:
            self.stats["log"].append((keyframe, frame.width, frame.height))
        return frames


@pytest.fixture
def decoder_stats(monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    stats: dict[str, Any] = {"errors": 0, "log": []}
    real = aiortc.rtcrtpreceiver.get_decoder
    monkeypatch.setattr(aiortc.rtcrtpreceiver, "get_decoder", lambda codec: CountingDecoder(real(codec), stats))
    return stats


async def test_set_layer_switches_at_a_keyframe(
    infra: Infra,
    topics: Topics,
    prefix: str,
    producer: EventProducer,
    services: list[Service],
    tmp_path: Path,
    decoder_stats: dict[str, Any],
) -> None:
    stack, base = await start_media_stack(infra, topics, prefix, producer, services, tmp_path, forbid_codecs="true")
    room_id = unique("layer-")
    ws_url = base.replace("http", "ws") + "/v1/rtc"
    publisher = await Room.connect(ws_url, await mint_token(base, "pub", ["join", "publish"], room_id), room_id)
    viewer = Room(url=ws_url, token=await mint_token(base, "viewer", ["join", "subscribe"], room_id), room=room_id)
    watcher = Watcher()
    try:
        await publisher.publish(
            [
                LocalTrack(PatternVideoTrack(7, 320, 180), "cam", "camera", layer="high"),
                LocalTrack(PatternVideoTrack(7, 160, 90), "cam", "camera", layer="low"),
            ]
        )
        watcher.attach(viewer)
        await viewer._signaling.open()
        await viewer._join()
        await viewer.subscribe("cam", "high")
        await wait_for(lambda: watcher.sizes.get(7) == (320, 180) and len(watcher.video[7]) > 20, 20, "high layer")
        switch_from = len(decoder_stats["log"])
        await viewer.subscribe("cam", "low")
        await wait_for(lambda: watcher.sizes.get(7) == (160, 90), 10, "the low layer")
        await wait_for(lambda: len(watcher.video[7]) > 60, 10, "more frames")
    finally:
        watcher.stop()
        for room in (viewer, publisher):
            with contextlib.suppress(Exception):
                await room.close()
    log = decoder_stats["log"]
    assert decoder_stats["errors"] == 0 and len(log) > 60
    sizes = [(w, h) for _, w, h in log]
    first_low = sizes.index((160, 90))
    assert first_low >= switch_from, "no low frame before the switch was asked for"
    assert log[first_low][0], "the decoded resolution changed exactly at a keyframe of the low encoding"
    assert set(sizes[:first_low]) == {(320, 180)} and set(sizes[first_low:]) == {(160, 90)}
    commands = [e for e in await read_events(infra.kafka, topics.name("media.commands")) if isinstance(e, SetLayer)]
    assert [(c.source_id, c.layer) for c in commands if c.room_id == room_id] == [("cam", "low")]
