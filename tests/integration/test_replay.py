"""``python -m streams.replay`` re-folds the facts topic and compares with the live state."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import sqlalchemy as sa

from db.engine import make_engine
from producers.fields import Grant
from producers.kafka import EventProducer
from producers.rtc import JoinRequested, LeaveRequested, MuteRequested, PeerUpdated
from producers.topics import Topics
from tests.harness import REPO, Infra, Service, streams_ready, streams_service, unique, wait_for, wait_for_events


def run_replay(infra: Infra, prefix: str, app_id: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(REPO), "KAFKA_BOOTSTRAP": infra.kafka, "DATABASE_URL": infra.database_url}
    return subprocess.run(
        [sys.executable, "-m", "streams.replay", "--prefix", prefix, "--app-id", app_id],
        env=env,
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )


async def test_replay_equals_live_state_and_detects_tampering(
    infra: Infra, topics: Topics, prefix: str, producer: EventProducer, services: list[Service], tmp_path: Path
) -> None:
    app_id = f"{prefix}live"
    worker = streams_service(infra, prefix, tmp_path, app_id=app_id).start()
    services.append(worker)
    await streams_ready(producer, infra, topics, worker)

    rooms = [unique("rp-") for _ in range(5)]
    grants = [Grant.JOIN, Grant.PUBLISH, Grant.SUBSCRIBE]
    for room in rooms:
        for p in range(3):
            await producer.send(
                topics.name("rtc.intents"),
                JoinRequested.new(
                    room_id=room,
                    peer_id=f"{room}-p{p}",
                    identity=f"u{p}",
                    session_id=f"s{p}",
                    gateway_id="gw",
                    grants=grants,
                ),
            )
        await producer.send(topics.name("rtc.intents"), LeaveRequested.new(room_id=room, peer_id=f"{room}-p0"))
        await producer.send(
            topics.name("rtc.intents"),
            MuteRequested.new(room_id=room, peer_id=f"{room}-p1", source_kind="microphone", muted=True),
        )
    await wait_for_events(
        infra.kafka,
        topics.name("rtc.facts"),
        lambda ev: sum(isinstance(e, PeerUpdated) for e in ev) == len(rooms),
        30,
        "all facts",
    )

    async def replay_ok() -> bool:  # the projection catches up asynchronously
        return run_replay(infra, prefix, app_id).returncode == 0

    await wait_for(replay_ok, 30, "replay to match")
    result = run_replay(infra, prefix, app_id)
    assert "replay equals live state" in result.stdout, result.stdout + result.stderr

    # negative control: alter one live row
    engine = make_engine(infra.database_url)
    try:
        async with engine.begin() as conn:
            await conn.execute(
                sa.text("update room_members set state = 'left' where room_id = :r and peer_id = :p"),
                {"r": rooms[2], "p": f"{rooms[2]}-p2"},
            )
    finally:
        await engine.dispose()
    tampered = run_replay(infra, prefix, app_id)
    assert tampered.returncode == 1, tampered.stdout
    assert f"member ('{rooms[2]}', '{rooms[2]}-p2') missing" in tampered.stdout
