"""Three Python clients in one SFU room see and hear each other through a media node
that forwards without decoding (its codec factories raise)."""

from __future__ import annotations

import asyncio
import contextlib
from pathlib import Path

from client import LocalTrack, Room
from client.synthetic import PatternVideoTrack, ToneAudioTrack
from producers.kafka import EventProducer
from producers.media import QualitySample
from producers.topics import Topics
from tests.e2e.media import Watcher, advancing
from tests.harness import (
    Infra,
    Service,
    mint_token,
    read_events,
    start_media_stack,
    unique,
    wait_for,
)


async def test_three_clients_see_and_hear_each_other(
    infra: Infra, topics: Topics, prefix: str, producer: EventProducer, services: list[Service], tmp_path: Path
) -> None:
    stack, base = await start_media_stack(
        infra, topics, prefix, producer, services, tmp_path, forbid_codecs="true", stats_interval_s=1
    )

    room_id = unique("call-")
    ws_url = base.replace("http", "ws") + "/v1/rtc"
    rooms: list[Room] = []
    watchers: list[Watcher] = []
    try:
        for code in (1, 2, 3):
            token = await mint_token(base, f"user{code}", ["join", "publish", "subscribe"], room_id)
            room = await Room.connect(ws_url, token, room_id, name=f"user{code}")
            watcher = Watcher()
            watcher.attach(room)
            rooms.append(room)
            watchers.append(watcher)
            await room.publish(
                [
                    LocalTrack(PatternVideoTrack(code), f"cam-{code}", "camera"),
                    LocalTrack(ToneAudioTrack(), f"mic-{code}", "microphone"),
                ]
            )

        def everyone_sees_everyone() -> bool:
            for code, watcher in zip((1, 2, 3), watchers, strict=True):
                others = {1, 2, 3} - {code}
                if not all(advancing(watcher.video.get(o, [])) for o in others):
                    return False
                if len([p for p, n in watcher.audio.items() if n >= 50]) < 2:
                    return False
            return True

        try:
            await wait_for(
                everyone_sees_everyone, 60, "every client decoding the other two and hearing them", interval=0.5
            )
        except AssertionError as exc:
            summary = [
                {c: (len(v), v[:3], v[-3:], v == sorted(v)) for c, v in w.video.items()} | {"audio": dict(w.audio)}
                for w in watchers
            ]
            raise AssertionError(f"{exc}\n{summary}") from None
        for code, watcher in zip((1, 2, 3), watchers, strict=True):
            assert code not in watcher.video, "a client received its own video"
            assert set(watcher.video) == {1, 2, 3} - {code}
        # media keeps flowing
        before = {id(w): {c: len(v) for c, v in w.video.items()} for w in watchers}
        await asyncio.sleep(2)
        for w in watchers:
            assert all(len(w.video[c]) > before[id(w)][c] for c in w.video)
    finally:
        for watcher in watchers:
            watcher.stop()
        for room in rooms:
            with contextlib.suppress(Exception):
                await room.close()
    node = stack[1]
    assert node.alive(), node.tail()
    # per-leg quality samples from the node: every published encoding and every subscription
    samples = [
        e
        for e in await read_events(infra.kafka, topics.name("quality.samples"))
        if isinstance(e, QualitySample) and e.room_id == room_id
    ]
    legs = {(s.peer_id, s.leg) for s in samples}
    for code, room in zip((1, 2, 3), rooms, strict=True):
        assert {(room.peer_id, f"pub/cam-{code}/single"), (room.peer_id, f"pub/mic-{code}/single")} <= legs
        others = {1, 2, 3} - {code}
        assert {(room.peer_id, f"sub/cam-{o}") for o in others} <= legs
    flowing = [s for s in samples if s.leg.startswith("sub/cam") and s.bitrate_kbps > 0]
    assert flowing and all(s.loss_pct < 5 for s in flowing)
    assert "CodecForbidden" not in node.log_path.read_text()
