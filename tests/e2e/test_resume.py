"""The gateway a client is connected to dies and comes back: the SDK reopens its socket
and resumes the same peer (within the grace period); media never stopped."""

from __future__ import annotations

import contextlib
import time
from pathlib import Path

from client import LocalTrack, Room
from client.synthetic import PatternVideoTrack
from producers.kafka import EventProducer
from producers.rtc import PeerResumed
from producers.topics import Topics
from tests.e2e.media import Watcher, advancing
from tests.harness import (
    Infra,
    Service,
    http_ready,
    mint_token,
    read_events,
    start_media_stack,
    unique,
    wait_for,
)


async def test_sdk_resumes_its_peer_after_the_gateway_restarts(
    infra: Infra, topics: Topics, prefix: str, producer: EventProducer, services: list[Service], tmp_path: Path
) -> None:
    stack, base = await start_media_stack(infra, topics, prefix, producer, services, tmp_path)
    api = stack[-1]
    room_id = unique("resume-")
    ws_url = base.replace("http", "ws") + "/v1/rtc"
    rooms: list[Room] = []
    watcher = Watcher()
    try:
        for code in (1, 2):
            token = await mint_token(base, f"user{code}", ["join", "publish", "subscribe"], room_id)
            rooms.append(await Room.connect(ws_url, token, room_id))
            if code == 2:
                watcher.attach(rooms[-1])
            await rooms[-1].publish([LocalTrack(PatternVideoTrack(code), f"cam-{code}", "camera")])
        await wait_for(lambda: advancing(watcher.video.get(1, [])), 30, "video before the restart")
        peer_ids = [r.peer_id for r in rooms]

        api.kill()
        killed_at = time.monotonic()
        restarted = type(api)(api.name, api.module, api.env, api.log_path).start()
        services.append(restarted)
        await http_ready(f"{base}/healthz", restarted)

        async def resumed() -> bool:
            events = await read_events(infra.kafka, topics.name("rtc.facts"))
            return {e.peer_id for e in events if isinstance(e, PeerResumed) and e.room_id == room_id} == set(peer_ids)

        await wait_for(resumed, 30, "both peers resumed through the new gateway")
        assert [r.peer_id for r in rooms] == peer_ids, "the same peers, not new ones"
        await rooms[0].ping()
        # media went through the node all along, independent of the gateway
        assert len([t for t in watcher.video_at[1] if t > killed_at]) > 10
    finally:
        watcher.stop()
        for room in rooms:
            with contextlib.suppress(Exception):
                await room.close()
