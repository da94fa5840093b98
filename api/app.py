"""``create_app(settings)``: the api's wiring point."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager

from fastapi import FastAPI, Request, Response

from api import access, errors, health, ice, quality, recordings, rooms, rtc, station_socket, stations, web, whep
from api.calls import router as calls_router
from api.contract import router as contract_router
from api.hub import Hub
from api.presence import router as presence_router
from api.presence_feed import PresenceFeed
from api.services import Services
from api.sessions import SessionLog
from api.settings import ApiSettings
from api.stations_feed import StationsFeed
from api.stations_heartbeats import HeartbeatWriter
from api.tokens import TokenIssuer
from db.engine import make_engine, make_sessionmaker
from observability import metrics, tracing
from producers.kafka import EventProducer
from producers.topics import Topics

#: Paths the FastAPI instrumentation leaves alone (regexes searched in the URL, no query).
UNTRACED_PATHS = ("/v1/rtc$", "/v1/station$", "/metrics$", "/healthz$", "/readyz$")


def create_app(settings: ApiSettings) -> FastAPI:
    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        producer = EventProducer(
            settings.kafka_bootstrap, client_id=settings.gateway_id, max_batch_size=settings.producer_batch_bytes
        )
        await producer.start()
        engine = make_engine(settings.database_url)
        topics = Topics(settings.topic_prefix)
        hub = Hub(settings.kafka_bootstrap, topics.name("gateway.notifications"), settings.gateway_id)
        await hub.start()
        feed = PresenceFeed(settings.kafka_bootstrap, topics.name("presence.facts"), settings.gateway_id)
        await feed.start()
        station_feed = StationsFeed(settings.kafka_bootstrap, topics.name("station.events"), settings.gateway_id)
        await station_feed.start()
        heartbeats = HeartbeatWriter(producer, topics.name("station.events"), settings.gateway_id)
        await heartbeats.start()
        session_log = SessionLog(producer, topics.name("session.events"), settings.gateway_id, settings.session_ping_s)
        await session_log.start()
        app.state.services = Services(
            settings=settings,
            producer=producer,
            engine=engine,
            sessions=make_sessionmaker(engine),
            issuer=TokenIssuer(settings.jwt_secret.get_secret_value(), settings.jwt_issuer),
            topics=topics,
            hub=hub,
            presence=feed,
            stations=station_feed,
            heartbeats=heartbeats,
            session_log=session_log,
        )
        try:
            yield
        finally:
            await session_log.stop()
            await heartbeats.stop()
            await station_feed.stop()
            await feed.stop()
            await hub.stop()
            await producer.stop()
            await engine.dispose()

    app = FastAPI(
        title="roomlog",
        version="0.1.0",
        lifespan=lifespan,
        description="roomlog gateway: tokens, rooms, signaling. Every change is an "
        "intent on the Kafka log; reads come from projections.",
    )
    errors.install(app)
    app.include_router(health.router)
    app.include_router(contract_router)  # GET /v1/asyncapi.json, no auth
    app.include_router(access.router)
    app.include_router(rooms.router)
    app.include_router(quality.router)
    app.include_router(rtc.router)
    app.include_router(calls_router)
    app.include_router(presence_router)
    app.include_router(ice.router)
    app.include_router(recordings.router)
    app.include_router(stations.router)  # stations: REST (api/stations.py) and the station socket
    app.include_router(station_socket.router)
    app.include_router(whep.router)
    web.install(app)

    @app.middleware("http")
    async def observe(
        request: Request,
        call_next: Callable[[Request], Awaitable[Response]],
    ) -> Response:
        start = time.perf_counter()
        response = await call_next(request)
        route = request.scope.get("route")
        path = getattr(route, "path", "unmatched")
        metrics.API_REQUESTS.labels(request.method, path, str(response.status_code)).inc()
        metrics.API_REQUEST_SECONDS.labels(request.method, path).observe(time.perf_counter() - start)
        return response

    if tracing.enabled():
        # HTTP requests become server spans; the sockets are traced per message (api/rtc.py),
        # not as one span per connection, and probes and scrapes not at all
        from opentelemetry.instrumentation.fastapi import FastAPIInstrumentor

        FastAPIInstrumentor.instrument_app(
            app, excluded_urls=",".join(UNTRACED_PATHS), exclude_spans=["receive", "send"]
        )
    return app
