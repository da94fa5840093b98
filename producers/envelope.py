"""The envelope every event and command carries, and deterministic ids.

An output's ``event_id`` is derived from its cause (uuid5 of the cause's id, the
output's index and type), so reprocessing a message after a crash produces the same
ids and downstream consumers deduplicate them.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any, ClassVar, Self

from pydantic import BaseModel, ConfigDict, Field, computed_field

#: Namespace for deterministic output ids (uuid5).
ROOMLOG_NS = uuid.UUID("6f1c2a7e-3b1d-5f0e-9a55-7d0c8e2b4a10")

SCHEMA_VERSION = 1


def utcnow() -> datetime:
    """The current UTC time. Only I/O edges call this; decisions take time from events."""
    return datetime.now(UTC)


def derived_id(cause_id: uuid.UUID | str, index: int, type_: str) -> uuid.UUID:
    """The id of the ``index``-th output of type ``type_`` caused by ``cause_id``."""
    return uuid.uuid5(ROOMLOG_NS, f"{cause_id}:{index}:{type_}")


class Event(BaseModel):
    """Base of every event and command on the log.

    Subclasses set ``type`` to a ``Literal`` and ``KEY_FIELD`` to the field that is the
    Kafka partition key. Unknown fields are ignored when parsing, so a payload written
    by a newer producer (which may only add optional fields) still parses.
    """

    model_config = ConfigDict(frozen=True, extra="ignore")

    KEY_FIELD: ClassVar[str] = "room_id"

    event_id: uuid.UUID
    type: str
    schema_version: int = SCHEMA_VERSION
    occurred_at: datetime
    correlation_id: str | None = Field(default=None, max_length=128)
    causation_id: uuid.UUID | None = None

    @computed_field  # type: ignore[prop-decorator]
    @property
    def key(self) -> str:
        """The partition key (room id, node id, user id, ... by type)."""
        return str(getattr(self, self.KEY_FIELD))

    @classmethod
    def new(
        cls,
        *,
        occurred_at: datetime | None = None,
        correlation_id: str | None = None,
        **fields: Any,
    ) -> Self:
        """A fresh event at an I/O edge (gateway, node): random id, wall-clock time."""
        return cls(
            event_id=uuid.uuid4(),
            occurred_at=occurred_at or utcnow(),
            correlation_id=correlation_id,
            **fields,
        )

    @classmethod
    def caused_by(cls, cause: Event, index: int = 0, **fields: Any) -> Self:
        """An output of ``cause``: deterministic id, the cause's time and correlation."""
        type_ = cls.model_fields["type"].default
        fields.setdefault("occurred_at", cause.occurred_at)
        return cls(
            event_id=derived_id(cause.event_id, index, type_),
            correlation_id=cause.correlation_id,
            causation_id=cause.event_id,
            **fields,
        )
