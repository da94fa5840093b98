"""Presence for the lobby: ``GET /v1/presence`` from the Postgres read model, and
``presence`` pushes to sockets that sent ``presence-subscribe``.

Streams decide presence and write ``PresenceChanged`` to ``presence.facts``; every
gateway reads that topic (all partitions, from the end) and forwards each change to its
subscribed sockets. The gateway keeps no presence of its own.
"""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from fastapi import APIRouter, Depends
from pydantic import BaseModel
from sqlalchemy import select

from api.presence_feed import Deliver, PresenceFeed
from api.services import Services, claims, services
from api.tokens import Claims
from db.models import Presence

router = APIRouter(prefix="/v1", tags=["presence"])


class UserPresence(BaseModel):
    user_id: str
    name: str
    status: Literal["online", "busy", "offline"]
    changed_at: datetime


class PresenceList(BaseModel):
    users: list[UserPresence]


async def load(svc: Services, status: str = "available", limit: int = 1000) -> list[UserPresence]:
    query = select(Presence).order_by(Presence.user_id).limit(limit)
    if status == "available":
        query = query.where(Presence.status != "offline")
    elif status != "all":
        query = query.where(Presence.status == status)
    async with svc.sessions() as session:
        rows = (await session.scalars(query)).all()
    return [UserPresence(user_id=r.user_id, name=r.name, status=r.status, changed_at=r.changed_at) for r in rows]


@router.get("/presence", response_model=PresenceList)
async def list_presence(
    _: Claims = Depends(claims),
    svc: Services = Depends(services),
    status: Literal["available", "online", "busy", "offline", "all"] = "available",
) -> PresenceList:
    """Users and their presence (any valid token). ``available`` (default) is everyone
    online or busy; the lobby lists these."""
    return PresenceList(users=await load(svc, status))


async def subscribe(
    svc: Services, feed: PresenceFeed, session_id: str, deliver: Deliver, request_id: str | None
) -> None:
    """Watch changes first, then send the snapshot, so no change falls in between
    (a client keeps the newest ``changed_at`` per user)."""
    feed.watch(session_id, deliver)
    users = await load(svc)
    await deliver(
        {
            "type": "presence",
            "request_id": request_id,
            "snapshot": True,
            "users": [u.model_dump(mode="json") for u in users],
        }
    )
