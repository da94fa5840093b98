"""Replay: fold the facts topic into empty stores and compare with the live state.

``python -m streams.replay`` reads ``rtc.facts`` from the beginning (under a fresh
consumer group, so the live app is untouched), folds it with the same ``evolve`` the
room agent uses, and compares the result with
- the Postgres read model (``rooms`` and current ``room_members``), and
- with ``--app-id``, the live worker's room table, read from its changelog topic.
It prints a report and exits 0 when everything matches, 1 otherwise.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import uuid
from dataclasses import dataclass, field
from typing import Any

import sqlalchemy as sa
from aiokafka import AIOKafkaConsumer, TopicPartition

from db.engine import make_engine
from producers.catalog import decode
from producers.errors import DecodeError
from producers.topics import Topics
from streams.room_state import RoomState, evolve


@dataclass
class ReplayReport:
    facts: int = 0
    duplicates: int = 0
    rooms: int = 0
    mismatches: list[str] = field(default_factory=list)

    @property
    def equal(self) -> bool:
        return not self.mismatches

    def as_dict(self) -> dict[str, Any]:
        return {
            "equal": self.equal,
            "facts": self.facts,
            "duplicate_records": self.duplicates,
            "rooms": self.rooms,
            "mismatches": self.mismatches[:50],
            "mismatch_count": len(self.mismatches),
        }


async def _read_all(bootstrap: str, topic: str) -> list[tuple[bytes | None, bytes | None]]:
    """Every record in ``topic`` up to its end offsets now, in per-partition order."""
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap,
        group_id=f"roomlog-replay-{uuid.uuid4().hex[:8]}",
        enable_auto_commit=False,
        auto_offset_reset="earliest",
    )
    await consumer.start()
    try:
        parts = consumer.partitions_for_topic(topic)
        if not parts:
            await consumer._client.force_metadata_update()  # noqa: SLF001
            parts = consumer.partitions_for_topic(topic) or set()
        tps = [TopicPartition(topic, p) for p in sorted(parts)]
        if not tps:
            raise SystemExit(f"topic {topic} does not exist")
        ends = await consumer.end_offsets(tps)
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        out: list[tuple[bytes | None, bytes | None]] = []
        remaining = {tp for tp in tps if ends[tp] > 0}
        while remaining:
            batch = await consumer.getmany(*remaining, timeout_ms=1000)
            for tp, records in batch.items():
                out += [(r.key, r.value) for r in records if r.offset < ends[tp]]
                if records and records[-1].offset >= ends[tp] - 1:
                    remaining.discard(tp)
        return out
    finally:
        await consumer.stop()


async def fold_facts(bootstrap: str, topic: str, report: ReplayReport) -> dict[str, RoomState]:
    rooms: dict[str, RoomState] = {}
    seen: set[uuid.UUID] = set()
    for _, value in await _read_all(bootstrap, topic):
        try:
            fact = decode(value or b"")
        except DecodeError as exc:
            report.mismatches.append(f"undecodable fact on {topic}: {exc}")
            continue
        if fact.event_id in seen:
            report.duplicates += 1
            continue
        seen.add(fact.event_id)
        report.facts += 1
        room_id = str(getattr(fact, "room_id", ""))
        state = evolve(rooms.get(room_id), fact)
        if state is not None:
            rooms[room_id] = state
    report.rooms = len(rooms)
    return rooms


Rows = dict[str, dict[str, Any]]
MemberRows = dict[tuple[str, str], dict[str, Any]]


def expected_rows(rooms: dict[str, RoomState]) -> tuple[Rows, MemberRows]:
    room_rows = {
        r.room_id: {
            "room_type": r.room_type.value,
            "status": r.status,
            "max_participants": r.max_participants,
            "empty_timeout_s": r.empty_timeout_s,
            "creator": r.creator,
            "node_id": r.node_id,
            "created_at": r.created_at,
            "closed_at": r.closed_at,
        }
        for r in rooms.values()
    }
    member_rows = {
        (r.room_id, p.peer_id): {
            "identity": p.identity,
            "name": p.name,
            "state": p.state,
            "audio_enabled": not p.audio_muted,
            "video_enabled": not p.video_muted,
        }
        for r in rooms.values()
        for p in r.peers.values()
        if not p.hidden
    }
    return room_rows, member_rows


async def compare_postgres(database_url: str, rooms: dict[str, RoomState], report: ReplayReport) -> None:
    want_rooms, want_members = expected_rows(rooms)
    engine = make_engine(database_url)
    try:
        async with engine.connect() as conn:
            ids = list(want_rooms)
            got_rooms = {
                row.room_id: dict(row._mapping)
                for row in (
                    await conn.execute(
                        sa.text(
                            "select room_id, room_type, status, max_participants, empty_timeout_s, creator, node_id, "
                            "created_at, closed_at from rooms where room_id = any(:ids)"
                        ),
                        {"ids": ids},
                    )
                ).all()
            }
            got_members = {
                (row.room_id, row.peer_id): dict(row._mapping)
                for row in (
                    await conn.execute(
                        sa.text(
                            "select room_id, peer_id, identity, name, state, audio_enabled, video_enabled "
                            "from room_members "
                            "where room_id = any(:ids) and state <> 'left'"
                        ),
                        {"ids": ids},
                    )
                ).all()
            }
    finally:
        await engine.dispose()
    for room_id, want in want_rooms.items():
        got = got_rooms.get(room_id)
        if got is None:
            report.mismatches.append(f"postgres: room {room_id} missing")
            continue
        diff = {k: (v, got[k]) for k, v in want.items() if got[k] != v}
        if diff:
            report.mismatches.append(f"postgres: room {room_id} differs (replayed, live): {diff}")
    for key in sorted(want_members.keys() | got_members.keys()):
        want_m, got_m = want_members.get(key), got_members.get(key)
        if got_m is None:
            report.mismatches.append(f"postgres: member {key} missing")
        elif want_m is None:
            report.mismatches.append(f"postgres: member {key} present but not in the replayed state")
        else:
            diff = {k: (v, got_m[k]) for k, v in want_m.items() if got_m[k] != v}
            if diff:
                report.mismatches.append(f"postgres: member {key} differs (replayed, live): {diff}")


async def compare_changelog(bootstrap: str, app_id: str, rooms: dict[str, RoomState], report: ReplayReport) -> None:
    """Compare with the live room table: the latest value per key in its changelog."""
    live: dict[str, RoomState] = {}
    for key, value in await _read_all(bootstrap, f"{app_id}-rooms-changelog"):
        room_id = json.loads(key) if key else ""
        if value is None:
            live.pop(room_id, None)
        else:
            live[room_id] = RoomState.model_validate(json.loads(value))
    for room_id in sorted(rooms.keys() | live.keys()):
        want, got = rooms.get(room_id), live.get(room_id)
        if want is None or got is None:
            report.mismatches.append(f"changelog: room {room_id} {'missing' if got is None else 'not replayed'}")
        elif want.view() != got.view():
            report.mismatches.append(f"changelog: room {room_id} differs from the replayed state")


async def replay(bootstrap: str, prefix: str, database_url: str | None, app_id: str | None) -> ReplayReport:
    report = ReplayReport()
    rooms = await fold_facts(bootstrap, Topics(prefix).name("rtc.facts"), report)
    if database_url:
        await compare_postgres(database_url, rooms, report)
    if app_id:
        await compare_changelog(bootstrap, app_id, rooms, report)
    return report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m streams.replay", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--bootstrap", default=os.environ.get("KAFKA_BOOTSTRAP", "127.0.0.1:19092"))
    parser.add_argument("--prefix", default=os.environ.get("ROOMLOG_TOPIC_PREFIX", ""), help="topic prefix")
    parser.add_argument(
        "--database-url",
        default=os.environ.get("DATABASE_URL"),
        help="compare with this read model (default $DATABASE_URL)",
    )
    parser.add_argument("--no-postgres", action="store_true", help="skip the Postgres comparison")
    parser.add_argument(
        "--app-id",
        default=os.environ.get("ROOMLOG_STREAMS_APP_ID"),
        help="compare with this streams app's room table (its changelog topic)",
    )
    parser.add_argument("--json", action="store_true", help="print the report as JSON")
    args = parser.parse_args(argv)
    database_url = None if args.no_postgres else args.database_url
    report = asyncio.run(replay(args.bootstrap, args.prefix, database_url, args.app_id))
    if args.json:
        print(json.dumps(report.as_dict(), default=str))
    else:
        print(
            f"replayed {report.facts} facts into {report.rooms} rooms ({report.duplicates} duplicate records skipped)"
        )
        for line in report.mismatches:
            print(f"MISMATCH {line}")
        print("replay equals live state" if report.equal else f"{len(report.mismatches)} mismatch(es)")
    return 0 if report.equal else 1


if __name__ == "__main__":
    sys.exit(main())
