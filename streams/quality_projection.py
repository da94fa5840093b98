"""Quality history in Postgres: ``quality.samples`` → ``quality_stats`` (10 s buckets) and
``quality.facts`` → ``quality_decisions``; plus the retention that deletes old rows.

Stateless and idempotent, like ``streams/projection.py``:

- A batch of samples goes out as ONE statement (``unnest`` of column arrays): samples
  whose ``event_id`` is already in their bucket's ``event_ids`` are dropped, the rest are
  aggregated per (room, peer, leg, source, 10 s bucket) and upserted. The merge keeps
  running means of loss/RTT/jitter/bitrate (weighted by ``samples``), the max loss, sums
  of packets/NACKs/PLIs, the last layer and the last known bandwidth estimate. A sample
  delivered again (a restart re-reads from the last committed offset) is not counted twice.
  Samples of one room are on one partition, read in order, so "last" is log order.
- ``QualityDecided`` facts are inserted by ``event_id`` (``ON CONFLICT DO NOTHING``).
- Postgres down: the batch is retried with backoff until it is written (the driver does
  not commit its offsets meanwhile): an outage delays the history, never skips it.
- Retention: ``prune`` deletes rows older than N days in bounded batches (one short
  transaction per batch), run by the worker's timer.
"""

from __future__ import annotations

import asyncio
import logging
import math
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, TypeVar

from aiokafka.structs import ConsumerRecord
from pydantic import ValidationError
from sqlalchemy import text
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from db.models import QualityDecision
from observability import metrics
from producers.catalog import decode
from producers.envelope import Event, utcnow
from producers.errors import DecodeError
from producers.media import QualityDecided, QualitySample
from streams.driver import Projected
from streams.projection import POSTGRES_UNAVAILABLE

log = logging.getLogger(__name__)

BUCKET_S = 10
T = TypeVar("T")

#: One statement per batch: column arrays in, duplicates out, one upsert per bucket.
UPSERT_SAMPLES = text("""
WITH incoming AS (
    SELECT * FROM unnest(
        CAST(:event_id AS text[]), CAST(:room_id AS text[]), CAST(:peer_id AS text[]),
        CAST(:leg AS text[]), CAST(:source AS text[]), CAST(:bucket AS timestamptz[]),
        CAST(:at AS timestamptz[]), CAST(:loss AS float8[]), CAST(:rtt AS float8[]),
        CAST(:jitter AS float8[]), CAST(:bitrate AS float8[]), CAST(:packets AS int8[]),
        CAST(:nacks AS int8[]), CAST(:plis AS int8[]), CAST(:layer AS text[]), CAST(:bw AS float8[])
    ) AS s(event_id, room_id, peer_id, leg, source, bucket, at, loss, rtt, jitter, bitrate,
           packets, nacks, plis, layer, bw)
), fresh AS (
    SELECT s.* FROM incoming s
    WHERE NOT EXISTS (
        SELECT 1 FROM quality_stats q
        WHERE q.room_id = s.room_id AND q.peer_id = s.peer_id AND q.leg IS NOT DISTINCT FROM s.leg
          AND q.sampled_at = s.bucket AND q.source = s.source AND s.event_id = ANY(q.event_ids))
), agg AS (
    SELECT room_id, peer_id, leg, source, bucket, count(*)::int AS n,
           avg(loss) AS loss, max(loss) AS loss_max, avg(rtt) AS rtt, avg(jitter) AS jitter,
           avg(bitrate) AS bitrate, sum(packets)::bigint AS packets, sum(nacks)::bigint AS nacks,
           sum(plis)::bigint AS plis,
           (array_agg(layer ORDER BY at DESC, event_id DESC))[1] AS layer,
           (array_agg(bw ORDER BY at DESC, event_id DESC) FILTER (WHERE bw IS NOT NULL))[1] AS bw,
           array_agg(event_id ORDER BY at, event_id) AS event_ids
    FROM fresh GROUP BY room_id, peer_id, leg, source, bucket
)
INSERT INTO quality_stats AS q (room_id, peer_id, leg, sampled_at, source, samples, loss_pct,
                                loss_max, rtt_ms, jitter_ms, bitrate_kbps, packets, nacks, plis,
                                layer, bandwidth_kbps, event_ids)
SELECT room_id, peer_id, leg, bucket, source, n, round(loss::numeric, 2), round(loss_max::numeric, 2),
       rtt, jitter, bitrate, packets, nacks, plis, layer, bw, event_ids
FROM agg
ON CONFLICT (room_id, peer_id, leg, sampled_at, source) DO UPDATE SET
    samples = q.samples + excluded.samples,
    loss_pct = round((coalesce(q.loss_pct, excluded.loss_pct) * q.samples
                      + excluded.loss_pct * excluded.samples) / (q.samples + excluded.samples), 2),
    loss_max = greatest(q.loss_max, excluded.loss_max),
    rtt_ms = coalesce((q.rtt_ms * q.samples + excluded.rtt_ms * excluded.samples)
                      / (q.samples + excluded.samples), excluded.rtt_ms, q.rtt_ms),
    jitter_ms = coalesce((q.jitter_ms * q.samples + excluded.jitter_ms * excluded.samples)
                         / (q.samples + excluded.samples), excluded.jitter_ms, q.jitter_ms),
    bitrate_kbps = coalesce((q.bitrate_kbps * q.samples + excluded.bitrate_kbps * excluded.samples)
                            / (q.samples + excluded.samples), excluded.bitrate_kbps, q.bitrate_kbps),
    packets = coalesce(q.packets, 0) + excluded.packets,
    nacks = coalesce(q.nacks, 0) + excluded.nacks,
    plis = coalesce(q.plis, 0) + excluded.plis,
    layer = excluded.layer,
    bandwidth_kbps = coalesce(excluded.bandwidth_kbps, q.bandwidth_kbps),
    event_ids = q.event_ids || excluded.event_ids
""")

