"""``GET /v1/rooms/{room_id}/quality``: a room's quality history from Postgres (the
``quality_stats`` 10 s buckets and the ``quality_decisions`` that streams project).

Admin, or a join token for that room. ``since`` (ISO 8601; a time without an offset is
UTC; default one hour ago) bounds both parts; a bad one is ``400 invalid_since``.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query
from pydantic import BaseModel
from sqlalchemy import text

from api.errors import InvalidRequest, RestError, RoomNotFound
from api.services import Services, claims, services
from api.tokens import Claims
from db.models import Room
from producers.fields import Grant, Id

router = APIRouter(prefix="/v1/rooms", tags=["quality"])

DEFAULT_WINDOW = timedelta(hours=1)
BUCKET = timedelta(seconds=10)


class InvalidSince(InvalidRequest):
    code = RestError.INVALID_SINCE


class Bucket(BaseModel):
    """One 10 s bucket: means over its ``samples``, sums of the counters."""

    sampled_at: datetime
    samples: int
    loss_pct: float | None
    loss_max: float | None
    rtt_ms: float | None
    jitter_ms: float | None
    bitrate_kbps: float | None
    packets: int | None
    nacks: int | None
    plis: int | None
    layer: str | None
    bandwidth_kbps: float | None


class LegSummary(BaseModel):
    leg: str | None
    source: str
    buckets: int
    samples: int
    first_at: datetime
    last_at: datetime
    mean_loss_pct: float | None
    max_loss_pct: float | None
    mean_rtt_ms: float | None
    mean_jitter_ms: float | None
    mean_bitrate_kbps: float | None
    packets: int | None
    nacks: int | None
    plis: int | None
    latest: Bucket


class PeerSummary(BaseModel):
    peer_id: str
    legs: list[LegSummary]
    #: decisions about this peer (as a subscriber) in the period
    decisions: int
    #: the last decided layer per source it subscribes to
    layers: dict[str, str]


class Decision(BaseModel):
    event_id: str
    decided_at: datetime
    peer_id: str
    source_id: str
    publisher_peer_id: str | None
    previous: str | None
    layer: str
    reason: str
    loss_pct: float
    level: int | None
    bandwidth_kbps: float | None


class RoomQuality(BaseModel):
    room_id: str
    since: datetime
    until: datetime
    peers: list[PeerSummary]
    decisions: list[Decision]
    #: more decisions than ``limit`` in the period: the oldest ``limit`` are listed
    decisions_truncated: bool


LEGS = text("""
SELECT peer_id, leg, source, count(*) AS buckets, sum(samples) AS samples,
       min(sampled_at) AS first_at, max(sampled_at) AS last_at,
       sum(loss_pct * samples) / sum(samples) FILTER (WHERE loss_pct IS NOT NULL) AS mean_loss_pct,
       max(coalesce(loss_max, loss_pct)) AS max_loss_pct,
       sum(rtt_ms * samples) / sum(samples) FILTER (WHERE rtt_ms IS NOT NULL) AS mean_rtt_ms,
       sum(jitter_ms * samples) / sum(samples) FILTER (WHERE jitter_ms IS NOT NULL) AS mean_jitter_ms,
       sum(bitrate_kbps * samples) / sum(samples) FILTER (WHERE bitrate_kbps IS NOT NULL) AS mean_bitrate_kbps,
       sum(packets) AS packets, sum(nacks) AS nacks, sum(plis) AS plis
FROM quality_stats WHERE room_id = :room_id AND sampled_at > :since
GROUP BY peer_id, leg, source
""")

LATEST = text("""
SELECT DISTINCT ON (peer_id, leg, source) peer_id, leg, source, sampled_at, samples, loss_pct, loss_max,
       rtt_ms, jitter_ms, bitrate_kbps, packets, nacks, plis, layer, bandwidth_kbps
FROM quality_stats WHERE room_id = :room_id AND sampled_at > :since
ORDER BY peer_id, leg, source, sampled_at DESC
""")

DECISIONS = text("""
SELECT event_id, decided_at, peer_id, source_id, publisher_peer_id, previous, layer, reason, loss_pct,
       level, bandwidth_kbps
