"""The generated Grafana quality dashboard against the real data sources (Grafana itself
cannot be installed here): a room runs on the media stack with one subscriber behind
15 % loss (iptables), the streams quality agent steps it down, and then EVERY SQL query of
observability/dashboards/quality.json returns rows for that room from Postgres and EVERY
PromQL query returns series from the Prometheus that scraped the run (scripts/infra.sh).
That the committed JSON is the generator's output: tests/unit/test_dashboards.py."""

from __future__ import annotations

import contextlib
import functools
import json
import math
import os
import re
import subprocess
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
from sqlalchemy import text

from client import LocalTrack, Room
from client.synthetic import PatternVideoTrack
from db.engine import make_engine
from observability.dashboards import HERE
from producers.kafka import EventProducer
from producers.topics import Topics
from tests.e2e.media import Watcher
from tests.harness import Infra, Service, mint_token, start_media_stack, unique, wait_for

DASHBOARD = HERE / "quality.json"
RATE_INTERVAL = "1m"  # Grafana's $__rate_interval with its default 15 s scrape interval setting


def targets(dashboard: dict[str, Any]) -> Iterator[tuple[str, dict[str, Any]]]:
    """(panel title, target) of every panel, rows' nested panels included."""
    stack = list(dashboard.get("panels") or [])
    while stack:
        panel = stack.pop(0)
        stack += panel.get("panels") or []
        for target in panel.get("targets") or []:
            yield panel.get("title", ""), target


def sql_queries(dashboard: dict[str, Any]) -> list[tuple[str, str]]:
    out = [(title, t["rawSql"]) for title, t in targets(dashboard) if "rawSql" in t]
    out += [
        (f"variable {v['name']}", v["query"])
        for v in dashboard["templating"]["list"]
        if v.get("type") == "query" and "postgres" in str(v.get("datasource", {}).get("type", ""))
    ]
    return out


def promql_queries(dashboard: dict[str, Any]) -> list[tuple[str, str]]:
    return [(title, t["expr"]) for title, t in targets(dashboard) if "expr" in t]


def render_sql(sql: str, room_id: str, start: datetime, end: datetime) -> str:
    """What Grafana's PostgreSQL data source sends: ``$__timeFilter(c)`` becomes
    ``c BETWEEN '<from>' AND '<to>'``; ``$room`` the selected room."""
    sql = re.sub(
        r"\$__timeFilter\(([^)]+)\)",
        lambda m: f"{m.group(1)} BETWEEN '{start.isoformat()}' AND '{end.isoformat()}'",
        sql,
    )
    sql = sql.replace("$room", room_id)
    assert "$" not in sql, f"unsubstituted variable in {sql}"
    return sql


def subscriber_port(room: Room) -> int:
    """The local UDP port of the subscriber connection's selected ICE pair (aioice)."""
    pc = room._subscriber
    assert pc is not None
    connection = pc.getTransceivers()[0].receiver.transport.transport.iceGatherer._connection
    pair = connection._nominated[1]
    port: int = pair.protocol.local_candidate.port
    return port


@contextlib.contextmanager
def loss_towards(port: int, probability: float) -> Iterator[None]:
    rule = [
        "INPUT",
        "-p",
        "udp",
        "--dport",
        str(port),
        "-m",
        "statistic",
        "--mode",
        "random",
        "--probability",
        str(probability),
        "-j",
        "DROP",
    ]
    subprocess.run(["iptables", "-A", *rule], check=True)
    try:
        yield
    finally:
        subprocess.run(["iptables", "-D", *rule], check=False)


async def test_every_panel_query_returns_data(
    infra: Infra, topics: Topics, prefix: str, producer: EventProducer, services: list[Service], tmp_path: Path
) -> None:
    prometheus = os.environ.get("PROMETHEUS_URL")
    assert prometheus, "PROMETHEUS_URL not set: run under scripts/test.sh (scripts/infra.sh starts Prometheus)"
    dashboard = json.loads(DASHBOARD.read_text())
    sql, promql = sql_queries(dashboard), promql_queries(dashboard)
    assert len(sql) >= 6 and len(promql) >= 4, (sql, promql)

    started = datetime.now(UTC)
    stack, base = await start_media_stack(infra, topics, prefix, producer, services, tmp_path, forbid_codecs="true")
    room_id = unique("qdash-")
    ws_url = base.replace("http", "ws") + "/v1/rtc"
    publisher = await Room.connect(ws_url, await mint_token(base, "pub", ["join", "publish"], room_id), room_id)
    viewer = Room(url=ws_url, token=await mint_token(base, "viewer", ["join", "subscribe"], room_id), room=room_id)
    watcher = Watcher()
    engine = make_engine(infra.database_url)
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
        await wait_for(lambda: watcher.sizes.get(7) == (320, 180) and len(watcher.video[7]) > 20, 30, "high layer")

        async def count(sql: str) -> int:
            async with engine.connect() as conn:
                return int((await conn.execute(text(sql), {"room_id": room_id})).scalar_one())

        async def room_loss_above(threshold: float) -> float | None:
            """The node's per-room subscriber loss (RoomlogSubscriberLoss's input) as scraped, if above."""
            expr = f'max_over_time(roomlog_media_node_subscriber_loss_ratio{{room="{room_id}"}}[1m])'
            async with httpx.AsyncClient() as http:
                r = await http.get(f"{prometheus}/api/v1/query", params={"query": expr}, timeout=10)
            loss = max((float(s["value"][1]) for s in r.json()["data"]["result"]), default=0.0)
            return loss if loss > threshold else None

        with loss_towards(subscriber_port(viewer), 0.15):
            await wait_for(
                lambda: count("SELECT count(*) FROM quality_decisions WHERE room_id = :room_id"),
                60,
                "a quality decision for the lossy subscriber, projected",
            )
            await wait_for(
                functools.partial(room_loss_above, 0.05), 30, "the room's subscriber loss in Prometheus above 5 %"
            )
        await wait_for(
            lambda: count(
                "SELECT count(*) FROM quality_stats WHERE room_id = :room_id AND leg LIKE 'sub/%' AND layer IS NOT NULL"
            ),
            30,
            "subscriber buckets",
        )

        end = datetime.now(UTC) + timedelta(minutes=1)
        empty = []
        async with engine.connect() as conn:
            for title, query in sql:
                rows = (await conn.execute(text(render_sql(query, room_id, started - timedelta(minutes=5), end)))).all()
                if title.startswith("variable"):
                    if room_id not in {r[0] for r in rows}:
                        empty.append(title)
                elif not rows:
                    empty.append(title)
        assert empty == [], f"SQL panels without rows for {room_id}: {empty}"

        # this run's services only (in a whole suite, earlier tests' series are still in range)
        ours = {f"127.0.0.1:{service.metrics_port}" for service in stack}

        async def series(expr: str) -> list[Any]:
            async with httpx.AsyncClient() as http:
                r = await http.get(f"{prometheus}/api/v1/query", params={"query": expr}, timeout=10)
            assert r.status_code == 200, r.text
            body = r.json()
            assert body["status"] == "success", body
            return [
                s
                for s in body["data"]["result"]
                if s["metric"].get("instance") in ours and math.isfinite(float(s["value"][1]))
            ]

        for title, expr in promql:
            query = expr.replace("$__rate_interval", RATE_INTERVAL)
            assert "$" not in query and "by (instance" in query, query
            await wait_for(functools.partial(series, query), 60, f"Prometheus series for {title!r}: {query}")
    finally:
        watcher.stop()
        for room in (viewer, publisher):
            with contextlib.suppress(Exception):
                await room.close()
        await engine.dispose()
