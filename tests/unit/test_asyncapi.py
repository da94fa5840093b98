"""The published event contract (docs/asyncapi.json, ``producers/asyncapi.py``).

- the committed file is what the catalog generates (``python -m producers.asyncapi``);
- it is a valid AsyncAPI 3.0.0 document (the official JSON Schema, vendored);
- every topic of the registry is a channel, every catalog type a message;
- every golden fixture validates, with the generic ``jsonschema`` validator, against its
  type's payload schema and against the union of every topic it is written to; and the
  schemas refuse what the catalog refuses (so these checks can fail).
"""

from __future__ import annotations

import copy
import gzip
import json
from datetime import datetime
from functools import cache
from pathlib import Path
from typing import Any

import pytest
from jsonschema import Draft7Validator, FormatChecker

from producers import asyncapi
from producers.catalog import EVENT_TYPES, decode
from producers.channels import TOPIC_TYPES, kind_of, problems, topics_of
from producers.golden import FIXTURES
from producers.topics import REGISTRY

DATA = Path(__file__).parent / "data"
FIXTURE_PATHS = sorted(FIXTURES.glob("*.json"))

formats = FormatChecker()


@formats.checks("date-time", raises=ValueError)
def _date_time(value: object) -> bool:
    return not isinstance(value, str) or datetime.fromisoformat(value).tzinfo is not None


@cache
def committed() -> dict[str, Any]:
    return dict(json.loads(asyncapi.DOC_PATH.read_text()))


@cache
def validator(schema_name: str) -> Draft7Validator:
    """A validator of ``#/components/schemas/<name>`` in the committed document."""
    root = {"$ref": f"#/components/schemas/{schema_name}", "components": committed()["components"]}
    return Draft7Validator(root, format_checker=formats)


def errors(schema_name: str, payload: Any) -> list[str]:
    return [e.message for e in validator(schema_name).iter_errors(payload)]


def test_the_committed_document_is_what_the_catalog_generates() -> None:
    assert asyncapi.DOC_PATH.read_text() == asyncapi.render(), "run `python -m producers.asyncapi`"
    assert asyncapi.main(["--check"]) == 0


def test_check_fails_on_a_stale_file(tmp_path: Path) -> None:
    stale = tmp_path / "asyncapi.json"
    stale.write_text(asyncapi.render().replace('"PeerJoined"', '"PeerArrived"', 1))
    assert asyncapi.main(["--check", "--output", str(stale)]) == 1
    assert asyncapi.main(["--output", str(stale)]) == 0
    assert asyncapi.main(["--check", "--output", str(stale)]) == 0


def test_the_document_is_valid_asyncapi_3() -> None:
    spec = json.loads(gzip.decompress((DATA / "asyncapi-3.0.0.schema.json.gz").read_bytes()))
    checker = Draft7Validator(spec)
    assert [e.message for e in checker.iter_errors(committed())] == []
    broken = copy.deepcopy(committed())
    broken["channels"]["rtc.facts"]["bindings"]["kafka"]["partitions"] = "four"
    assert list(checker.iter_errors(broken)), "the AsyncAPI schema must catch a broken binding"


def test_catalog_registry_and_channels_agree() -> None:
    assert problems() == []
    doc = committed()
    assert {s.name for s in REGISTRY} <= doc["channels"].keys()
    assert {f"{s.name}.dlq" for s in REGISTRY if s.dlq} <= doc["channels"].keys()
    for spec in REGISTRY:
        ch = doc["channels"][spec.name]
        assert ch["x-roomlog-key"] == spec.key
        assert ch["bindings"]["kafka"]["partitions"] == spec.partitions
        assert set(ch["messages"]) == set(TOPIC_TYPES[spec.name][1])
    assert EVENT_TYPES.keys() <= doc["components"]["messages"].keys()
    for type_, cls in EVENT_TYPES.items():
        msg = doc["components"]["messages"][type_]
        assert msg["payload"] == {"$ref": f"#/components/schemas/{type_}"}
        assert cls.KEY_FIELD in msg["bindings"]["kafka"]["key"]["description"]
        assert msg["tags"] == [{"name": kind_of(type_)}]


def test_unions_discriminate_on_type() -> None:
    schemas = committed()["components"]["schemas"]
    for topic, (_, types) in TOPIC_TYPES.items():
        union = schemas[f"topic.{topic}"]
        assert union["discriminator"] == "type"
        assert [ref["$ref"].rsplit("/", 1)[1] for ref in union["oneOf"]] == list(types)
    for type_ in EVENT_TYPES:
        own = schemas[type_]["allOf"][1]
        assert own["properties"]["type"] == {"type": "string", "const": type_}
        assert "type" in own["required"]


