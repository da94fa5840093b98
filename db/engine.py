"""Async engine and session factory for the read-model database.

Nothing here connects or reads the environment at import time: callers build
``DbSettings()`` in their entry point and pass ``settings.database_url`` down.
"""

from __future__ import annotations

from pydantic_settings import BaseSettings, SettingsConfigDict
from sqlalchemy.ext.asyncio import (
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)

DEFAULT_DATABASE_URL = "postgresql+asyncpg://roomlog:roomlog@127.0.0.1:15432/roomlog"


class DbSettings(BaseSettings):
    """Database connection settings; ``database_url`` comes from ``DATABASE_URL``."""

    model_config = SettingsConfigDict(env_prefix="", extra="ignore", frozen=True)

    database_url: str = DEFAULT_DATABASE_URL


def make_engine(database_url: str, *, echo: bool = False) -> AsyncEngine:
    """Create the async engine. ``database_url`` must use the asyncpg driver."""
    return create_async_engine(database_url, echo=echo, pool_pre_ping=True)


def make_sessionmaker(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    """Session factory whose objects stay readable after commit (no lazy refresh)."""
    return async_sessionmaker(engine, expire_on_commit=False)
