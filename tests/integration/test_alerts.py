"""The alert rules as the run's Prometheus evaluates them (scripts/infra.sh loads
observability/prometheus/rules.yml, scrapes and evaluates every PROM_SCRAPE_INTERVAL, 2 s):
a real media node process is scraped `up`, then SIGKILLed like a crash; its target stays
listed (file_sd), Prometheus sees it down, and RoomlogMediaNodeDown goes pending, then
firing once its `for:` window has passed — read from Prometheus' alerts API."""

from __future__ import annotations

import contextlib
import os
import re
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import yaml

from client import LocalTrack, Room
from client.synthetic import PatternVideoTrack
from producers.kafka import EventProducer
from producers.topics import Topics
from tests.e2e.media import Watcher
from tests.harness import (
    Infra,
    Service,
    mint_token,
    start_media_stack,
    streams_ready,
    streams_service,
    unique,
    wait_for,
)
from tests.integration.test_quality_dashboard import loss_towards, subscriber_port

RULES = Path(__file__).resolve().parents[2] / "observability" / "prometheus" / "rules.yml"


def rule(name: str) -> dict[str, Any]:
    groups = yaml.safe_load(RULES.read_text())["groups"]
    return next(r for g in groups for r in g["rules"] if r.get("alert") == name)


def seconds(duration: str) -> float:
    value, unit = re.fullmatch(r"(\d+)([smh])", duration).groups()  # type: ignore[union-attr]
    return int(value) * {"s": 1, "m": 60, "h": 3600}[unit]


async def get(prometheus: str, path: str) -> Any:
    async with httpx.AsyncClient() as http:
        r = await http.get(f"{prometheus}{path}", timeout=10)
    assert r.status_code == 200, r.text
    return r.json()["data"]


async def test_killing_a_media_node_fires_node_down_within_its_for_window(
    infra: Infra, topics: Topics, prefix: str, producer: EventProducer, services: list[Service], tmp_path: Path
) -> None:
    prometheus = os.environ.get("PROMETHEUS_URL")
    assert prometheus, "PROMETHEUS_URL not set: run under scripts/test.sh (scripts/infra.sh starts Prometheus)"
    window = seconds(rule("RoomlogMediaNodeDown")["for"])
    loaded = await get(prometheus, "/api/v1/rules")
    assert "RoomlogMediaNodeDown" in {r["name"] for g in loaded["groups"] for r in g["rules"]}, loaded

    stack, _ = await start_media_stack(infra, topics, prefix, producer, services, tmp_path)
    node = stack[1]
    instances = {s.module: f"127.0.0.1:{s.metrics_port}" for s in stack}

    async def health() -> dict[str, str]:
        targets = (await get(prometheus, "/api/v1/targets"))["activeTargets"]
        return {t["labels"]["instance"]: t["health"] for t in targets if t["labels"].get("job") == "roomlog"}

    async def all_up() -> bool:
        now = await health()
        return all(now.get(i) == "up" for i in instances.values())

    await wait_for(all_up, 60, f"Prometheus scraping {instances} up")

    async def node_alerts() -> list[dict[str, Any]]:
        alerts = (await get(prometheus, "/api/v1/alerts"))["alerts"]
        return [
            a
            for a in alerts
            if a["labels"]["alertname"] == "RoomlogMediaNodeDown" and a["labels"]["instance"] == instances["media_node"]
        ]

    assert await node_alerts() == []
    node.kill()
    killed = time.time()
    pending = await wait_for(node_alerts, 20, "RoomlogMediaNodeDown pending")
    assert pending[0]["state"] == "pending", pending
    assert pending[0]["labels"]["name"] == node.name and pending[0]["labels"]["severity"] == "critical"
    assert (await health())[instances["media_node"]] == "down"

    async def firing() -> list[dict[str, Any]]:
        return [a for a in await node_alerts() if a["state"] == "firing"]

    fired = await wait_for(firing, window + 20, f"RoomlogMediaNodeDown firing within {window} s + 20 s")
    fired_at = time.time()
    active_at = datetime.fromisoformat(fired[0]["activeAt"].replace("Z", "+00:00")).timestamp()
    # pending began after the kill (the first failed scrape), firing no sooner than `for` after that
    assert killed - 1 <= active_at <= killed + 10, (killed, fired[0])
    assert fired_at - active_at >= window - 1, (fired_at, fired[0])
    assert fired_at - killed <= window + 20
    # the others were never down
    now = await health()
    assert [now.get(instances[m]) for m in ("streams", "api")] == ["up", "up"], now