def test_every_type_has_a_golden_example() -> None:
    messages = committed()["components"]["messages"]
    for type_ in EVENT_TYPES:
        names = [ex["name"] for ex in messages[type_]["examples"]]
        assert names and all(n.startswith(f"{type_}.v") for n in names)


@pytest.mark.parametrize("path", FIXTURE_PATHS, ids=lambda p: p.name)
def test_every_golden_fixture_validates_against_the_published_schema(path: Path) -> None:
    payload = json.loads(path.read_text())
    type_ = path.name.split(".", 1)[0]
    assert payload["type"] == type_
    assert errors(type_, payload) == []
    for topic in topics_of(type_):
        assert errors(f"topic.{topic}", payload) == [], topic


def test_the_schema_refuses_what_the_catalog_refuses() -> None:
    good = json.loads((FIXTURES / "PeerJoined.v1.json").read_text())
    decode(json.dumps(good))
    bad_cases: list[tuple[str, dict[str, Any]]] = [
        ("missing room_id", {k: v for k, v in good.items() if k != "room_id"}),
        ("bad id", {**good, "peer_id": "no spaces allowed"}),
        ("bad uuid", {**good, "event_id": "not-a-uuid"}),
        ("bad time", {**good, "occurred_at": "yesterday"}),
        ("no key", {k: v for k, v in good.items() if k != "key"}),
    ]
    for what, payload in bad_cases:
        assert errors("PeerJoined", payload), what
        assert errors("topic.rtc.facts", payload), what
    # a type on another topic is not a record of this one; an unknown type is nothing
    session = json.loads((FIXTURES / "SessionOpened.v1.json").read_text())
    assert errors("SessionOpened", session) == []
    assert errors("topic.rtc.facts", session)
    assert errors("AnyEvent", {**good, "type": "PeerVanished"})
    # unknown fields are allowed (newer producers add optional fields)
    assert errors("PeerJoined", {**good, "added_later": 1}) == []


async def test_the_api_serves_the_document_without_auth_and_cacheable() -> None:
    import httpx

    from api.app import create_app
    from api.settings import ApiSettings

    # ASGITransport runs no lifespan: the route needs no Kafka, no Postgres, no token
    transport = httpx.ASGITransport(app=create_app(ApiSettings()))
    async with httpx.AsyncClient(transport=transport, base_url="http://api") as client:
        first = await client.get("/v1/asyncapi.json")
        assert first.status_code == 200
        assert first.headers["content-type"] == "application/json"
        assert first.content.decode() == asyncapi.DOC_PATH.read_text()
        assert "public" in first.headers["cache-control"]
        etag = first.headers["etag"]
        again = await client.get("/v1/asyncapi.json", headers={"If-None-Match": etag})
        assert again.status_code == 304 and again.content == b"" and again.headers["etag"] == etag
        other = await client.get("/v1/asyncapi.json", headers={"If-None-Match": '"other"'})
        assert other.status_code == 200


def test_events_md_lists_every_topic_with_its_role_key_and_retention() -> None:
    text = (Path(__file__).resolve().parents[2] / "docs" / "events.md").read_text()
    body = text[text.index("### Topics: facts, intents, commands") :]
    rows = {}
    for line in body.splitlines():
        cells = [c.strip().strip("`") for c in line.strip("|").split("|")]
        if line.startswith("| `") and len(cells) == 5:
            rows[cells[0]] = cells[1:]
    for spec in REGISTRY:
        retention = "forever" if spec.retention_ms is None else f"{spec.retention_ms // 86_400_000} d"
        assert rows.pop(spec.name) == [TOPIC_TYPES[spec.name][0], spec.key, str(spec.partitions), retention]
    assert rows == {}


def test_the_outside_consumer_imports_nothing_from_roomlog() -> None:
    import ast
    import sys

    path = Path(__file__).resolve().parents[1] / "e2e" / "test_outside_consumer.py"
    tree = ast.parse(path.read_text())
    roots = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            roots |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            roots.add((node.module or "").split(".")[0] if node.level == 0 else ".")
    allowed = set(sys.stdlib_module_names) | {"__future__", "aiokafka", "jsonschema", "pytest"}
    assert roots - allowed == set()
