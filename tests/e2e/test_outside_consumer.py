"""An analytics team's consumer, written against the published contract only.

This file imports nothing from roomlog: the standard library, ``aiokafka``,
``jsonschema`` and ``pytest``, and it reads ``docs/asyncapi.json`` as a file. The boundary,
honestly: the traffic comes from ``python -m tests.e2e.contract_traffic``, a separate
process that uses the project's test harness (a real room with publish/subscribe/chat and a
recording, calls, a station, a node stopping); this process only starts it and reads Kafka.
pytest itself loads ``tests/conftest.py`` (which imports the project) before any test; no
fixture of it is used here.

The consumer joins its own group (``analytics.<team>.<job>``), subscribes to every channel
of the document (dead-letter topics included), reads each from offset 0 to its end, and
for every record: parses the value as a JSON object, checks its ``type`` is one of the
channel's messages, validates it against that message's payload schema (the discriminator
picks it), checks the record key is the payload's ``key`` and the ``type`` header the
payload's type. Once per (topic, type) it also validates against the topic's whole
discriminated union. It fails on any dead letter, and requires traffic on every topic the
run is known to write; the topics without traffic are printed (and written to
``outside-consumer.json`` in the test's tmp dir).
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import uuid
from collections import Counter, defaultdict
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition
from jsonschema import Draft7Validator, FormatChecker

REPO = Path(__file__).resolve().parents[2]
CONTRACT = REPO / "docs" / "asyncapi.json"

#: Topics the traffic process is known to write to (every one must have records).
EXPECTED = {
    "rtc.intents",
    "rtc.facts",
    "session.events",
    "presence.facts",
    "gateway.notifications",
    "media.commands",
    "media.results",
    "media.nodes",
    "node.facts",
    "quality.samples",
    "station.events",
    "station.commands",
    "call.events",
    "recording.intents",
    "recording.facts",
    "recording.commands",
    "recording.events",
}

formats = FormatChecker()


@formats.checks("date-time", raises=ValueError)
def _date_time(value: object) -> bool:
    return not isinstance(value, str) or datetime.fromisoformat(value).tzinfo is not None


class Contract:
    """The AsyncAPI document: channels by address, validators per schema (compiled once)."""

    def __init__(self, doc: dict[str, Any], prefix: str) -> None:
        self.doc = doc
        self.channels = {ch["address"].replace("{prefix}", prefix): name for name, ch in doc["channels"].items()}
        self._validators: dict[str, Draft7Validator] = {}

    def messages(self, channel: str) -> set[str]:
        return set(self.doc["channels"][channel]["messages"])

    def is_dead_letter(self, channel: str) -> bool:
        return bool(self.doc["channels"][channel].get("x-roomlog-role") == "dead-letter")

    def validator(self, ref: str) -> Draft7Validator:
        if ref not in self._validators:
            root = {"$ref": ref, "components": self.doc["components"]}
            self._validators[ref] = Draft7Validator(root, format_checker=formats)
        return self._validators[ref]

    def payload_ref(self, type_: str) -> str:
        return str(self.doc["components"]["messages"][type_]["payload"]["$ref"])

    def union_ref(self, channel: str) -> str:
        return str(self.doc["channels"][channel]["x-roomlog-schema"]["$ref"])


async def run_traffic(prefix: str, log_dir: Path) -> dict[str, Any]:
    """The traffic process; its last stdout line is what it drove."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "tests.e2e.contract_traffic",
        "--prefix",
        prefix,
        "--log-dir",
        str(log_dir),
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO)},
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        out, err = await asyncio.wait_for(proc.communicate(), 540)
    except TimeoutError:
        proc.terminate()  # the traffic process stops its services on SIGTERM
        try:
            await asyncio.wait_for(proc.wait(), 30)
        finally:
            if proc.returncode is None:
                proc.kill()
        raise
    assert proc.returncode == 0, f"traffic process failed ({proc.returncode}):\n{err.decode()[-6000:]}"
    result: dict[str, Any] = json.loads(out.decode().strip().splitlines()[-1])
    return result


