"""OpenTelemetry tracing across the log: one trace follows a request through Kafka.

Off by default (``ROOMLOG_TRACING``): then every helper here is a flag test and nothing
else, and records keep the ``traceparent`` header they always had (a fresh root per record,
``producers.kafka.trace_headers``). On, ``setup(service, settings)`` installs an SDK tracer
provider that exports over OTLP/HTTP (``ROOMLOG_TRACING_ENDPOINT``, Jaeger's 4318), and:

- a producer writes the current span's W3C ``traceparent`` into each record's headers
  (``producers.kafka.trace_headers``: unchanged, it injects the current context);
- a consumer continues it: ``consumed(name, headers, event)`` opens a CONSUMER span whose
  parent is the record's ``traceparent``, so whatever the handler produces is its child;
- work that leaves the consumer loop (a media node command waits in its peer's lane) carries
  the context with it: ``context_of(headers)`` now, ``span(..., parent=ctx)`` later.

Spans carry ``roomlog.event_type``, ``roomlog.event_id``, ``roomlog.room_id`` and
``roomlog.peer_id`` when the event has them; the JSON logs read them (and the trace and span
ids) from the current span (``observability/logs.py``).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from typing import Any

from opentelemetry import context, trace
from opentelemetry.context import Context
from opentelemetry.trace import Link, SpanKind
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from producers.settings import TracingSettings

TRACER_NAME = "roomlog"
#: Event fields copied to span attributes (``roomlog.<field>``) and from there to log lines
#: (few: each attribute costs a validation per span).
EVENT_FIELDS = ("room_id", "peer_id")

#: W3C trace context only (no baggage: roomlog carries none), cheaper than the global composite.
PROPAGATOR = TraceContextTextMapPropagator()

_provider: Any = None
_tracer: trace.Tracer = trace.NoOpTracer()
#: lower 64 bits of a trace id under this are kept (TraceIdRatioBased's rule; 2**64: all)
_keep_below = 1 << 64


def setup(service: str, settings: TracingSettings, *, instance: str | None = None) -> bool:
    """Install the exporting tracer provider when ``settings.tracing`` is on; whether it is.
    Spans name the service ``roomlog-<service>`` (and ``instance``: a node id, say)."""
    global _provider, _tracer, _keep_below
    if not settings.tracing:
        return False
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor
    from opentelemetry.sdk.trace.sampling import ParentBased, TraceIdRatioBased

    # the ratio decides by trace id, the same way in every service: a trace is kept whole or
    # not at all, also when its first record came from a producer that was not tracing
    ratio = TraceIdRatioBased(settings.tracing_sample_ratio)
    provider = TracerProvider(
        resource=Resource.create(
            {"service.name": f"roomlog-{service}", **({"service.instance.id": instance} if instance else {})}
        ),
        sampler=ParentBased(ratio, remote_parent_sampled=ratio),
    )
    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter(endpoint=settings.tracing_endpoint)))
    trace.set_tracer_provider(provider)
    _provider, _tracer = provider, provider.get_tracer(TRACER_NAME)
    _keep_below = ratio.bound
    return True


def use(provider: Any) -> None:
    """Trace with ``provider`` (a test's SDK provider with an in-memory exporter); ``None``: off."""
    global _provider, _tracer, _keep_below
    _provider, _keep_below = provider, 1 << 64
    _tracer = provider.get_tracer(TRACER_NAME) if provider is not None else trace.NoOpTracer()


def shutdown() -> None:
    """Export what is still buffered (at a service's exit)."""
    if _provider is not None:
        _provider.shutdown()


def enabled() -> bool:
    return _provider is not None


def attributes(event: Any = None, topic: str | None = None, **more: Any) -> dict[str, Any]:
    """Span attributes of an event (its type, id and the ids of ``EVENT_FIELDS``) and ``more``."""
    out: dict[str, Any] = {}
    if topic is not None:
        out["messaging.destination.name"] = topic
    if event is not None:
        out["roomlog.event_type"] = str(getattr(event, "type", type(event).__name__))
        event_id = getattr(event, "event_id", None)
        if event_id is not None:
            out["roomlog.event_id"] = str(event_id)
        for name in EVENT_FIELDS:
            value = getattr(event, name, None)
            if value:
                out[f"roomlog.{name}"] = str(value)
    for name, value in more.items():
        if value is not None:
            out[f"roomlog.{name}"] = value if isinstance(value, int | float | bool) else str(value)
    return out


def context_of(headers: Iterable[tuple[str, bytes]] | None) -> Context | None:
    """The trace context a record's ``traceparent`` header carries; ``None`` when tracing is
    off or the record has none."""
    if _provider is None or not headers:
        return None
    for key, value in headers:
        if key == "traceparent":
            return PROPAGATOR.extract({"traceparent": value.decode(errors="replace")})
    return None


def context_of_text(traceparent: Any) -> Context | None:
    """The trace context of a W3C ``traceparent`` string (from a socket message); ``None``
    when tracing is off or it is not a string."""
    if _provider is None or not isinstance(traceparent, str):
        return None
    return PROPAGATOR.extract({"traceparent": traceparent})


def header(headers: Iterable[tuple[str, bytes]] | None, name: str) -> str | None:
    """A record header's value as text (``type``: the event type ``trace_headers`` wrote)."""
    for key, value in headers or ():
        if key == name:
            return value.decode(errors="replace")
    return None


def current() -> Context | None:
    """The current context, to continue later (``span(parent=...)``); ``None`` when off."""
    if _provider is None:
        return None
    return context.get_current()


@contextmanager
def span(
    name: str,
    *,
    parent: Context | None = None,
    root: bool = False,
    kind: SpanKind = SpanKind.INTERNAL,
    event: Any = None,
    topic: str | None = None,
    link_current: bool = False,
    **more: Any,
) -> Iterator[None]:
    """A span made current for the block: a child of ``parent`` (a context kept earlier), of a
    new trace (``root``), else of the current span. ``link_current`` links it to the span it
    would otherwise have been a child of (a batch). Nothing at all when tracing is off."""
    if _provider is None:
        yield
        return
    links = None
    if link_current:
        here = trace.get_current_span().get_span_context()
        links = [Link(here)] if here.is_valid else None
    context = Context() if root and parent is None else parent
    with _tracer.start_as_current_span(
        name, context=context, kind=kind, attributes=attributes(event, topic, **more), links=links
    ):
        yield


@contextmanager
def consumed(
    name: str, headers: Iterable[tuple[str, bytes]] | None, event: Any = None, *, topic: str | None = None
) -> Iterator[None]:
    """A CONSUMER span for one record, continuing the trace its ``traceparent`` carries (linked
    to the span current now, e.g. its batch's). Nothing at all when tracing is off."""
    if _provider is None:
        yield
        return
    dropped = _dropped(headers)
    if dropped is not None:  # not sampled: no span, the outputs carry the trace on, unsampled
        token = context.attach(trace.set_span_in_context(trace.NonRecordingSpan(dropped)))
        try:
            yield
        finally:
            context.detach(token)
        return
    parent = context_of(headers)
    with span(
        name, parent=parent, root=parent is None, kind=SpanKind.CONSUMER, event=event, topic=topic, link_current=True
    ):
        yield


def _dropped(headers: Iterable[tuple[str, bytes]] | None) -> trace.SpanContext | None:
    """The record's span context, unsampled, when the trace it carries is not kept (its flags say
    so, or the ratio drops its id): the same decision the SDK's sampler makes, without a span."""
    for key, value in headers or ():
        if key != "traceparent":
            continue
        parts = value.split(b"-")
        if len(parts) != 4 or len(parts[1]) != 32 or len(parts[2]) != 16:
            return None
        try:
            trace_id, span_id, flags = int(parts[1], 16), int(parts[2], 16), int(parts[3], 16)
        except ValueError:
            return None
        if flags & 1 and (trace_id & 0xFFFFFFFFFFFFFFFF) < _keep_below:
            return None  # kept: a real span
        return trace.SpanContext(trace_id, span_id, is_remote=True, trace_flags=trace.TraceFlags(0))
    return None


def produced(name: str, event: Any = None, *, topic: str | None = None) -> Any:
    """A PRODUCER span around a send: the record's ``traceparent`` names it."""
    return span(name, kind=SpanKind.PRODUCER, event=event, topic=topic)


def failed(exc: BaseException) -> None:
    """Mark the current span failed with ``exc`` (a handler that reports its failure itself)."""
    if _provider is None:
        return
    current_span = trace.get_current_span()
    current_span.record_exception(exc)
    current_span.set_status(trace.Status(trace.StatusCode.ERROR, f"{type(exc).__name__}: {exc}"[:200]))


def log_fields() -> Mapping[str, Any]:
    """``trace_id``, ``span_id`` and the ``roomlog.*`` ids of the current span (for log lines);
    empty when no span is recording."""
    current_span = trace.get_current_span()
    ctx = current_span.get_span_context()
    if not ctx.is_valid:
        return {}
    out: dict[str, Any] = {"trace_id": f"{ctx.trace_id:032x}", "span_id": f"{ctx.span_id:016x}"}
    attrs = getattr(current_span, "attributes", None) or {}
    for name in ("room_id", "peer_id", "event_id", "node_id", "session_id"):
        value = attrs.get(f"roomlog.{name}")
        if value is not None:
            out[name] = value
    return out
