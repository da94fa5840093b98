"""Project ``presence.facts`` into the Postgres ``presence`` table (the lobby's read model).

Idempotent and order-safe: an upsert per user that only moves forward in time
(``changed_at``), so re-delivered or older facts leave the newest row in place.
Retried with backoff while Postgres is down: an outage delays, never loses.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from typing import Any

from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncEngine

from db.models import Presence
from producers.catalog import decode
from producers.errors import DecodeError
from producers.sessions import PresenceChanged
from streams.projection import POSTGRES_UNAVAILABLE

log = logging.getLogger(__name__)

_INSERT = insert(Presence)
UPSERT = _INSERT.on_conflict_do_update(
    index_elements=["user_id"],
    set_={c: _INSERT.excluded[c] for c in ("name", "status", "changed_at", "last_event_id")},
    where=Presence.changed_at <= _INSERT.excluded.changed_at,
)


def rows(raw: Sequence[bytes]) -> list[dict[str, Any]]:
    """The newest ``PresenceChanged`` per user in a batch, as rows."""
    latest: dict[str, dict[str, Any]] = {}
    for payload in raw:
        try:
            event = decode(payload)
        except DecodeError:
            continue  # presence.facts is written by streams only
        if isinstance(event, PresenceChanged):
            latest[event.user_id] = {
                "user_id": event.user_id,
                "name": event.name,
                "status": event.status,
                "changed_at": event.occurred_at,
                "last_event_id": str(event.event_id),
            }
    return list(latest.values())


async def project_presence(engine: AsyncEngine, raw: Sequence[bytes]) -> None:
    batch = rows(raw)
    delay = 0.2
    while batch:
        try:
            async with engine.begin() as conn:
                await conn.execute(UPSERT, batch)
            return
        except POSTGRES_UNAVAILABLE as exc:
            log.warning("presence projection retry in %.1fs: %s", delay, exc)
            await asyncio.sleep(delay)
            delay = min(5.0, delay * 2)
