"""Liveness, readiness (Kafka and Postgres reachable) and Prometheus metrics."""

from __future__ import annotations

import asyncio
from typing import Any

from fastapi import APIRouter, Depends, Response
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from sqlalchemy import text

from api.services import Services, services
from observability import metrics

router = APIRouter(tags=["health"])


@router.get("/healthz")
async def healthz() -> dict[str, str]:
    """The process is up."""
    return {"status": "ok"}


async def _check(coro: Any, timeout: float) -> str:
    try:
        await asyncio.wait_for(coro, timeout=timeout)
    except Exception as exc:  # noqa: BLE001 - any failure means not ready
        return f"error: {type(exc).__name__}: {exc}"[:300]
    return "ok"


async def _postgres(svc: Services) -> None:
    async with svc.engine.connect() as conn:
        await conn.execute(text("select 1"))


async def readiness(svc: Services, timeout: float = 2.0) -> tuple[bool, str, str]:
    """Kafka (the intents topic's metadata) and Postgres answer within ``timeout`` seconds;
    sets ``roomlog_api_ready``."""
    kafka, postgres = await asyncio.gather(
        _check(svc.producer.partitions(svc.topics.name("rtc.intents")), timeout), _check(_postgres(svc), timeout)
    )
    ready = kafka == "ok" and postgres == "ok"
    metrics.API_READY.set(1 if ready else 0)
    return ready, kafka, postgres


@router.get("/readyz")
async def readyz(svc: Services = Depends(services)) -> JSONResponse:
    """Ready when Kafka (the intents topic's metadata) and Postgres answer."""
    ready, kafka, postgres = await readiness(svc)
    return JSONResponse(
        {"status": "ready" if ready else "not-ready", "checks": {"kafka": kafka, "postgres": postgres}},
        status_code=200 if ready else 503,
    )


@router.get("/metrics")
async def prometheus_metrics(svc: Services = Depends(services)) -> Response:
    """Prometheus metrics; each scrape runs the readiness checks first (``roomlog_api_ready``),
    with a timeout shorter than the scrape's (2 s in scripts/infra.sh), so a dead Postgres
    reads as not ready rather than as a failed scrape."""
    await readiness(svc, timeout=1.0)
    return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)