async def test_a_first_dead_letter_fires_the_dead_letter_alert(
    infra: Infra, topics: Topics, prefix: str, producer: EventProducer, services: list[Service], tmp_path: Path
) -> None:
    """A worker's first dead letter (its counter appears at 1, which ``increase`` alone
    cannot see) fires RoomlogDeadLetters for that topic, at the next evaluation."""
    prometheus = os.environ.get("PROMETHEUS_URL")
    assert prometheus, "PROMETHEUS_URL not set: run under scripts/test.sh (scripts/infra.sh starts Prometheus)"
    worker = streams_service(infra, prefix, tmp_path).start()
    services.append(worker)
    await streams_ready(producer, infra, topics, worker)
    instance = f"127.0.0.1:{worker.metrics_port}"

    async def scraped() -> bool:
        targets = (await get(prometheus, "/api/v1/targets"))["activeTargets"]
        return any(t["labels"]["instance"] == instance and t["health"] == "up" for t in targets)

    await wait_for(scraped, 60, f"Prometheus scraping the worker {instance}")
    topic = topics.name("rtc.intents")

    async def alerts() -> list[dict[str, Any]]:
        return [
            a
            for a in (await get(prometheus, "/api/v1/alerts"))["alerts"]
            if a["labels"]["alertname"] == "RoomlogDeadLetters" and a["labels"].get("topic") == topic
        ]

    assert await alerts() == []
    await producer.send_raw(topic, b"{not json", key=b"room-1")
    fired = await wait_for(alerts, 30, f"RoomlogDeadLetters for {topic}")
    assert fired[0]["state"] == "firing" and fired[0]["labels"]["severity"] == "warning", fired
    assert f"{topic}.dlq" in fired[0]["annotations"]["description"]


async def test_a_lossy_subscriber_fires_subscriber_loss_for_its_room(
    infra: Infra, topics: Topics, prefix: str, producer: EventProducer, services: list[Service], tmp_path: Path
) -> None:
    """15 % of the packets towards one subscriber dropped (iptables): the node's per-room loss,
    averaged over a minute, stays above 10 % and RoomlogSubscriberLoss fires for that room."""
    prometheus = os.environ.get("PROMETHEUS_URL")
    assert prometheus, "PROMETHEUS_URL not set: run under scripts/test.sh (scripts/infra.sh starts Prometheus)"
    window = seconds(rule("RoomlogSubscriberLoss")["for"])
    _, base = await start_media_stack(infra, topics, prefix, producer, services, tmp_path)
    room_id = unique("loss-")
    ws_url = base.replace("http", "ws") + "/v1/rtc"
    publisher = await Room.connect(ws_url, await mint_token(base, "pub", ["join", "publish"], room_id), room_id)
    viewer = Room(url=ws_url, token=await mint_token(base, "viewer", ["join", "subscribe"], room_id), room=room_id)
    watcher = Watcher()

    async def alerts() -> list[dict[str, Any]]:
        return [
            a
            for a in (await get(prometheus, "/api/v1/alerts"))["alerts"]
            if a["labels"]["alertname"] == "RoomlogSubscriberLoss" and a["labels"].get("room") == room_id
        ]

    try:
        await publisher.publish(
            [
                LocalTrack(PatternVideoTrack(9, 320, 180), "cam", "camera", layer="high"),
                LocalTrack(PatternVideoTrack(9, 160, 90), "cam", "camera", layer="low"),
            ]
        )
        watcher.attach(viewer)
        await viewer._signaling.open()
        await viewer._join()
        await viewer.subscribe("cam", "high")
        await wait_for(lambda: len(watcher.video[9]) > 20, 30, "frames at the subscriber")
        assert await alerts() == []
        started = time.time()
        with loss_towards(subscriber_port(viewer), 0.15):
            try:
                fired = await wait_for(
                    lambda: _firing(alerts), 2 * window + 90, "RoomlogSubscriberLoss firing for the lossy room"
                )
            except AssertionError as exc:
                seen = await get(
                    prometheus,
                    f"/api/v1/query?query=roomlog_media_node_subscriber_loss_ratio{{room=%22{room_id}%22}}[4m]",
                )
                raise AssertionError(f"{exc}; the room's loss samples: {seen}") from None
        assert time.time() - started >= window  # not before its for: window
        assert fired[0]["labels"]["severity"] == "warning", fired
        assert float(fired[0]["value"]) > 0.10, fired
    finally:
        watcher.stop()
        for room in (viewer, publisher):
            with contextlib.suppress(Exception):
                await room.close()


async def _firing(alerts: Any) -> list[dict[str, Any]]:
    return [a for a in await alerts() if a["state"] == "firing"]
