"""What the api's routes depend on, built once in ``create_app`` (the wiring point)."""

from __future__ import annotations

import hmac
from dataclasses import dataclass

from fastapi import Depends, Header, Request
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from api.errors import Unauthorized
from api.hub import Hub
from api.presence_feed import PresenceFeed
from api.sessions import SessionLog
from api.settings import ApiSettings
from api.stations_feed import StationsFeed
from api.stations_heartbeats import HeartbeatWriter
from api.tokens import Claims, TokenIssuer
from observability import metrics
from producers.envelope import Event
from producers.kafka import EventProducer
from producers.topics import Topics


@dataclass
class Services:
    settings: ApiSettings
    producer: EventProducer
    engine: AsyncEngine
    sessions: async_sessionmaker[AsyncSession]
    issuer: TokenIssuer
    topics: Topics
    hub: Hub
    presence: PresenceFeed | None = None
    stations: StationsFeed | None = None
    #: Station heartbeats, written by one task (``None``: each written as it comes).
    heartbeats: HeartbeatWriter | None = None
    #: The session events of every socket, written by one task (``api/sessions.py``).
    session_log: SessionLog | None = None

    async def publish(self, topic: str, event: Event) -> None:
        """Write an intent to the log and wait for the broker's acknowledgement."""
        await self.producer.send(self.topics.name(topic), event)
        metrics.API_INTENTS.labels(event.type).inc()


def services(request: Request) -> Services:
    svc: Services = request.app.state.services
    return svc


def request_id(x_request_id: str | None = Header(default=None, max_length=128)) -> str | None:
    return x_request_id


def bearer_token(authorization: str | None) -> str:
    if not authorization:
        raise Unauthorized("missing Authorization: Bearer <token>")
    scheme, _, token = authorization.partition(" ")
    if scheme.lower() != "bearer" or not token:
        raise Unauthorized("expected Authorization: Bearer <token>")
    return token.strip()


def claims(authorization: str | None = Header(default=None), svc: Services = Depends(services)) -> Claims:
    return svc.issuer.verify(bearer_token(authorization))


def api_secret(x_api_secret: str | None = Header(default=None), svc: Services = Depends(services)) -> None:
    expected = svc.settings.api_secret.get_secret_value()
    if not x_api_secret or not hmac.compare_digest(x_api_secret.encode(), expected.encode()):
        raise Unauthorized("missing or wrong X-API-Secret")
