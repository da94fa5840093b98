"""The generated platform overview dashboard (observability/dashboards/overview.json)
against the real data sources after real traffic: a room on the media stack with a
publisher and a subscriber, a raw socket sending pings and bad frames, 404s and payloads
that streams dead-letter. Then EVERY SQL query returns rows from Postgres (the open-rooms
table lists this room with its two peers) and EVERY PromQL query returns finite series
from this run's own services in the Prometheus of scripts/infra.sh; the panels that this
traffic must move are required above zero.

The one panel no healthy run can fill is "Producer errors/s by topic" (a record Kafka
refused): for it the query must succeed, return nothing from this healthy run, and every
service must export the counter on its /metrics page. That the committed JSON is the
generator's output: tests/unit/test_dashboards.py."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import math
import os
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import websockets
from sqlalchemy import text

from client import LocalTrack, Room
from client.synthetic import PatternVideoTrack
from db.engine import make_engine
from observability.dashboards import HERE
from producers.kafka import EventProducer
from producers.topics import Topics
from tests.e2e.media import Watcher
from tests.harness import Infra, Service, mint_token, start_media_stack, unique, wait_for
from tests.integration.test_quality_dashboard import RATE_INTERVAL, promql_queries, render_sql, sql_queries

DASHBOARD = HERE / "overview.json"
#: panels this test's traffic must push above zero (the rest: finite series of our services)
POSITIVE = {
    "Rooms per node",
    "Peers per node",
    "Tracks per node",
    "Active legs per node",
    "Forwarded packets/s per node",
    "CPU per node (cores)",
    "Inputs/s by topic",
    "Open sockets",
    "Socket messages/s by type",
    "HTTP requests/s by status",
    "Gateway ready",
    "Socket errors/s by code",
    "HTTP errors/s by code",
    "Dead letters/s by topic",
}
#: panels only a fault fills: the query must succeed and the metric be exported
FAULT_ONLY = {"Producer errors/s by topic": "roomlog_producer_errors_total"}


async def test_every_overview_panel_returns_data(
    infra: Infra, topics: Topics, prefix: str, producer: EventProducer, services: list[Service], tmp_path: Path
) -> None:
    prometheus = os.environ.get("PROMETHEUS_URL")
    assert prometheus, "PROMETHEUS_URL not set: run under scripts/test.sh (scripts/infra.sh starts Prometheus)"
    dashboard = json.loads(DASHBOARD.read_text())
    sql, promql = sql_queries(dashboard), promql_queries(dashboard)
    titles = {title for title, _ in promql}
    assert POSITIVE <= titles and set(FAULT_ONLY) <= titles, titles - POSITIVE
    assert len(sql) == 3 and len(promql) == 20, (sql, promql)

    started = datetime.now(UTC)
    stack, base = await start_media_stack(infra, topics, prefix, producer, services, tmp_path)
    room_id = unique("odash-")
    ws_url = base.replace("http", "ws") + "/v1/rtc"
    publisher = await Room.connect(ws_url, await mint_token(base, "pub", ["join", "publish"], room_id), room_id)
    viewer = Room(url=ws_url, token=await mint_token(base, "viewer", ["join", "subscribe"], room_id), room=room_id)
    watcher = Watcher()
    engine = make_engine(infra.database_url)
    raw = await websockets.connect(f"{ws_url}?token={await mint_token(base, 'raw', ['join'], room_id)}")
    try:
        await publisher.publish(
            [
                LocalTrack(PatternVideoTrack(5, 320, 180), "cam", "camera", layer="high"),
                LocalTrack(PatternVideoTrack(5, 160, 90), "cam", "camera", layer="low"),
            ]
        )
        watcher.attach(viewer)
        await viewer._signaling.open()
        await viewer._join()
        await viewer.subscribe("cam", "high")
        await wait_for(lambda: len(watcher.video[5]) > 20, 30, "frames at the subscriber")

        # errors of three kinds, twice each a few scrapes apart (a counter's first sample is
        # its first value, so one increment alone shows no rate)
        for round_ in range(2):
            await raw.send("not json")
            assert json.loads(await raw.recv())["code"] == "invalid_message"
            await raw.send(json.dumps({"type": "ping", "request_id": f"p{round_}"}))
            assert json.loads(await raw.recv())["type"] == "pong"
            async with httpx.AsyncClient() as http:
                assert (await http.get(f"{base}/v1/no-such-route")).status_code == 404
            await producer.send_raw(topics.name("rtc.intents"), b"{not json", key=room_id.encode())
            await asyncio.sleep(6)

        end = datetime.now(UTC) + timedelta(minutes=1)
        async with engine.connect() as conn:
            for title, query in sql:
                rows = (await conn.execute(text(render_sql(query, room_id, started - timedelta(minutes=5), end)))).all()
                assert rows, f"SQL panel {title!r} without rows"
                if title == "Open rooms":
                    ours = [r for r in rows if r.room_id == room_id]
                    assert ours and ours[0].peers == 2 and ours[0].node_id, rows

        instances = {f"127.0.0.1:{service.metrics_port}" for service in stack}

        async def series(expr: str) -> list[tuple[dict[str, str], float]]:
            async with httpx.AsyncClient() as http:
                r = await http.get(f"{prometheus}/api/v1/query", params={"query": expr}, timeout=10)
            assert r.status_code == 200, r.text
            body = r.json()
            assert body["status"] == "success", body
            out = [(s["metric"], float(s["value"][1])) for s in body["data"]["result"]]
            return [(m, v) for m, v in out if m.get("instance") in instances and math.isfinite(v)]

        async def positive(expr: str) -> list[Any]:
            return [s for s in await series(expr) if s[1] > 0]

        for title, expr in promql:
            query = expr.replace("$__rate_interval", RATE_INTERVAL)
            assert "$" not in query and "by (instance" in query, query
            if title in FAULT_ONLY:
                assert await series(query) == []  # a healthy run: no producer error
                continue
            check = positive if title in POSITIVE else series
            await wait_for(functools.partial(check, query), 60, f"Prometheus series for {title!r}: {query}")

        async with httpx.AsyncClient() as http:
            pages = {i: (await http.get(f"http://{i}/metrics", timeout=10)).text for i in instances}
        for title, metric in FAULT_ONLY.items():
            silent = [i for i, page in pages.items() if f"# TYPE {metric} counter" not in page]
            assert silent == [], f"{title}: {metric} not exported by {silent}"
    finally:
        watcher.stop()
        await raw.close()
        for room in (viewer, publisher):
            with contextlib.suppress(Exception):
                await room.close()
        await engine.dispose()