_DECISION = insert(QualityDecision)
INSERT_DECISIONS = _DECISION.on_conflict_do_nothing(index_elements=["event_id"])

PRUNE = {
    "quality_stats": text(
        "DELETE FROM quality_stats WHERE id IN (SELECT id FROM quality_stats WHERE sampled_at < :cutoff LIMIT :n)"
    ),
    "quality_decisions": text(
        "DELETE FROM quality_decisions WHERE event_id IN "
        "(SELECT event_id FROM quality_decisions WHERE decided_at < :cutoff LIMIT :n)"
    ),
}


def bucket_of(at: datetime) -> datetime:
    """The start of the 10 s bucket ``at`` falls in."""
    return at - timedelta(seconds=at.second % BUCKET_S, microseconds=at.microsecond)


#: counters above this are clamped (a bigint sum of them cannot overflow)
MAX_COUNT = 2**40


def _real(value: float | None) -> float | None:
    """Finite or nothing: a mean with an infinity in it says nothing."""
    return value if value is not None and math.isfinite(value) else None


def storable(s: QualitySample) -> bool:
    """Postgres text cannot hold NUL: such a sample would fail its whole batch on every
    retry, so it is skipped (and logged) rather than blocking the history."""
    if "\x00" in s.leg or "\x00" in (s.layer or ""):
        log.warning("quality sample %s skipped: NUL in its leg or layer", s.event_id)
        return False
    return True


def sample_columns(samples: Sequence[QualitySample]) -> dict[str, list[Any]]:
    """Column arrays of a batch for ``UPSERT_SAMPLES`` (an event id only once)."""
    cols: dict[str, list[Any]] = {
        k: []
        for k in (
            "event_id",
            "room_id",
            "peer_id",
            "leg",
            "source",
            "bucket",
            "at",
            "loss",
            "rtt",
            "jitter",
            "bitrate",
            "packets",
            "nacks",
            "plis",
            "layer",
            "bw",
        )
    }
    seen: set[str] = set()
    for s in samples:
        event_id = str(s.event_id)
        if event_id in seen or not storable(s):
            continue
        seen.add(event_id)
        values = (
            event_id,
            s.room_id,
            s.peer_id,
            s.leg,
            s.source,
            bucket_of(s.occurred_at),
            s.occurred_at,
            s.loss_pct,
            _real(s.rtt_ms),
            _real(s.jitter_ms),
            _real(s.bitrate_kbps),
            min(s.packets, MAX_COUNT),
            min(s.nacks, MAX_COUNT),
            min(s.plis, MAX_COUNT),
            "paused" if s.paused else s.layer,
            _real(s.bandwidth_kbps),
        )
        for column, value in zip(cols, values, strict=True):
            cols[column].append(value)
    return cols


