"""Quality history over real Kafka and Postgres: the streams worker projects
``quality.samples`` into 10 s buckets (a re-delivered sample is not counted twice) and
``QualityDecided`` facts into ``quality_decisions``; retention deletes old rows in bounded
batches; ``GET /v1/rooms/{id}/quality`` answers admins and that room's tokens only."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import delete, insert, make_url, select
from sqlalchemy.ext.asyncio import AsyncEngine

from db.engine import make_engine
from db.models import QualityDecision, QualityStat, Room
from producers.kafka import EventProducer
from producers.media import EncodingsChanged, QualityDecided, QualitySample
from producers.topics import Topics
from streams.quality_projection import bucket_of, prune, write_decisions, write_samples
from tests.e2e.tcp_proxy import TcpProxy
from tests.harness import (
    Infra,
    Service,
    api_service,
    free_port,
    http_ready,
    mint_token,
    streams_service,
    unique,
    wait_for,
)


@pytest.fixture
async def engine(infra: Infra) -> AsyncIterator[AsyncEngine]:
    engine = make_engine(infra.database_url)
    yield engine
    await engine.dispose()


def sample(
    room_id: str,
    at: datetime,
    loss: float,
    *,
    peer: str = "viewer",
    leg: str = "sub/cam",
    source: str = "node",
    **fields: Any,
) -> QualitySample:
    return QualitySample.new(
        occurred_at=at, room_id=room_id, peer_id=peer, leg=leg, source=source, loss_pct=loss, **fields
    )


def decided(
    room_id: str, at: datetime, layer: str, previous: str | None, loss: float, peer: str = "viewer"
) -> QualityDecided:
    return QualityDecided.new(
        occurred_at=at,
        room_id=room_id,
        peer_id=peer,
        source_id="cam",
        layer=layer,
        previous=previous,
        loss_pct=loss,
        reason="loss",
        publisher_peer_id="pub",
        level=3,
    )


async def stats(engine: AsyncEngine, room_id: str) -> list[Any]:
    async with engine.connect() as conn:
        rows = (
            await conn.execute(
                select(QualityStat)
                .where(QualityStat.room_id == room_id)
                .order_by(QualityStat.sampled_at, QualityStat.leg)
            )
        ).all()
    return list(rows)


async def decisions(engine: AsyncEngine, room_id: str) -> list[Any]:
    async with engine.connect() as conn:
        return list(
            (
                await conn.execute(
                    select(QualityDecision)
                    .where(QualityDecision.room_id == room_id)
                    .order_by(QualityDecision.decided_at)
                )
            ).all()
        )


async def test_worker_projects_samples_into_buckets_and_decisions(
    infra: Infra,
    topics: Topics,
    prefix: str,
    producer: EventProducer,
    services: list[Service],
    tmp_path: Path,
    engine: AsyncEngine,
) -> None:
    services.append(streams_service(infra, prefix, tmp_path).start())
    room_id = unique("qh-")
    b0 = bucket_of(datetime.now(UTC)) - timedelta(seconds=60)
    s1 = sample(
        room_id,
        b0 + timedelta(seconds=1),
        2.0,
        rtt_ms=10,
        jitter_ms=1,
        bitrate_kbps=500,
        packets=100,
        nacks=1,
        plis=0,
        layer="high",
        bandwidth_kbps=800,
    )
    s2 = sample(
        room_id,
        b0 + timedelta(seconds=3),
        4.0,
        rtt_ms=20,
        jitter_ms=2,
        bitrate_kbps=400,
        packets=100,
        nacks=2,
        plis=1,
        layer="high",
    )
    s3 = sample(
        room_id,
        b0 + timedelta(seconds=5),
        9.0,
        rtt_ms=30,
        jitter_ms=3,
        bitrate_kbps=300,
        packets=100,
        nacks=3,
        plis=0,
        layer="mid",
        bandwidth_kbps=600,
    )
    s4 = sample(room_id, b0 + timedelta(seconds=7), 0.0, rtt_ms=12, bitrate_kbps=900, packets=50, paused=True)
    client = sample(room_id, b0 + timedelta(seconds=2), 1.5, leg="client", source="client", rtt_ms=40, level=2)
    next_bucket = sample(room_id, b0 + timedelta(seconds=11), 20.0, rtt_ms=50, packets=10, layer="low")
    d1 = decided(room_id, b0 + timedelta(seconds=6), "mid", "high", 9.0)
    d2 = decided(room_id, b0 + timedelta(seconds=16), "low", "mid", 14.0)
    for event in (s1, s2, s3, client, next_bucket):
        await producer.send(topics.name("quality.samples"), event)
    await producer.send(topics.name("quality.facts"), d1)
    await producer.send(
        topics.name("quality.facts"),
        EncodingsChanged.new(room_id=room_id, peer_id="pub", source_id="cam", active=["low", "mid"]),
    )
    # re-delivered (the same events again on the log), then one new sample and decision
    for event in (s1, s2, s3):
        await producer.send(topics.name("quality.samples"), event)
    await producer.send(topics.name("quality.samples"), s4)
    await producer.send(topics.name("quality.facts"), d1)
    await producer.send(topics.name("quality.facts"), d2)

    async def projected() -> bool:
        rows = await stats(engine, room_id)
        sub = [r for r in rows if r.sampled_at == b0 and r.leg == "sub/cam"]
        return bool(sub) and str(s4.event_id) in sub[0].event_ids and len(await decisions(engine, room_id)) >= 2

    await wait_for(projected, 120, "samples and decisions projected")
    rows = {(r.sampled_at, r.leg): r for r in await stats(engine, room_id)}
    assert set(rows) == {(b0, "sub/cam"), (b0, "client"), (b0 + timedelta(seconds=10), "sub/cam")}
    row = rows[(b0, "sub/cam")]
    assert row.samples == 4  # s1..s3 once each despite the re-delivery, and s4
    assert sorted(row.event_ids) == sorted(str(s.event_id) for s in (s1, s2, s3, s4))
    assert row.loss_pct == Decimal("3.75") and row.loss_max == Decimal("9.00")
    assert row.rtt_ms == pytest.approx(18.0) and row.jitter_ms == pytest.approx(1.5)
    assert row.bitrate_kbps == pytest.approx(525.0)
    assert (row.packets, row.nacks, row.plis) == (350, 6, 1)
    assert row.layer == "paused" and row.bandwidth_kbps == 600  # the last layer; the last known estimate
    assert row.source == "node"
    assert rows[(b0, "client")].source == "client" and rows[(b0, "client")].samples == 1
    later = rows[(b0 + timedelta(seconds=10), "sub/cam")]
    assert (later.samples, later.loss_pct, later.layer) == (1, Decimal("20.00"), "low")
    got = await decisions(engine, room_id)
    assert [(d.event_id, d.previous, d.layer, d.reason, d.level, d.publisher_peer_id) for d in got] == [
        (str(d1.event_id), "high", "mid", "loss", 3, "pub"),
        (str(d2.event_id), "mid", "low", "loss", 3, "pub"),
    ]
    assert got[0].decided_at == d1.occurred_at and got[0].loss_pct == 9.0


async def test_overlapping_batches_count_each_sample_once(infra: Infra, engine: AsyncEngine) -> None:
    room_id = unique("qh-")
    b0 = bucket_of(datetime.now(UTC))
    a, b, c = (
        sample(room_id, b0 + timedelta(seconds=i), loss, rtt_ms=rtt, packets=10)
        for i, (loss, rtt) in enumerate([(1.0, 10.0), (2.0, 20.0), (6.0, 60.0)])
    )
    for batch in ([a, b], [b, c], [a, b, c], [c, c]):
        async with engine.begin() as conn:
            await write_samples(conn, batch)
    [row] = await stats(engine, room_id)
    assert row.samples == 3 and row.packets == 30
    assert row.loss_pct == Decimal("3.00") and row.rtt_ms == pytest.approx(30.0)
    assert sorted(row.event_ids) == sorted(str(s.event_id) for s in (a, b, c))


async def test_retention_deletes_old_rows_in_bounded_batches(infra: Infra, engine: AsyncEngine) -> None:
    room_id = unique("qh-")
    now = datetime.now(UTC)
    old = [sample(room_id, now - timedelta(days=20, seconds=10 * i), 5.0) for i in range(7)]
    recent = [sample(room_id, now - timedelta(days=1), 1.0)]
    old_decisions = [decided(room_id, now - timedelta(days=15, seconds=i), "low", "mid", 12.0) for i in range(3)]
    new_decision = decided(room_id, now - timedelta(hours=1), "mid", "low", 3.0)
    async with engine.begin() as conn:
        await write_samples(conn, old + recent)
        await write_decisions(conn, [*old_decisions, new_decision])
    assert len(await stats(engine, room_id)) == 8

    deleted = await prune(engine, now - timedelta(days=14), batch=2)
    assert deleted["quality_stats"] >= 7 and deleted["quality_decisions"] >= 3
    left = await stats(engine, room_id)
    assert [r.event_ids for r in left] == [[str(recent[0].event_id)]]
    assert [d.event_id for d in await decisions(engine, room_id)] == [str(new_decision.event_id)]
    assert await prune(engine, now - timedelta(days=14), batch=2) == {"quality_stats": 0, "quality_decisions": 0}


@pytest.fixture
async def api(infra: Infra, prefix: str, services: list[Service], tmp_path: Path) -> str:
    port = free_port()
    service = api_service(infra, prefix, tmp_path, port).start()
    services.append(service)
    base = f"http://127.0.0.1:{port}"
    await http_ready(f"{base}/healthz", service)
    return base


async def test_room_quality_endpoint(infra: Infra, topics: Topics, api: str, engine: AsyncEngine) -> None:
    room_id, other = unique("qh-"), unique("qh-")
    now = datetime.now(UTC)
    b0 = bucket_of(now) - timedelta(minutes=5)
    async with engine.begin() as conn:
        await conn.execute(delete(Room).where(Room.room_id == room_id))
        await conn.execute(
            insert(Room), [dict(room_id=room_id, room_type="sfu", status="open", created_at=b0, last_event_id="e")]
        )
        await write_samples(
            conn,
            [
                sample(room_id, b0 + timedelta(seconds=1), 2.0, rtt_ms=10, bitrate_kbps=800, layer="high"),
                sample(room_id, b0 + timedelta(seconds=3), 4.0, rtt_ms=30, bitrate_kbps=600, layer="high"),
                sample(room_id, b0 + timedelta(seconds=21), 12.0, rtt_ms=20, bitrate_kbps=200, layer="mid"),
                sample(room_id, b0 + timedelta(seconds=2), 0.5, peer="pub", leg="pub/cam/high", bitrate_kbps=900),
                sample(room_id, now - timedelta(hours=3), 50.0, peer="viewer"),  # before `since`
            ],
        )
        first = decided(room_id, b0 + timedelta(seconds=22), "mid", "high", 12.0)
        second = decided(room_id, b0 + timedelta(seconds=60), "high", "mid", 1.0)
        await write_decisions(conn, [second, first, decided(room_id, now - timedelta(hours=2), "low", "high", 30.0)])

    admin = await mint_token(api, "ops", ["admin"])
    member = await mint_token(api, "viewer", ["join"], room_id)
    stranger = await mint_token(api, "viewer", ["join"], other)
    url = f"{api}/v1/rooms/{room_id}/quality"
    since = (now - timedelta(hours=1)).isoformat()
    async with httpx.AsyncClient() as http:
        for token in (admin, member):
            r = await http.get(url, params={"since": since}, headers={"Authorization": f"Bearer {token}"})
            assert r.status_code == 200, r.text
            body = r.json()
            assert [d["event_id"] for d in body["decisions"]] == [str(first.event_id), str(second.event_id)]
            assert [p["peer_id"] for p in body["peers"]] == ["pub", "viewer"]
            viewer = body["peers"][1]
            assert viewer["decisions"] == 2 and viewer["layers"] == {"cam": "high"}
            [leg] = viewer["legs"]
            assert (leg["leg"], leg["source"], leg["buckets"], leg["samples"]) == ("sub/cam", "node", 2, 3)
            assert leg["mean_loss_pct"] == pytest.approx(6.0) and leg["max_loss_pct"] == 12.0
            assert leg["mean_rtt_ms"] == pytest.approx(20.0) and leg["mean_bitrate_kbps"] == pytest.approx(1600 / 3)
            assert leg["latest"]["loss_pct"] == 12.0 and leg["latest"]["layer"] == "mid"
            assert body["peers"][0]["legs"][0]["leg"] == "pub/cam/high"
            assert body["decisions_truncated"] is False
        r = await http.get(url, params={"since": since, "limit": 1}, headers={"Authorization": f"Bearer {admin}"})
        assert [d["event_id"] for d in r.json()["decisions"]] == [str(first.event_id)]
        assert r.json()["decisions_truncated"] is True

        r = await http.get(url, headers={"Authorization": f"Bearer {stranger}"})
        assert r.status_code == 403 and r.json()["error"]["code"] == "forbidden"
        r = await http.get(url)
        assert r.status_code == 401 and r.json()["error"]["code"] == "unauthorized"
        for bad in ("yesterday", "2026-13-01T00:00:00Z", (now + timedelta(days=1)).isoformat()):
            r = await http.get(url, params={"since": bad}, headers={"Authorization": f"Bearer {admin}"})
            assert r.status_code == 400 and r.json()["error"]["code"] == "invalid_since", (bad, r.text)
        r = await http.get(f"{api}/v1/rooms/{other}/quality", headers={"Authorization": f"Bearer {admin}"})
        assert r.status_code == 404 and r.json()["error"]["code"] == "room_not_found"


async def test_postgres_outage_delays_the_history_and_loses_nothing(
    infra: Infra,
    topics: Topics,
    prefix: str,
    producer: EventProducer,
    services: list[Service],
    tmp_path: Path,
    engine: AsyncEngine,
) -> None:
    url = make_url(infra.database_url)
    proxy = await TcpProxy(url.port or 5432).start()
    through_proxy = url.set(port=proxy.port).render_as_string(hide_password=False)
    worker = streams_service(infra, prefix, tmp_path)
    worker.env["DATABASE_URL"] = through_proxy
    services.append(worker.start())
    room_id = unique("qh-")
    b0 = bucket_of(datetime.now(UTC))
    first = sample(room_id, b0, 1.0, packets=10)
    try:
        await producer.send(topics.name("quality.samples"), first)
        await wait_for(lambda: stats(engine, room_id), 120, "the first sample projected")

        await proxy.block()
        during = [sample(room_id, b0 + timedelta(seconds=i), 3.0, packets=10) for i in (1, 2)]
        decision = decided(room_id, b0 + timedelta(seconds=2), "mid", "high", 3.0)
        for event in during:
            await producer.send(topics.name("quality.samples"), event)
        await producer.send(topics.name("quality.facts"), decision)
        await asyncio.sleep(6)  # the worker retries meanwhile
        [row] = await stats(engine, room_id)
        assert row.samples == 1 and await decisions(engine, room_id) == []
        assert worker.alive()

        await proxy.unblock()

        async def caught_up() -> bool:
            rows = await stats(engine, room_id)
            return bool(rows) and rows[0].samples == 3 and len(await decisions(engine, room_id)) == 1

        await wait_for(caught_up, 60, "the samples and the decision written after the outage")
        [row] = await stats(engine, room_id)
        assert row.packets == 30 and row.loss_pct == Decimal("2.33")
        assert "retrying" in worker.tail(400)
    finally:
        await proxy.close()


async def test_the_worker_runs_the_retention(
    infra: Infra, topics: Topics, prefix: str, services: list[Service], tmp_path: Path, engine: AsyncEngine
) -> None:
    room_id = unique("qh-")
    now = datetime.now(UTC)
    old = sample(room_id, now - timedelta(days=8), 5.0)
    recent = sample(room_id, now - timedelta(days=6), 1.0)
    async with engine.begin() as conn:
        await write_samples(conn, [old, recent])
        await write_decisions(conn, [decided(room_id, now - timedelta(days=9), "low", "mid", 12.0)])
    services.append(
        streams_service(infra, prefix, tmp_path, quality_retention_days=7, quality_retention_interval_s=1).start()
    )

    async def pruned() -> bool:
        rows = await stats(engine, room_id)
        return [r.event_ids for r in rows] == [[str(recent.event_id)]] and not await decisions(engine, room_id)

    await wait_for(pruned, 120, "the worker's retention deleting the rows older than 7 days")
