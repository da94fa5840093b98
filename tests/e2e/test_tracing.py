"""One join from the Python SDK reads as one trace in a real Jaeger (issue 12, item 4).

Jaeger (``scripts/infra.sh jaeger up``: cmd/jaeger v1.75.0, OTLP/HTTP in, query API) runs
beside a streams worker, a media node and an api with ``ROOMLOG_TRACING=1``. A client joins
and publishes; the trace is read back through Jaeger's HTTP API (``/api/traces``) and must
hold, in causal order (each span the child of the one before, across Kafka by the records'
``traceparent``): the socket's ``join`` → its ``JoinRequested`` → streams' decision → the
``publish`` → ``PublishRequested`` → streams' decision → ``OpenPublisher`` run by the node →
``PublisherAnswered`` → streams' decision → the notification → the gateway's answer.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from client import LocalTrack, Room
from client.synthetic import PatternVideoTrack
from producers.kafka import EventProducer
from producers.topics import Topics
from tests.harness import (
    REPO,
    Infra,
    Service,
    free_port,
    http_ready,
    media_stack,
    mint_token,
    streams_ready,
    unique,
    wait_for,
)


@pytest.fixture
def jaeger(tmp_path: Path) -> Iterator[dict[str, str]]:
    """A Jaeger started by the project's script in this run's dir; its URLs."""
    env = {
        **os.environ,
        "ROOMLOG_RUN_DIR": os.environ.get("ROOMLOG_RUN_DIR", str(tmp_path / "run")),
        "JAEGER_OTLP_PORT": str(free_port()),
        "JAEGER_UI_PORT": str(free_port() + 1),  # the gRPC query port is the one below it
        "JAEGER_HEALTH_PORT": str(free_port()),
    }
    script = [str(REPO / "scripts" / "infra.sh"), "jaeger"]
    up = subprocess.run([*script, "up"], env=env, capture_output=True, text=True, timeout=240)
    assert up.returncode == 0, f"jaeger did not start:\n{up.stdout}\n{up.stderr}"
    urls = dict(line.split("=", 1) for line in up.stdout.split() if "=" in line)
    try:
        yield urls
    finally:
        subprocess.run([*script, "down"], env=env, capture_output=True, timeout=60)


def _tags(span: dict[str, Any]) -> dict[str, Any]:
    return {t["key"]: t["value"] for t in span.get("tags", [])}


def _parent(span: dict[str, Any]) -> str | None:
    refs = [r for r in span.get("references", []) if r["refType"] == "CHILD_OF" and r["traceID"] == span["traceID"]]
    return refs[0]["spanID"] if refs else None


async def _traces(jaeger_url: str, room_id: str) -> list[dict[str, Any]]:
    """Every trace in which the api recorded a span of this room."""
    params = {"service": "roomlog-api", "tags": json.dumps({"roomlog.room_id": room_id}), "lookback": "1h"}
    async with httpx.AsyncClient() as client:
        r = await client.get(f"{jaeger_url}/api/traces", params={**params, "limit": "100"}, timeout=10)
    r.raise_for_status()
    data: list[dict[str, Any]] = r.json()["data"] or []
    return data


async def test_one_join_is_one_trace_across_the_log(
    infra: Infra,
    topics: Topics,
    prefix: str,
    producer: EventProducer,
    services: list[Service],
    tmp_path: Path,
    jaeger: dict[str, str],
) -> None:
    traced = {
        "ROOMLOG_TRACING": "1",
        "ROOMLOG_TRACING_ENDPOINT": jaeger["ROOMLOG_TRACING_ENDPOINT"],
        "OTEL_BSP_SCHEDULE_DELAY": "200",  # export within 0.2 s (the SDK's default waits 5 s)
    }
    stack = media_stack(infra, prefix, tmp_path)
    for service in stack:
        service.env.update(traced)
        services.append(service.start())
    base = f"http://127.0.0.1:{stack[-1].env['ROOMLOG_API_PORT']}"
    await streams_ready(producer, infra, topics, stack[0])
    await http_ready(f"{base}/healthz", stack[-1])

    room_id = unique("trace-")
    token = await mint_token(base, "alice", ["join", "publish", "subscribe"], room_id)
    room = await Room.connect(base.replace("http", "ws") + "/v1/rtc", token, room_id)
    try:
        await room.publish([LocalTrack(PatternVideoTrack(1), "cam-1", "camera")])  # returns on the answer
    finally:
        with contextlib.suppress(Exception):
            await room.close()

    wanted = {
        ("roomlog-api", "ws join"),
        ("roomlog-api", "send JoinRequested"),
        ("roomlog-streams", "rooms decide JoinRequested"),
        ("roomlog-api", "notify joined"),
        ("roomlog-api", "ws publish"),
        ("roomlog-api", "send PublishRequested"),
        ("roomlog-streams", "rooms decide PublishRequested"),
        ("roomlog-media-node", "node OpenPublisher"),
        ("roomlog-media-node", "send PublisherAnswered"),
        ("roomlog-streams", "rooms decide PublisherAnswered"),
        ("roomlog-api", "notify publisher-answer"),
    }

    async def complete() -> list[dict[str, Any]] | None:
        traces = await _traces(jaeger["JAEGER_URL"], room_id)
        joins = [t for t in traces if any(s["operationName"] == "ws join" for s in t["spans"])]
        if len(joins) != 1:
            return None
        trace = joins[0]
        have = {(trace["processes"][s["processID"]]["serviceName"], s["operationName"]) for s in trace["spans"]}
        return traces if wanted <= have else None

    try:
        traces = await wait_for(complete, 60, "the join's trace in Jaeger with every hop")
    except AssertionError:
        got = await _traces(jaeger["JAEGER_URL"], room_id)
        names = [sorted(s["operationName"] for s in t["spans"]) for t in got]
        raise AssertionError(f"the join's trace is not complete in Jaeger; traces of the room: {names}") from None

    # ONE trace: the join's and the publish's socket messages, and everything they caused
    with_join = [t for t in traces if any(s["operationName"] in ("ws join", "ws publish") for s in t["spans"])]
    assert len(with_join) == 1, [t["traceID"] for t in with_join]
    trace = with_join[0]
    spans = {s["spanID"]: s for s in trace["spans"]}
    service_of = {s["spanID"]: trace["processes"][s["processID"]]["serviceName"] for s in trace["spans"]}
    by_name = {(service_of[i], s["operationName"]): s for i, s in spans.items()}

    def ancestry(span: dict[str, Any] | None) -> list[tuple[str, str]]:
        """The span and its parents up to the trace's root, root first."""
        path: list[tuple[str, str]] = []
        while span is not None:
            path.append((service_of[span["spanID"]], span["operationName"]))
            parent = _parent(span)
            span = spans.get(parent) if parent else None
        return path[::-1]

    # causal order: walk up from the gateway's answer; every hop is the child of the one before
    path = ancestry(by_name[("roomlog-api", "notify publisher-answer")])
    assert path == [
        ("roomlog-api", "ws join"),
        ("roomlog-api", "ws publish"),
        ("roomlog-api", "send PublishRequested"),
        ("roomlog-streams", "rooms decide PublishRequested"),
        ("roomlog-media-node", "node OpenPublisher"),
        ("roomlog-media-node", "send PublisherAnswered"),
        ("roomlog-streams", "rooms decide PublisherAnswered"),
        ("roomlog-api", "notify publisher-answer"),
    ], path
    starts = [by_name[hop]["startTime"] for hop in path]
    assert starts == sorted(starts), "a child started before its parent"
    # the join's answer descends from the join's intent (through the room's placement, when the
    # join is the room's first: registry and room decisions in between)
    joined = ancestry(by_name[("roomlog-api", "notify joined")])
    assert joined[:3] == [
        ("roomlog-api", "ws join"),
        ("roomlog-api", "send JoinRequested"),
        ("roomlog-streams", "rooms decide JoinRequested"),
    ], joined
    assert joined[-1] == ("roomlog-api", "notify joined"), joined
    assert all(service == "roomlog-streams" for service, _ in joined[3:-1]), joined
    decided = by_name[("roomlog-streams", "rooms decide JoinRequested")]

    # the spans carry the ids a log line or an event on the log leads to
    ran = _tags(by_name[("roomlog-media-node", "node OpenPublisher")])
    assert ran["roomlog.room_id"] == room_id
    assert ran["roomlog.peer_id"] == room.peer_id
    assert ran["roomlog.event_type"] == "OpenPublisher"
    assert _tags(by_name[("roomlog-streams", "rooms decide PublishRequested")])["messaging.destination.name"] == (
        topics.name("rtc.intents")
    )
    # each streams input links to the span of the batch it was decided in (a trace of its own)
    links = [r for r in decided.get("references", []) if r["refType"] == "FOLLOWS_FROM"]
    assert links and all(link["traceID"] != trace["traceID"] for link in links)