def decision_row(f: QualityDecided) -> dict[str, Any]:
    return {
        "event_id": str(f.event_id),
        "room_id": f.room_id,
        "peer_id": f.peer_id,
        "source_id": f.source_id,
        "publisher_peer_id": f.publisher_peer_id,
        "layer": f.layer,
        "previous": f.previous,
        "reason": f.reason,
        "loss_pct": f.loss_pct,
        "level": f.level,
        "bandwidth_kbps": f.bandwidth_kbps,
        "decided_at": f.occurred_at,
    }


async def write_samples(conn: AsyncConnection, samples: Sequence[QualitySample]) -> int:
    if not samples:
        return 0
    await conn.execute(UPSERT_SAMPLES, sample_columns(samples))
    return len(samples)


async def write_decisions(conn: AsyncConnection, facts: Sequence[QualityDecided]) -> int:
    rows = [decision_row(f) for f in facts]
    if rows:
        await conn.execute(INSERT_DECISIONS, rows)
    return len(rows)


async def retrying(engine: AsyncEngine, what: str, work: Callable[[AsyncConnection], Awaitable[T]]) -> T:
    """Run ``work`` in one transaction until Postgres takes it (backoff up to 5 s)."""
    delay = 0.2
    while True:
        try:
            async with engine.begin() as conn:
                return await work(conn)
        except POSTGRES_UNAVAILABLE as exc:
            # asyncpg raises CannotConnectNowError unwrapped while Postgres shuts down or starts
            log.warning("%s failed, retrying in %.1fs: %s", what, delay, exc)
            await asyncio.sleep(delay)
            delay = min(delay * 2, 5.0)


def parse(records: Sequence[ConsumerRecord], kind: type[T]) -> list[T]:
    """The events of ``kind`` in a batch; anything else (ticks, other facts, garbage) is
    skipped: these topics are read by other agents too, which dead-letter bad payloads."""
    out: list[T] = []
    for record in records:
        if record.value is None:
            continue
        try:
            event: Event = decode(record.value)
        except DecodeError:
            continue
        if isinstance(event, kind):
            out.append(event)
    return out


def parse_samples(records: Sequence[ConsumerRecord]) -> list[QualitySample]:
    """The samples of a batch, validated as ``QualitySample`` directly (the catalog's union
    of every event type costs about a third more per record); anything else is skipped."""
    out: list[QualitySample] = []
    for record in records:
        if record.value is None:
            continue
        try:
            out.append(QualitySample.model_validate_json(record.value))
        except ValidationError:
            continue
    return out


@dataclass
class QualityProjection:
    """The two batch handlers (for ``DrivenAgent``s) and the retention job."""

    engine: Callable[[], AsyncEngine]
    retention_days: float = 14.0
    prune_batch: int = 5000

    async def samples(self, records: Sequence[ConsumerRecord]) -> Projected:
        batch = parse_samples(records)
        await retrying(self.engine(), "quality samples projection", lambda conn: write_samples(conn, batch))
        metrics.STREAMS_QUALITY_PROJECTED.labels("samples").inc(len(batch))
        return Projected()

    async def decisions(self, records: Sequence[ConsumerRecord]) -> Projected:
        batch = parse(records, QualityDecided)
        await retrying(self.engine(), "quality decisions projection", lambda conn: write_decisions(conn, batch))
        metrics.STREAMS_QUALITY_PROJECTED.labels("decisions").inc(len(batch))
        return Projected()

    async def prune(self, now: datetime | None = None) -> dict[str, int]:
        """Delete rows older than ``retention_days`` (0 keeps everything)."""
        if self.retention_days <= 0:
            return {}
        cutoff = (now or utcnow()) - timedelta(days=self.retention_days)
        return await prune(self.engine(), cutoff, self.prune_batch)


async def prune(engine: AsyncEngine, cutoff: datetime, batch: int = 5000) -> dict[str, int]:
    """Delete quality rows older than ``cutoff``, ``batch`` rows per statement and
    transaction, until none is left. Returns the rows deleted per table."""
    deleted: dict[str, int] = {}
    for table, stmt in PRUNE.items():
        total = 0
        while True:

            async def one(conn: AsyncConnection, stmt: Any = stmt) -> int:
                result = await conn.execute(stmt, {"cutoff": cutoff, "n": batch})
                return int(result.rowcount)

            n = await retrying(engine, f"{table} retention", one)
            total += n
            if n < batch:
                break
        deleted[table] = total
        metrics.STREAMS_QUALITY_PRUNED.labels(table).inc(total)
    return deleted
