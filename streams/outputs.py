"""What a decision emits: events bound for logical topics, with deterministic ids."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, TypeVar

from producers.envelope import Event, derived_id

E = TypeVar("E", bound=Event)


@dataclass(frozen=True)
class Output:
    topic: str
    event: Event
    partition: int | None = None


@dataclass
class Outputs:
    """Numbers a decision's outputs so each gets ``uuid5(cause, scope, index, type)``.

    ``scope`` separates the outputs of one cause applied to several keys (a tick that
    times out peers in many rooms).
    """

    cause: Event
    scope: str
    at: datetime
    items: list[Output] = field(default_factory=list)

    def add(self, topic: str, cls: type[E], **fields: Any) -> E:
        type_ = cls.model_fields["type"].default
        event = cls(
            event_id=derived_id(self.cause.event_id, len(self.items), f"{self.scope}:{type_}"),
            occurred_at=self.at,
            correlation_id=self.cause.correlation_id,
            causation_id=self.cause.event_id,
            **fields,
        )
        self.items.append(Output(topic, event))
        return event

    def facts(self) -> list[Event]:
        return [o.event for o in self.items if o.topic == "rtc.facts"]
