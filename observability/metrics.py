"""Every Prometheus metric roomlog exports, defined once: ``roomlog_<service>_<thing>_<unit>``."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

from prometheus_client import Counter, Gauge, Histogram, start_http_server
from prometheus_client.metrics import MetricWrapperBase


def children(metric: MetricWrapperBase) -> Callable[..., Any]:
    """``metric.labels(*values)`` looked up once per distinct values: for per-event paths
    (a dict lookup instead of ``labels``' validation and lock). Only for metrics whose
    children are never removed, with a bounded set of label values."""
    return functools.lru_cache(maxsize=None)(metric.labels)


# --- streams ------------------------------------------------------------------
STREAMS_INPUTS = Counter("roomlog_streams_inputs_total", "Events handled by streams agents", ["topic", "type"])
STREAMS_OUTPUTS = Counter("roomlog_streams_outputs_total", "Events emitted by streams agents", ["type"])
STREAMS_TICKS = Counter(
    "roomlog_streams_ticks_total", "Ticks written to partitions with a due deadline (docs/events.md)", ["topic"]
)
STREAMS_DEAD_LETTERS = Counter(
    "roomlog_streams_dead_letters_total", "Payloads sent to a dead-letter topic", ["topic", "reason"]
)
STREAMS_QUALITY_DECISIONS = Counter(
    "roomlog_streams_quality_decisions_total", "Layer, pause and resume decisions of the quality agent"
)
STREAMS_BATCH_SECONDS = Histogram(
    "roomlog_streams_batch_seconds",
    "Time per batch of a driven agent, by step: decide (decode, decide, "
    "hand outputs to the producer), outputs (until acknowledged), changelog "
    "(written and acknowledged)",
    ["agent", "step"],
    buckets=(0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5),
)
STREAMS_BATCH_RECORDS = Histogram(
    "roomlog_streams_batch_records",
    "Records per batch of a driven agent",
    ["agent"],
    buckets=(1, 5, 10, 50, 100, 250, 500, 1000),
)
STREAMS_LAG_RECORDS = Gauge(
    "roomlog_streams_consumer_lag_records",
    "Records an agent has not handled yet: the partition's high watermark (last fetch) minus the agent's next offset",
    ["agent", "topic", "partition"],
)
STREAMS_LAG_SECONDS = Gauge(
    "roomlog_streams_consumer_lag_seconds",
    "How far behind the log an agent is, in time: 0 when it has handled everything it "
    "knows of, else the time since the newer of the last handled record's timestamp and the "
    "last moment it was caught up (grows 1 s/s while an agent is stuck)",
    ["agent", "topic", "partition"],
)
STREAMS_PROJECTED = Counter("roomlog_streams_projected_facts_total", "Facts projected to Postgres")
STREAMS_QUALITY_PROJECTED = Counter(
    "roomlog_streams_quality_projected_total", "Quality samples and decisions written to Postgres", ["kind"]
)
STREAMS_QUALITY_PRUNED = Counter(
    "roomlog_streams_quality_pruned_rows_total", "Quality history rows deleted by retention", ["table"]
)

# --- producers (every service's Kafka clients) -----------------------------------
PRODUCER_ERRORS = Counter(
    "roomlog_producer_errors_total",
    "Records a producer could not write (the send raised or the broker refused it), by topic and error",
    ["topic", "error"],
)
CONSUMER_DEAD_LETTERS = Counter(
    "roomlog_consumer_dead_letters_total",
    "Payloads an EventConsumer (media node, recorder, gateway) could not parse (sent to "
    "<topic>.dlq when it has a dead-letter producer; streams agents count theirs in "
    "roomlog_streams_dead_letters_total)",
    ["topic", "reason"],
)

# --- api ------------------------------------------------------------------------
API_REQUESTS = Counter("roomlog_api_requests_total", "HTTP requests", ["method", "route", "status"])
API_REQUEST_SECONDS = Histogram("roomlog_api_request_seconds", "HTTP request latency", ["method", "route"])
API_INTENTS = Counter("roomlog_api_intents_total", "Intents published by the api", ["type"])
API_ERRORS = Counter("roomlog_api_errors_total", "Error responses by code", ["code"])
API_TOKENS_ISSUED = Counter("roomlog_api_tokens_issued_total", "Access tokens minted")
API_READY = Gauge(
    "roomlog_api_ready", "1 when the api's readiness checks (Kafka, Postgres) passed at the last scrape, else 0"
)
API_SOCKETS = Gauge("roomlog_api_sockets", "Open WebSockets by kind: rtc (clients), station (edge agents)", ["kind"])
API_SOCKET_MESSAGES = Counter(
    "roomlog_api_socket_messages_total", "Valid messages received on WebSockets, by kind and type", ["kind", "type"]
)
API_SOCKET_ERRORS = Counter(
    "roomlog_api_socket_errors_total",
    "error messages sent on WebSockets, by kind and code (the gateway's refusals and streams')",
    ["kind", "code"],
)

# --- media node -----------------------------------------------------------------
MEDIA_HEARTBEATS = Counter("roomlog_media_node_heartbeats_total", "Heartbeats sent")
MEDIA_PEERS = Gauge("roomlog_media_node_peers", "Peers on this node")
MEDIA_ROOMS = Gauge("roomlog_media_node_rooms", "Rooms with at least one peer on this node")
MEDIA_TRACKS = Gauge("roomlog_media_node_tracks", "Published sources (tracks) this node forwards")
MEDIA_LEGS = Gauge(
    "roomlog_media_node_legs",
    "Active legs: publish (an encoding received from a publisher), subscribe (a source sent to a subscriber)",
    ["direction"],
)
MEDIA_CPU = Gauge(
    "roomlog_media_node_cpu_ratio",
    "CPU time of the node process per second of wall time over the last second (1 = a core)",
)
MEDIA_ROOM_LOSS = Gauge(
    "roomlog_media_node_subscriber_loss_ratio",
    "Loss of the subscriber legs of a room at the last quality sample that carried packets "
    "(packet-weighted mean, 0-1; a round with all of them paused keeps the last value)",
    ["room"],
)
MEDIA_FORWARDED_PACKETS = Counter("roomlog_media_node_forwarded_packets_total", "RTP packets forwarded", ["kind"])
MEDIA_FORWARDED_BYTES = Counter("roomlog_media_node_forwarded_bytes_total", "RTP bytes forwarded", ["kind"])
MEDIA_COMMANDS = Counter("roomlog_media_node_commands_total", "Commands received", ["type", "outcome"])
MEDIA_KEYFRAME_REQUESTS = Counter(
    "roomlog_media_node_keyframe_requests_total",
    "Keyframe requests (PLI) sent to publishers, by why: start (a subscriber "
    "waits for its first keyframe), layer, relay (a subscriber's PLI/FIR), "
    "loss (a publisher packet not retransmitted in time), nack_miss (a "
    "subscriber NACK the node could not answer)",
    ["reason"],
)
MEDIA_UPSTREAM_NACKS = Counter(
    "roomlog_media_node_upstream_nack_retries_total", "NACKs sent to publishers again for packets still missing"
)
MEDIA_UNREPAIRED_PACKETS = Counter(
    "roomlog_media_node_unrepaired_packets_total",
    "Publisher packets lost and not retransmitted before the node gave up",
)
MEDIA_SUBSCRIBER_LOSS = Histogram(
    "roomlog_media_subscriber_loss_ratio",
    "Loss of subscriber video legs per quality sample (fraction, 0-1)",
    buckets=(0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0),
)

# --- recorder -------------------------------------------------------------------
RECORDER_RECORDINGS = Gauge("roomlog_recorder_recordings", "Recordings this recorder instance runs")
RECORDER_SEGMENTS_UPLOADED = Counter(
    "roomlog_recorder_segments_uploaded_total", "Closed segments uploaded to MinIO (acknowledged on the log)"
)
RECORDER_SPOOL_BYTES = Gauge("roomlog_recorder_spool_bytes", "Closed segments waiting on local disk for MinIO")


def serve(port: int, host: str = "127.0.0.1") -> None:
    """This process's ``/metrics`` on ``host:port`` (a daemon thread); ``port`` 0: off."""
    if port:
        start_http_server(port, addr=host)
