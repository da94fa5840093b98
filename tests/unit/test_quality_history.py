"""Pure parts of the quality history: buckets, the batch's column arrays, ``since``."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from api.quality import InvalidSince, parse_since
from producers.media import QualitySample
from streams.quality_projection import bucket_of, sample_columns

NOW = datetime(2026, 12, 3, 10, 0, 27, 500_000, tzinfo=UTC)


def test_bucket_is_the_start_of_its_10_seconds() -> None:
    assert bucket_of(NOW) == datetime(2026, 12, 3, 10, 0, 20, tzinfo=UTC)
    assert bucket_of(datetime(2026, 12, 3, 10, 0, 20, tzinfo=UTC)) == datetime(2026, 12, 3, 10, 0, 20, tzinfo=UTC)
    assert bucket_of(datetime(2026, 12, 3, 10, 0, 19, 999_999, tzinfo=UTC)).second == 10


def test_columns_hold_each_sample_once_and_name_a_pause() -> None:
    a = QualitySample.new(
        occurred_at=NOW,
        room_id="r",
        peer_id="p",
        leg="sub/cam",
        loss_pct=1.5,
        layer="high",
        packets=7,
        bandwidth_kbps=300,
    )
    b = QualitySample.new(
        occurred_at=NOW + timedelta(seconds=3), room_id="r", peer_id="p", leg="sub/cam", loss_pct=30, paused=True
    )
    cols = sample_columns([a, b, a])
    assert cols["event_id"] == [str(a.event_id), str(b.event_id)]
    assert cols["bucket"] == [bucket_of(NOW), datetime(2026, 12, 3, 10, 0, 30, tzinfo=UTC)]
    assert cols["layer"] == ["high", "paused"] and cols["bw"] == [300, None] and cols["packets"] == [7, 0]
    assert {len(v) for v in cols.values()} == {2}


def test_since() -> None:
    assert parse_since(None, NOW) == NOW - timedelta(hours=1)
    assert parse_since("2026-12-03T09:00:00Z", NOW) == datetime(2026, 12, 3, 9, tzinfo=UTC)
    assert parse_since("2026-12-03T11:00:00+02:00", NOW) == datetime(2026, 12, 3, 9, tzinfo=UTC)
    assert parse_since("2026-12-03T09:00:00", NOW) == datetime(2026, 12, 3, 9, tzinfo=UTC)  # no offset: UTC
    for bad in ("", "yesterday", "2026-02-30T00:00:00Z", "2026-12-03T10:05:00Z"):
        with pytest.raises(InvalidSince):
            parse_since(bad, NOW)


def test_values_postgres_would_refuse_are_not_sent() -> None:
    inf = QualitySample.new(
        occurred_at=NOW,
        room_id="r",
        peer_id="p",
        leg="sub/cam",
        loss_pct=2,
        rtt_ms=float("inf"),
        packets=2**62,
        bandwidth_kbps=float("inf"),
    )
    nul = QualitySample.new(occurred_at=NOW, room_id="r", peer_id="p", leg="sub/\x00", loss_pct=2)
    cols = sample_columns([inf, nul])
    assert cols["event_id"] == [str(inf.event_id)]  # NUL cannot be stored in text: skipped
    assert cols["rtt"] == [None] and cols["bw"] == [None] and cols["packets"] == [2**40]