async def read_everything(bootstrap: str, contract: Contract, group: str) -> list[Any]:
    """Every record of every channel, from offset 0 to the end offsets seen at the start."""
    consumer = AIOKafkaConsumer(
        *contract.channels,
        bootstrap_servers=bootstrap,
        group_id=group,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
    )
    await consumer.start()
    records: list[Any] = []
    try:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 60
        while {tp.topic for tp in consumer.assignment()} != set(contract.channels):  # a lone member gets all
            assert loop.time() < deadline, f"assigned only {sorted(consumer.assignment())}"
            records += [r for batch in (await consumer.getmany(timeout_ms=500)).values() for r in batch]
        want: set[TopicPartition] = set(consumer.assignment())
        ends = await consumer.end_offsets(list(want))
        deadline = loop.time() + 120
        while [tp for tp, end in ends.items() if await consumer.position(tp) < end]:
            assert loop.time() < deadline, "did not reach the end offsets"
            records += [r for batch in (await consumer.getmany(timeout_ms=500)).values() for r in batch]
        await consumer.commit()
    finally:
        await consumer.stop()
    return records


@pytest.mark.timeout(720)
async def test_an_outside_consumer_parses_and_validates_every_record_of_an_e2e_run(tmp_path: Path) -> None:
    prefix = f"oc{uuid.uuid4().hex[:8]}-"
    drove = await run_traffic(prefix, tmp_path / "traffic")
    contract = Contract(json.loads(CONTRACT.read_text()), prefix)
    group = f"{prefix}analytics.contract-test.every-record"
    bootstrap = os.environ.get("KAFKA_BOOTSTRAP")
    assert bootstrap, "KAFKA_BOOTSTRAP is not set: run with scripts/test.sh (it starts Kafka)"
    records = await read_everything(bootstrap, contract, group)

    counts: dict[str, Counter[str]] = defaultdict(Counter)
    problems: list[str] = []
    union_checked: set[tuple[str, str]] = set()
    by_room: dict[str, Counter[str]] = defaultdict(Counter)
    for record in records:
        channel = contract.channels[record.topic]
        where = f"{record.topic}/{record.partition}/{record.offset}"
        if contract.is_dead_letter(channel):
            problems.append(f"{where}: a dead letter: {dict(record.headers)}")
            continue
        value = json.loads(record.value)
        if not isinstance(value, dict):
            problems.append(f"{where}: not a JSON object")
            continue
        type_ = value.get("type")
        counts[channel][str(type_)] += 1
        if type_ not in contract.messages(channel):
            problems.append(f"{where}: type {type_!r} is not a message of {channel}")
            continue
        errors = [e.message for e in contract.validator(contract.payload_ref(type_)).iter_errors(value)]
        if errors:
            problems.append(f"{where}: {type_} invalid: {errors[:3]}")
        if (channel, type_) not in union_checked:
            union_checked.add((channel, type_))
            union_errors = list(contract.validator(contract.union_ref(channel)).iter_errors(value))
            if union_errors:
                problems.append(f"{where}: {type_} refused by the {channel} union: {union_errors[0].message[:300]}")
        key = record.key.decode() if record.key is not None else None
        if key != value.get("key"):
            problems.append(f"{where}: record key {key!r} != payload key {value.get('key')!r}")
        headers = {k: v.decode() for k, v in record.headers}
        if headers.get("type") != type_:
            problems.append(f"{where}: header type {headers.get('type')!r} != {type_}")
        if value.get("room_id"):
            by_room[value["room_id"]][type_] += 1

    with_traffic = {ch for ch, c in counts.items() if sum(c.values())}
    without = sorted(set(contract.doc["channels"]) - with_traffic)
    summary = {
        "records": len(records),
        "topics": {ch: dict(sorted(c.items())) for ch, c in sorted(counts.items())},
        "topics_without_traffic": without,
        "drove": drove,
    }
    (tmp_path / "outside-consumer.json").write_text(json.dumps(summary, indent=2))
    print(json.dumps(summary, indent=2))

    assert problems == []
    assert EXPECTED <= with_traffic, f"no records on {sorted(EXPECTED - with_traffic)}"
    assert drove["served_contract_is_the_file"] is True, "the running api serves another document"
    # the run is the one the traffic process says it drove
    room = by_room[drove["room_id"]]
    for type_ in ("RoomCreated", "PeerJoined", "ChatMessagePosted", "TrackUnpublished", "PeerLeft", "RoomClosed"):
        assert room[type_] >= 1, (type_, dict(room))
    assert room["ChatMessagePosted"] == 2
    assert room["RecordingAccepted"] == 1 and room["RecordingCompleted"] == 1, dict(room)
    assert room["PublisherAnswered"] >= 2 and room["QualitySample"] >= 1, dict(room)
    calls = counts["call.events"]
    assert calls["CallAccepted"] == 1 and calls["CallEnded"] == 1 and calls["CallRefused"] == 1, dict(calls)
