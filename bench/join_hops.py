"""The per-hop instants of one join, read from the log and the node's log: the hop names
``bench.join_latency`` reports (its docstring defines each), and their p50/p99 summaries."""

from __future__ import annotations

import contextlib
import json
import re
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from aiokafka import AIOKafkaConsumer

from producers.catalog import decode
from producers.envelope import Event
from producers.errors import DecodeError
from producers.media import AddSubscription, ApplySubscriberAnswer, SubscriberOffered
from producers.rtc import JoinRequested, Notification, SubscriberAnswerSubmitted
from tests.harness import end_offsets

HOPS = (
    "gateway_join",
    "streams_join",
    "node_offer",
    "streams_offer",
    "notify_offer",
    "client_answer",
    "gateway_answer",
    "streams_answer",
    "node_connect",
    "first_frame_wait",
)
GROUPS = {
    "gateway_to_intent": ("gateway_join", "gateway_answer"),
    "streams_decision": ("streams_join", "streams_offer", "streams_answer"),
    "node_command_to_answer": ("node_offer",),
    "notification_to_client": ("notify_offer",),
    "client_sdp": ("client_answer",),
    "media_connect": ("node_connect",),
    "keyframe_and_decode": ("first_frame_wait",),
}
FORWARDING = re.compile(r"^forwarding \S+ to (\S+) on mid")


async def read_stamped(bootstrap: str, topic: str) -> list[tuple[int, Event]]:
    """Every event in ``topic`` with its record timestamp (ms)."""
    ends = {tp: end for tp, end in (await end_offsets(bootstrap, topic)).items() if end > 0}
    if not ends:
        return []
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    await consumer.start()
    out: list[tuple[int, Event]] = []
    try:
        consumer.assign(list(ends))
        await consumer.seek_to_beginning()
        remaining = set(ends)
        while remaining:
            for tp, records in (await consumer.getmany(timeout_ms=1000)).items():
                for r in records:
                    if r.offset < ends[tp]:
                        with contextlib.suppress(DecodeError):
                            out.append((r.timestamp, decode(r.value or b"")))
                    if r.offset >= ends[tp] - 1:
                        remaining.discard(tp)
    finally:
        await consumer.stop()
    return sorted(out, key=lambda item: item[0])


async def log_instants(bootstrap: str, prefix: str, room_id: str) -> dict[tuple[str, str], float]:
    """(what, request id or peer id) → first record timestamp in s, for one room."""
    out: dict[tuple[str, str], float] = {}
    for logical in ("rtc.intents", "media.commands", "media.results", "gateway.notifications"):
        for ts, e in await read_stamped(bootstrap, prefix + logical):
            if getattr(e, "room_id", None) != room_id:
                continue
            key: tuple[str, str] | None = None
            if isinstance(e, JoinRequested):
                key = ("JoinRequested", e.correlation_id or "")
            elif isinstance(e, AddSubscription | SubscriberOffered | SubscriberAnswerSubmitted | ApplySubscriberAnswer):
                key = (e.type, e.peer_id)
            elif isinstance(e, Notification) and e.message.get("type") in ("joined", "subscriber-offer"):
                key = (e.message["type"], e.peer_id or "")
            if key is not None:
                out.setdefault(key, ts / 1000.0)
    return out


def forwarding_instants(node_log: Path) -> dict[str, float]:
    """Subscriber peer id → when the node logged that it starts forwarding to it."""
    out: dict[str, float] = {}
    for line in node_log.read_text(errors="replace").splitlines():
        with contextlib.suppress(ValueError, KeyError):
            entry = json.loads(line)
            match = FORWARDING.match(entry["msg"])
            if match:
                at = datetime.strptime(entry["ts"], "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=UTC)
                out.setdefault(match.group(1), at.timestamp())
    return out


def hops_of(
    stamps: dict[str, float],
    peer: str,
    join_request_id: str,
    log: dict[tuple[str, str], float],
    forwarding: dict[str, float],
    origin: float,
) -> dict[str, float | None]:
    """One subscriber's instants (its client ``stamps``, its peer id and the request id of
    its ``join``) as the differences named in ``HOPS`` (ms; None if unseen),
    and as ``<hop>_end`` ms since ``origin`` (the first subscriber's ``join``)."""
    s = stamps
    at = [
        s.get("join_sent"),
        log.get(("JoinRequested", join_request_id)),
        log.get(("AddSubscription", peer)),
        log.get(("SubscriberOffered", peer)),
        log.get(("subscriber-offer", peer)),
        s.get("subscriber-offer_rx"),
        s.get("answer_sent"),
        log.get(("SubscriberAnswerSubmitted", peer)),
        log.get(("ApplySubscriberAnswer", peer)),
        forwarding.get(peer),
        s.get("first_frame"),
    ]
    out: dict[str, float | None] = {name: _ms(a, b) for name, a, b in zip(HOPS, at[:-1], at[1:], strict=True)}
    out.update({f"{name}_end": _ms(origin, b) for name, b in zip(HOPS, at[1:], strict=True)})
    joined = log.get(("joined", peer))
    out["total"] = _ms(s.get("join_sent"), s.get("first_frame"))
    out["joined_rx"] = _ms(s.get("join_sent"), s.get("joined_rx"))
    out["streams_joined"] = _ms(at[1], joined)
    out["notify_joined"] = _ms(joined, s.get("joined_rx"))
    out["sdp_negotiation"] = _ms(at[3], at[8])
    return out


def _ms(a: float | None, b: float | None) -> float | None:
    return None if a is None or b is None else 1000.0 * (b - a)


def summary(values: list[float | None], *, total: int | None = None) -> dict[str, Any]:
    """Nearest-rank p50/p99 over ``total`` values; an unseen value (None, or one of the
    ``total - len(values)`` not given) counts as infinitely late, so its rank has no value."""
    seen = sorted(v for v in values if v is not None)
    n = total if total is not None else len(values)
    missing = n - len(seen)

    def pct(p: float) -> float | None:
        rank = max(1, -(-int(p * n) // 100))
        return round(seen[rank - 1], 1) if rank <= len(seen) else None

    return {
        "p50_ms": pct(50),
        "p99_ms": pct(99),
        "max_ms": round(seen[-1], 1) if seen and not missing else None,
        "mean_ms": round(sum(seen) / len(seen), 1) if seen else None,
        "missing": missing,
    }


def group_sum(hops: dict[str, float | None], names: tuple[str, ...]) -> float | None:
    values = [hops[h] for h in names]
    return None if any(v is None for v in values) else sum(v for v in values if v is not None)
