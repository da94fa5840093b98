"""The event contract for readers outside the code: an AsyncAPI 3.0 document.

Generated from the catalog, never written by hand: every topic of the registry
(``topics.py``) is a channel with its key, partitions and retention; the types it
carries (``channels.py``) are its messages; each message's payload is JSON Schema
(draft 07, the AsyncAPI schema format) from the pydantic model, split into the shared
``Envelope`` and the type's own fields; each topic's union is a ``oneOf`` with
``discriminator: type`` (the ``type`` field is a ``const`` in every payload, as on the
wire); the golden fixtures (``producers/fixtures``) are the messages' examples.

``python -m producers.asyncapi`` writes ``docs/asyncapi.json``; ``--check`` fails when
the committed file differs from what the catalog generates. The api serves the same
document at ``GET /v1/asyncapi.json``.
"""

from __future__ import annotations

import argparse
import hashlib
import json
from functools import cache
from pathlib import Path
from typing import Any

from producers.catalog import EVENT_TYPES
from producers.channels import TOPIC_TYPES, kind_of, topics_of
from producers.envelope import SCHEMA_VERSION, Event
from producers.golden import FIXTURES
from producers.topics import REGISTRY, TopicSpec, dlq_spec

DOC_PATH = Path(__file__).resolve().parents[1] / "docs" / "asyncapi.json"
KAFKA_BINDING = "0.5.0"
_REF = "#/components/schemas/"

_DESCRIPTION = """\
Every record on every roomlog topic, as an outside consumer sees it. Values are compact \
JSON objects; the record key is the payload's `key` field (the type's partition key); \
headers carry `traceparent` (W3C), `type` and `schema_version`. Payloads are the shared \
`Envelope` plus the type's own fields; `type` tells them apart. Unknown fields must be \
ignored: the catalog only adds optional fields within a schema version. Topic names get \
the deployment's prefix (`ROOMLOG_TOPIC_PREFIX`, empty by default). How to consume the \
log as an analytics team: docs/events.md, "Consuming the log"."""


def _rewrite(node: Any) -> Any:
    """pydantic's schema as draft-07 JSON Schema under ``components/schemas``: ``$defs``
    references point there, field titles (noise) are dropped."""
    if isinstance(node, list):
        return [_rewrite(item) for item in node]
    if not isinstance(node, dict):
        return node
    out: dict[str, Any] = {}
    for key, value in node.items():
        if key == "$ref" and isinstance(value, str):
            out[key] = value.replace("#/$defs/", _REF)
        elif key == "properties" and isinstance(value, dict):
            out[key] = {name: _rewrite(_untitled(prop)) for name, prop in value.items()}
        elif key != "$defs":
            out[key] = _rewrite(value)
    return out


def _untitled(prop: Any) -> Any:
    return {k: v for k, v in prop.items() if k != "title"} if isinstance(prop, dict) else prop


def _model_schema(cls: type[Event], defs: dict[str, Any]) -> dict[str, Any]:
    raw = cls.model_json_schema(mode="serialization", ref_template="#/$defs/{model}")
    for name, sub in raw.get("$defs", {}).items():
        sub = _rewrite(sub)
        if defs.setdefault(name, sub) != sub:
            raise ValueError(f"two different schemas named {name}")
    return dict(_rewrite(raw))


def envelope_schema(defs: dict[str, Any]) -> dict[str, Any]:
    schema = _model_schema(Event, defs)
    schema["required"] = sorted(set(schema["required"]) | {"type"})
    schema["discriminator"] = "type"
    return schema


def payload_schema(type_: str, envelope: dict[str, Any], defs: dict[str, Any]) -> dict[str, Any]:
    """``allOf`` the envelope and the type's own fields (``type`` as a required ``const``)."""
    cls = EVENT_TYPES[type_]
    full = _model_schema(cls, defs)
    shared = envelope["properties"]
    own = {k: v for k, v in full["properties"].items() if k not in shared or v != shared[k]}
    own["type"] = {"type": "string", "const": type_}
    required = sorted((set(full.get("required", [])) - set(envelope["required"])) | {"type"})
    body: dict[str, Any] = {"type": "object", "properties": own, "required": required}
    return {
        "title": type_,
        "description": full.get("description", type_),
        "allOf": [{"$ref": _REF + "Envelope"}, body],
        "x-roomlog-key-field": cls.KEY_FIELD,
        "x-roomlog-kind": kind_of(type_),
    }


