"""Every Prometheus metric roomlog exports, defined once: ``roomlog_<service>_<thing>_<unit>``."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

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
STREAMS_PROJECTED = Counter("roomlog_streams_projected_facts_total", "Facts projected to Postgres")
STREAMS_QUALITY_PROJECTED = Counter(
    "roomlog_streams_quality_projected_total", "Quality samples and decisions written to Postgres", ["kind"]
)
STREAMS_QUALITY_PRUNED = Counter(
    "roomlog_streams_quality_pruned_rows_total", "Quality history rows deleted by retention", ["table"]
)

# --- api ------------------------------------------------------------------------
API_REQUESTS = Counter("roomlog_api_requests_total", "HTTP requests", ["method", "route", "status"])
API_REQUEST_SECONDS = Histogram("roomlog_api_request_seconds", "HTTP request latency", ["method", "route"])
API_INTENTS = Counter("roomlog_api_intents_total", "Intents published by the api", ["type"])
API_ERRORS = Counter("roomlog_api_errors_total", "Error responses by code", ["code"])
API_TOKENS_ISSUED = Counter("roomlog_api_tokens_issued_total", "Access tokens minted")

# --- media node -----------------------------------------------------------------
MEDIA_HEARTBEATS = Counter("roomlog_media_node_heartbeats_total", "Heartbeats sent")
MEDIA_PEERS = Gauge("roomlog_media_node_peers", "Peers on this node")
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
