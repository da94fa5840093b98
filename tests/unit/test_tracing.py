"""Tracing across a record and the JSON logs' trace fields (``observability/tracing.py``, ``logs.py``).

An SDK tracer provider with an in-memory exporter stands in for Jaeger; the records are the
headers ``producers.kafka.trace_headers`` writes, read back the way a consumer reads them.
"""

from __future__ import annotations

import asyncio
import io
import json
import logging
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind

from media_node.commands import CommandRunner
from observability import tracing
from observability.logs import JsonFormatter
from producers.envelope import derived_id, utcnow
from producers.kafka import trace_headers
from producers.media import CommandFailed, SetPaused
from producers.rtc import JoinRequested
from producers.settings import TracingSettings
from producers.topics import Topics


@pytest.fixture
def spans() -> Iterator[InMemorySpanExporter]:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracing.use(provider)
    yield exporter
    tracing.use(None)
    provider.shutdown()


def _join() -> JoinRequested:
    return JoinRequested.new(
        room_id="room-1",
        peer_id="P1",
        identity="alice",
        name="Alice",
        session_id="S1",
        gateway_id="gw-1",
        grants=["join"],
    )


def _logger() -> tuple[logging.Logger, io.StringIO]:
    out = io.StringIO()
    handler = logging.StreamHandler(out)
    handler.setFormatter(JsonFormatter("test"))
    logger = logging.getLogger("test_tracing")
    logger.handlers[:] = [handler]
    logger.propagate = False
    logger.setLevel(logging.INFO)
    return logger, out


def test_a_consumer_continues_the_trace_its_record_carries(spans: InMemorySpanExporter) -> None:
    event = _join()
    with tracing.produced("send JoinRequested", event, topic="rtc.intents"):
        headers = trace_headers(event)
    with tracing.span("rooms batch", root=True), tracing.consumed("rooms decide", headers, event, topic="rtc.intents"):
        outputs = trace_headers(event)  # what the decision writes is the consumer span's child
    with tracing.consumed("node OpenPublisher", outputs, event):
        pass
    by_name = {s.name: s for s in spans.get_finished_spans()}
    sent, decided, ran, batch = (
        by_name["send JoinRequested"],
        by_name["rooms decide"],
        by_name["node OpenPublisher"],
        by_name["rooms batch"],
    )
    assert sent.kind == SpanKind.PRODUCER and decided.kind == SpanKind.CONSUMER
    assert decided.context.trace_id == sent.context.trace_id == ran.context.trace_id
    assert decided.parent is not None and decided.parent.span_id == sent.context.span_id
    assert ran.parent is not None and ran.parent.span_id == decided.context.span_id
    assert batch.context.trace_id != sent.context.trace_id  # a batch is a trace of its own ...
    assert [link.context.span_id for link in decided.links] == [batch.context.span_id]  # ... linked
    assert decided.attributes is not None
    assert decided.attributes["roomlog.event_id"] == str(event.event_id)
    assert decided.attributes["roomlog.room_id"] == "room-1"
    assert decided.attributes["messaging.destination.name"] == "rtc.intents"


def test_a_record_without_traceparent_starts_a_trace(spans: InMemorySpanExporter) -> None:
    with tracing.span("outer", root=True), tracing.consumed("inner", [("type", b"JoinRequested")]):
        pass
    by_name = {s.name: s for s in spans.get_finished_spans()}
    assert by_name["inner"].parent is None
    assert by_name["inner"].context.trace_id != by_name["outer"].context.trace_id


def test_a_record_whose_trace_is_not_kept_gets_no_span_and_its_outputs_stay_unsampled(
    spans: InMemorySpanExporter,
) -> None:
    event = _join()
    trace_id, parent_id = "4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7"
    headers = [("traceparent", f"00-{trace_id}-{parent_id}-00".encode())]  # the producer did not sample it
    with tracing.consumed("rooms decide", headers, event):
        outputs = dict(trace_headers(event))
    assert spans.get_finished_spans() == ()
    assert outputs["traceparent"].decode() == f"00-{trace_id}-{parent_id}-00"  # downstream drops it too


def test_log_lines_carry_the_trace_and_the_event_ids(spans: InMemorySpanExporter) -> None:
    logger, out = _logger()
    event = _join()
    logger.info("outside")
    with tracing.consumed("rooms decide", trace_headers(event), event):
        logger.info("inside", extra={"peer_id": "P-explicit"})
    outside, inside = (json.loads(line) for line in out.getvalue().splitlines())
    assert "trace_id" not in outside and "span_id" not in outside
    span = spans.get_finished_spans()[0]
    assert inside["trace_id"] == f"{span.context.trace_id:032x}"
    assert inside["span_id"] == f"{span.context.span_id:016x}"
    assert inside["room_id"] == "room-1"
    assert inside["event_id"] == str(event.event_id)
    assert inside["peer_id"] == "P-explicit"  # what the call passes wins over the span's


def test_off_by_default_no_spans_and_records_still_carry_a_traceparent(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("ROOMLOG_TRACING", raising=False)
    assert tracing.setup("test", TracingSettings()) is False
    assert not tracing.enabled()
    event = _join()
    headers = dict(trace_headers(event))
    assert headers["traceparent"].decode().startswith("00-")
    assert tracing.context_of(list(headers.items())) is None
    assert tracing.current() is None
    logger, out = _logger()
    with tracing.consumed("rooms decide", list(headers.items()), event), tracing.span("x", root=True):
        logger.info("no span")
    assert "trace_id" not in json.loads(out.getvalue())


class TracedProducer:
    """Keeps each event with the headers ``EventProducer`` would write for it now."""

    def __init__(self) -> None:
        self.sent: list[tuple[Any, dict[str, bytes]]] = []

    async def send(self, topic: str, event: Any, **_: Any) -> None:
        self.sent.append((event, dict(trace_headers(event))))


async def test_a_node_command_runs_in_the_trace_its_record_carries(spans: InMemorySpanExporter) -> None:
    producer = TracedProducer()
    runner = CommandRunner("n1", producer, Topics("t-"))  # type: ignore[arg-type]
    now = utcnow()
    command = SetPaused(
        event_id=derived_id("c1", 0, "SetPaused"),
        occurred_at=now,
        node_id="n1",
        room_id="r",
        deadline=now + timedelta(seconds=10),
        peer_id="nobody",
        source_id="cam",
        paused=True,
    )
    with tracing.span("rooms decide", root=True):
        headers = trace_headers(command)  # what streams wrote with the command
    runner.accept(command, tracing.context_of(headers))  # as CommandLoop.run does with the record
    for _ in range(10):
        await asyncio.sleep(0)
    [(failed, failed_headers)] = producer.sent  # the peer is unknown: the node reports a failure
    assert isinstance(failed, CommandFailed)
    by_name = {s.name: s for s in spans.get_finished_spans()}
    decided, ran = by_name["rooms decide"], by_name["node SetPaused"]
    assert ran.parent is not None and ran.parent.span_id == decided.context.span_id
    # the result goes out as the command span's child: streams continue the same trace
    trace_id, parent_id = failed_headers["traceparent"].decode().split("-")[1:3]
    assert int(trace_id, 16) == decided.context.trace_id and int(parent_id, 16) == ran.context.span_id
