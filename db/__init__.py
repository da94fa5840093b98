"""Postgres read models projected from the Kafka log, plus engine and migrations."""

from db.engine import DbSettings, make_engine, make_sessionmaker
from db.models import (
    Base,
    QualityDecision,
    QualityStat,
    Recording,
    Room,
    RoomMember,
    Station,
    StationCommand,
)

__all__ = [
    "Base",
    "DbSettings",
    "QualityDecision",
    "QualityStat",
    "Recording",
    "Room",
    "RoomMember",
    "Station",
    "StationCommand",
    "make_engine",
    "make_sessionmaker",
]