FROM quality_decisions WHERE room_id = :room_id AND decided_at >= :since
ORDER BY decided_at, event_id LIMIT :limit
""")


def parse_since(raw: str | None, now: datetime) -> datetime:
    if raw is None:
        return now - DEFAULT_WINDOW
    try:
        since = datetime.fromisoformat(raw.strip())
    except ValueError:
        raise InvalidSince(f"since must be an ISO 8601 time, got {raw[:64]!r}") from None
    if since.tzinfo is None:
        since = since.replace(tzinfo=UTC)
    if since > now:
        raise InvalidSince("since is in the future")
    return since


def _float(v: Any) -> float | None:
    return None if v is None else float(v)


def _bucket(row: Any) -> Bucket:
    return Bucket(
        sampled_at=row.sampled_at,
        samples=row.samples,
        loss_pct=_float(row.loss_pct),
        loss_max=_float(row.loss_max),
        rtt_ms=row.rtt_ms,
        jitter_ms=row.jitter_ms,
        bitrate_kbps=row.bitrate_kbps,
        packets=row.packets,
        nacks=row.nacks,
        plis=row.plis,
        layer=row.layer,
        bandwidth_kbps=row.bandwidth_kbps,
    )


def summarize(legs: list[Any], latest: list[Any], decisions: list[Decision]) -> list[PeerSummary]:
    """Per peer: its legs (latest bucket, means over the period) and its decisions."""
    last = {(r.peer_id, r.leg, r.source): _bucket(r) for r in latest}
    peers: dict[str, PeerSummary] = {}

    def peer(peer_id: str) -> PeerSummary:
        return peers.setdefault(peer_id, PeerSummary(peer_id=peer_id, legs=[], decisions=0, layers={}))

    for r in legs:
        peer(r.peer_id).legs.append(
            LegSummary(
                leg=r.leg,
                source=r.source,
                buckets=r.buckets,
                samples=int(r.samples),
                first_at=r.first_at,
                last_at=r.last_at,
                mean_loss_pct=_float(r.mean_loss_pct),
                max_loss_pct=_float(r.max_loss_pct),
                mean_rtt_ms=_float(r.mean_rtt_ms),
                mean_jitter_ms=_float(r.mean_jitter_ms),
                mean_bitrate_kbps=_float(r.mean_bitrate_kbps),
                packets=r.packets,
                nacks=r.nacks,
                plis=r.plis,
                latest=last[(r.peer_id, r.leg, r.source)],
            )
        )
    for d in decisions:
        summary = peer(d.peer_id)
        summary.decisions += 1
        summary.layers[d.source_id] = d.layer
    for summary in peers.values():
        summary.legs.sort(key=lambda leg: (leg.source, leg.leg or ""))
    return [peers[k] for k in sorted(peers)]


@router.get("/{room_id}/quality", response_model=RoomQuality, responses={400: {}, 403: {}, 404: {}})
async def room_quality(
    room_id: Id,
    who: Claims = Depends(claims),
    svc: Services = Depends(services),
    since: Annotated[str | None, Query(max_length=64)] = None,
    limit: Annotated[int, Query(ge=1, le=10_000)] = 1000,
) -> RoomQuality:
    """Per-peer quality summary and the decision history of a room since ``since``
    (admin, or a token for this room)."""
    if not who.has(Grant.ADMIN) or who.room not in (None, room_id):
        who.require(Grant.JOIN, room=room_id)
        if who.room is None:
            who.require(Grant.ADMIN)
    now = datetime.now(UTC)
    start = parse_since(since, now)
    async with svc.sessions() as session:
        if await session.get(Room, room_id) is None:
            raise RoomNotFound(f"room {room_id} does not exist")
        params = {"room_id": room_id, "since": start - BUCKET}
        legs = list((await session.execute(LEGS, params)).all())
        latest = list((await session.execute(LATEST, params)).all())
        rows = (await session.execute(DECISIONS, {"room_id": room_id, "since": start, "limit": limit + 1})).all()
    decisions = [
        Decision(
            event_id=r.event_id,
            decided_at=r.decided_at,
            peer_id=r.peer_id,
            source_id=r.source_id,
            publisher_peer_id=r.publisher_peer_id,
            previous=r.previous,
            layer=r.layer,
            reason=r.reason,
            loss_pct=r.loss_pct,
            level=r.level,
            bandwidth_kbps=r.bandwidth_kbps,
        )
        for r in rows[:limit]
    ]
    return RoomQuality(
        room_id=room_id,
        since=start,
        until=now,
        peers=summarize(legs, latest, decisions),
        decisions=decisions,
        decisions_truncated=len(rows) > limit,
    )