def examples(type_: str) -> list[dict[str, Any]]:
    """The golden fixtures of ``type_`` as AsyncAPI message examples."""
    out = []
    for path in sorted(FIXTURES.glob(f"{type_}.v*.json")):
        payload = json.loads(path.read_text())
        headers = {"type": type_, "schema_version": str(payload.get("schema_version", SCHEMA_VERSION))}
        out.append(
            {"name": path.stem, "summary": f"golden fixture {path.name}", "headers": headers, "payload": payload}
        )
    return out


def message(type_: str) -> dict[str, Any]:
    cls = EVENT_TYPES[type_]
    where = ", ".join(topics_of(type_))
    summary = cls.__doc__.strip().splitlines()[0] if cls.__doc__ else f"a {kind_of(type_)} on {where}"
    return {
        "name": type_,
        "title": type_,
        "summary": summary,
        "contentType": "application/json",
        "correlationId": {
            "description": "the client's request id, copied to every output of the request",
            "location": "$message.payload#/correlation_id",
        },
        "headers": {"$ref": _REF + "Headers"},
        "payload": {"$ref": _REF + type_},
        "tags": [{"name": kind_of(type_)}],
        "bindings": {
            "kafka": {
                "key": {"type": "string", "description": f"the payload's `key`: the value of `{cls.KEY_FIELD}`"},
                "bindingVersion": KAFKA_BINDING,
            }
        },
        "examples": examples(type_),
    }


def _topic_binding(spec: TopicSpec) -> dict[str, Any]:
    config: dict[str, Any] = {
        "cleanup.policy": ["compact" if spec.compact else "delete"],
        "retention.ms": spec.retention_ms if spec.retention_ms is not None else -1,
    }
    return {"topic": spec.name, "partitions": spec.partitions, "topicConfiguration": config}


_PREFIX = {"prefix": {"description": "the deployment's topic prefix (ROOMLOG_TOPIC_PREFIX), empty by default"}}


def channel(spec: TopicSpec) -> dict[str, Any]:
    role, types = TOPIC_TYPES[spec.name]
    return {
        "address": "{prefix}" + spec.name,
        "title": spec.name,
        "description": f"{spec.description}. Keyed by `{spec.key}`; {spec.partitions} partition(s); "
        f"records of one key are in order. Role: {role}.",
        "parameters": _PREFIX,
        "messages": {t: {"$ref": f"#/components/messages/{t}"} for t in types},
        "bindings": {"kafka": {**_topic_binding(spec), "bindingVersion": KAFKA_BINDING}},
        "x-roomlog-key": spec.key,
        "x-roomlog-role": role,
        "x-roomlog-schema": {"$ref": _REF + _union_name(spec.name)},
    }


def dlq_channel(source: TopicSpec) -> dict[str, Any]:
    spec = dlq_spec(source)
    return {
        "address": "{prefix}" + spec.name,
        "title": spec.name,
        "description": f"Dead letters of {source.name}: records a consumer could not parse, value and key "
        "unchanged, with `dlq.reason`, `dlq.detail`, `dlq.source` headers. Empty in a healthy platform.",
        "parameters": _PREFIX,
        "messages": {"DeadLetter": {"$ref": "#/components/messages/DeadLetter"}},
        "bindings": {"kafka": {**_topic_binding(spec), "bindingVersion": KAFKA_BINDING}},
        "x-roomlog-key": spec.key,
        "x-roomlog-role": "dead-letter",
    }


def _union_name(topic: str) -> str:
    return "topic." + topic


def _union(types: list[str] | tuple[str, ...], description: str) -> dict[str, Any]:
    return {"description": description, "oneOf": [{"$ref": _REF + t} for t in types], "discriminator": "type"}


