"""The event catalog, codec, golden fixtures and partitioning, without Kafka."""

from __future__ import annotations

import json
import uuid

import pytest

from producers import golden
from producers.catalog import EVENT_TYPES, decode, encode
from producers.envelope import derived_id
from producers.errors import DecodeError
from producers.kafka import partition_for
from producers.rtc import JoinRequested
from producers.topics import REGISTRY, Topics, all_specs


def test_golden_fixtures_match_manifest_and_parse() -> None:
    assert golden.check() == []


def test_every_type_has_a_fixture_and_roundtrips() -> None:
    manifest = golden.read_manifest()
    for type_ in EVENT_TYPES:
        names = [n for n in manifest if n.startswith(f"{type_}.")]
        assert names, type_
        event = decode((golden.FIXTURES / names[0]).read_bytes())
        assert decode(encode(event)) == event


@pytest.mark.parametrize(
    ("payload", "reason"),
    [
        (b"{nope", "malformed-json"),
        (b"[1, 2]", "not-an-object"),
        (b'{"type": "Nope"}', "unknown-type"),
        (b'{"type": "JoinRequested"}', "invalid-event"),
    ],
)
def test_bad_payloads_raise_decode_error(payload: bytes, reason: str) -> None:
    with pytest.raises(DecodeError) as info:
        decode(payload)
    assert info.value.reason == reason


def test_newer_payload_with_extra_fields_still_parses() -> None:
    event = JoinRequested.new(room_id="r", peer_id="p", identity="i", session_id="s", gateway_id="g")
    raw = json.loads(encode(event))
    raw["added_in_v2"] = {"x": 1}
    assert decode(json.dumps(raw)) == event


def test_derived_ids_are_stable() -> None:
    cause = uuid.UUID("00000000-0000-0000-0000-000000000001")
    assert derived_id(cause, 0, "PeerJoined") == derived_id(str(cause), 0, "PeerJoined")
    assert derived_id(cause, 0, "PeerJoined") != derived_id(cause, 1, "PeerJoined")


def test_partitioning_matches_kafka_default_partitioner() -> None:
    # Kafka's own murmur2 test vectors (clients UtilsTest): signed 32-bit hashes;
    # the partition is toPositive(hash) % n, i.e. hash & 0x7fffffff.
    vectors = {"21": -973932308, "foobar": -790332482, "abc": 479470107, "a-little-bit-long-string": -985981536}
    for key, java_hash in vectors.items():
        assert partition_for(key, 7) == (java_hash & 0x7FFFFFFF) % 7
    assert {partition_for(f"room-{i}", 4) for i in range(100)} == {0, 1, 2, 3}


def test_registry_names_and_prefix() -> None:
    names = [s.name for s in REGISTRY]
    assert len(names) == len(set(names))
    assert {s.name for s in all_specs()} >= {"rtc.intents.dlq", "rtc.facts"}
    assert Topics("t1-").name("rtc.facts") == "t1-rtc.facts"
    with pytest.raises(KeyError):
        Topics().name("no.such.topic")
