"""The one discriminated union of every event and command, and the JSON codec.

``decode`` parses any payload on any roomlog topic into its frozen model; ``encode``
is its inverse. Unknown ``type`` values and malformed payloads raise ``DecodeError``
with a reason a dead-letter record can carry.
"""

from __future__ import annotations

import inspect
import json
from types import ModuleType
from typing import Annotated, Any, TypeVar, Union

from pydantic import Field, TypeAdapter, ValidationError

from producers import media, recordings, rtc, sessions, stations
from producers.envelope import Event
from producers.errors import DecodeError


def _concrete_types(*modules: ModuleType) -> dict[str, type[Event]]:
    found: dict[str, type[Event]] = {}
    for module in modules:
        for _, obj in inspect.getmembers(module, inspect.isclass):
            if not issubclass(obj, Event) or obj.__module__ != module.__name__:
                continue
            default = obj.model_fields["type"].default
            if isinstance(default, str) and default == obj.__name__:
                found[default] = obj
    return found


#: Every concrete event/command type by its ``type`` string.
EVENT_TYPES: dict[str, type[Event]] = _concrete_types(rtc, media, sessions, recordings, stations)

AnyEvent = Annotated[Union[tuple(EVENT_TYPES.values())], Field(discriminator="type")]  # type: ignore[valid-type]  # noqa: UP007
_ADAPTER: TypeAdapter[Event] = TypeAdapter(AnyEvent)  # type: ignore[arg-type]

E = TypeVar("E", bound=Event)


def encode(event: Event) -> bytes:
    """Serialize an event to compact JSON bytes (includes the computed ``key``)."""
    return event.model_dump_json().encode()


def decode(payload: bytes | str) -> Event:
    """Parse a payload from any roomlog topic."""
    try:
        raw: Any = json.loads(payload)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise DecodeError("malformed-json", str(exc)) from exc
    if not isinstance(raw, dict):
        raise DecodeError("not-an-object", f"expected a JSON object, got {type(raw).__name__}")
    type_ = raw.get("type")
    if type_ not in EVENT_TYPES:
        raise DecodeError("unknown-type", f"unknown event type {type_!r}")
    try:
        return _ADAPTER.validate_python(raw)
    except ValidationError as exc:
        raise DecodeError("invalid-event", exc.errors(include_url=False).__repr__()) from exc


def decode_as(payload: bytes | str, expected: type[E]) -> E:
    """Parse and check the payload is of the expected type."""
    event = decode(payload)
    if not isinstance(event, expected):
        raise DecodeError("unexpected-type", f"expected {expected.__name__}, got {event.type}")
    return event