_HEADERS = {
    "type": "object",
    "description": "Kafka record headers (UTF-8 values). Consumers must ignore headers they do not know.",
    "properties": {
        "traceparent": {"type": "string", "description": "W3C trace context of the hop that wrote the record"},
        "type": {"type": "string", "description": "the payload's `type` (skip ticks without parsing)"},
        "schema_version": {"type": "string", "description": "the payload's `schema_version`"},
    },
}
_DEAD_LETTER_HEADERS = {
    "type": "object",
    "properties": {
        "dlq.reason": {
            "type": "string",
            "enum": ["malformed-json", "not-an-object", "unknown-type", "invalid-event"],
        },
        "dlq.detail": {"type": "string", "description": "the parser's message (at most 1,000 characters)"},
        "dlq.source": {"type": "string", "description": "`<topic>/<partition>/<offset>` of the original record"},
    },
    "required": ["dlq.reason", "dlq.detail", "dlq.source"],
}


def _operation(topic: str, role: str) -> dict[str, Any]:
    return {
        "action": "send",
        "title": f"roomlog writes {topic}",
        "channel": {"$ref": f"#/channels/{topic}"},
        "tags": [{"name": role}],
    }


@cache
def document() -> dict[str, Any]:
    """The AsyncAPI document (the same object every call: do not mutate it)."""
    defs: dict[str, Any] = {}
    envelope = envelope_schema(defs)
    payloads = {t: payload_schema(t, envelope, defs) for t in sorted(EVENT_TYPES)}
    clash = defs.keys() & (payloads.keys() | {"Envelope", "Headers"})
    if clash:
        raise ValueError(f"nested schemas named like event types: {sorted(clash)}")
    unions = {
        _union_name(topic): _union(types, f"any record value on {topic}") for topic, (_, types) in TOPIC_TYPES.items()
    }
    schemas = {
        "Envelope": envelope,
        "Headers": _HEADERS,
        "AnyEvent": _union(sorted(EVENT_TYPES), "any record value on any roomlog topic"),
        **unions,
        **payloads,
        **dict(sorted(defs.items())),
    }
    fingerprint = hashlib.sha256(json.dumps(schemas, sort_keys=True).encode()).hexdigest()[:12]
    channels = {spec.name: channel(spec) for spec in REGISTRY}
    channels |= {f"{spec.name}.dlq": dlq_channel(spec) for spec in REGISTRY if spec.dlq}
    messages = {t: message(t) for t in sorted(EVENT_TYPES)}
    messages["DeadLetter"] = {
        "name": "DeadLetter",
        "summary": "an unparsable record, moved aside unchanged",
        "contentType": "application/octet-stream",
        "headers": _DEAD_LETTER_HEADERS,
        "payload": {"description": "the original record's value, byte for byte (it may not be JSON)"},
    }
    return {
        "asyncapi": "3.0.0",
        "id": "urn:roomlog:event-log",
        "info": {
            "title": "roomlog event log",
            "version": f"{SCHEMA_VERSION}.0.0+{fingerprint}",
            "description": _DESCRIPTION,
        },
        "defaultContentType": "application/json",
        "servers": {
            "kafka": {
                "host": "{bootstrap}",
                "protocol": "kafka",
                "description": "the deployment's Kafka bootstrap servers (KAFKA_BOOTSTRAP)",
                "variables": {"bootstrap": {"default": "localhost:9092"}},
            }
        },
        "channels": channels,
        "operations": {f"{topic}.send": _operation(topic, role) for topic, (role, _) in TOPIC_TYPES.items()},
        "components": {"schemas": schemas, "messages": messages},
    }


def render() -> str:
    """The document as committed: 2-space indented JSON, one trailing newline."""
    return json.dumps(document(), indent=2, ensure_ascii=False) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m producers.asyncapi", description=__doc__)
    parser.add_argument("--check", action="store_true", help="fail if docs/asyncapi.json is out of date")
    parser.add_argument("--output", type=Path, default=DOC_PATH)
    args = parser.parse_args(argv)
    text = render()
    if args.check:
        current = args.output.read_text() if args.output.exists() else ""
        if current != text:
            print(f"{args.output} is out of date: run `python -m producers.asyncapi`")
            return 1
        print(f"{args.output} is up to date")
        return 0
    args.output.write_text(text)
    print(f"wrote {args.output}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
