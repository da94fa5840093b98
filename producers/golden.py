"""Golden JSON fixtures: one or more per event type, append-only, hash-checked.

``python -m producers.golden write`` adds a fixture for every type that has none and
appends its hash to ``fixtures/MANIFEST.sha256``. It never rewrites an existing
fixture: old payloads must keep parsing as the schema grows (new fields optional).
``python -m producers.golden check`` verifies every fixture against the manifest
and that each parses.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import types
import typing
import uuid
from datetime import UTC, datetime
from enum import Enum
from pathlib import Path
from typing import Any, Literal, get_args, get_origin

from pydantic import BaseModel
from pydantic.fields import FieldInfo

from producers.catalog import EVENT_TYPES, decode
from producers.envelope import SCHEMA_VERSION, Event

FIXTURES = Path(__file__).parent / "fixtures"
MANIFEST = FIXTURES / "MANIFEST.sha256"
_EPOCH = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def read_manifest() -> dict[str, str]:
    if not MANIFEST.exists():
        return {}
    entries: dict[str, str] = {}
    for line in MANIFEST.read_text().splitlines():
        if line.strip():
            digest, name = line.split(maxsplit=1)
            entries[name] = digest
    return entries


def _example(annotation: Any, name: str, info: FieldInfo | None = None) -> Any:
    origin = get_origin(annotation)
    if origin is typing.Annotated:
        return _example(get_args(annotation)[0], name, info)
    if origin is Literal:
        return get_args(annotation)[0]
    if origin in (typing.Union, types.UnionType):
        non_none = [a for a in get_args(annotation) if a is not type(None)]
        return _example(non_none[0], name, info)
    if origin is list:
        return [_example(get_args(annotation)[0], name)]
    if origin is dict:
        return {"example": "value"}
    if isinstance(annotation, type):
        if issubclass(annotation, BaseModel):
            return {k: _example(f.annotation, k, f) for k, f in annotation.model_fields.items()}
        if issubclass(annotation, Enum):
            return next(iter(annotation)).value
        if annotation is bool:
            return True
        if annotation is int:
            return 2
        if annotation is float:
            return 1.5
        if annotation is datetime:
            return _EPOCH.isoformat()
        if annotation is uuid.UUID:
            return str(uuid.uuid5(uuid.NAMESPACE_URL, f"roomlog:{name}"))
        if annotation is str:
            if name == "sdp":
                return "v=0\r\no=- 0 0 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\n"
            return f"{name.replace('_', '-')}-1"
    raise TypeError(f"no example for {name}: {annotation!r}")


def example_payload(cls: type[Event]) -> dict[str, Any]:
    """A complete, valid payload for ``cls`` with every field filled."""
    payload = {k: _example(f.annotation, k, f) for k, f in cls.model_fields.items() if k != "type"}
    payload["type"] = cls.model_fields["type"].default
    payload["occurred_at"] = _EPOCH.isoformat()
    payload["schema_version"] = SCHEMA_VERSION
    return payload


def write_missing() -> list[Path]:
    FIXTURES.mkdir(exist_ok=True)
    manifest = read_manifest()
    written: list[Path] = []
    for type_, cls in sorted(EVENT_TYPES.items()):
        if any(name.startswith(f"{type_}.") for name in manifest):
            continue
        path = FIXTURES / f"{type_}.v1.json"
        event = decode(json.dumps(example_payload(cls)))
        path.write_text(event.model_dump_json(indent=2) + "\n")
        with MANIFEST.open("a") as fh:
            fh.write(f"{sha256(path)}  {path.name}\n")
        written.append(path)
    return written


def check() -> list[str]:
    """Every problem found; empty means the fixtures are intact."""
    problems: list[str] = []
    manifest = read_manifest()
    files = {p.name for p in FIXTURES.glob("*.json")}
    for name in sorted(files - manifest.keys()):
        problems.append(f"{name}: not in the manifest")
    for name, digest in manifest.items():
        path = FIXTURES / name
        if not path.exists():
            problems.append(f"{name}: in the manifest but missing (fixtures are append-only)")
            continue
        if sha256(path) != digest:
            problems.append(f"{name}: hash differs from the manifest (fixtures are append-only)")
        try:
            decode(path.read_bytes())
        except ValueError as exc:
            problems.append(f"{name}: does not parse: {exc}")
    covered = {name.split(".", 1)[0] for name in manifest}
    for type_ in sorted(EVENT_TYPES.keys() - covered):
        problems.append(f"{type_}: no golden fixture (run `python -m producers.golden write`)")
    return problems


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m producers.golden", description=__doc__)
    parser.add_argument("action", choices=["write", "check"])
    args = parser.parse_args(argv)
    if args.action == "write":
        for path in write_missing():
            print(f"wrote {path.name}")
        return 0
    problems = check()
    for problem in problems:
        print(problem)
    print("fixtures ok" if not problems else f"{len(problems)} problem(s)")
    return 1 if problems else 0


if __name__ == "__main__":
    raise SystemExit(main())
