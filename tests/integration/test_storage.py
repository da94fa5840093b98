"""MinIO object put/get and Alembic upgrade/downgrade on the real servers."""

from __future__ import annotations

import io
import os
import subprocess
import sys

import sqlalchemy as sa
from minio import Minio

from db.engine import make_engine
from tests.harness import REPO, Infra, unique

TABLES = {"rooms", "room_members", "recordings", "quality_stats", "stations", "station_commands"}


def test_minio_put_get(infra: Infra) -> None:
    client = Minio(
        infra.minio_endpoint, access_key=infra.minio_access_key, secret_key=infra.minio_secret_key, secure=False
    )
    bucket = unique("test-")
    client.make_bucket(bucket)
    data = os.urandom(300_000)
    client.put_object(bucket, "segments/0001.webm", io.BytesIO(data), len(data), content_type="video/webm")
    response = client.get_object(bucket, "segments/0001.webm")
    try:
        assert response.read() == data
    finally:
        response.close()
        response.release_conn()
    stat = client.stat_object(bucket, "segments/0001.webm")
    assert stat.size == len(data) and stat.content_type == "video/webm"
    client.remove_object(bucket, "segments/0001.webm")
    client.remove_bucket(bucket)


def _migrate(infra: Infra, *args: str) -> None:
    env = {**os.environ, "PYTHONPATH": str(REPO), "DATABASE_URL": infra.database_url}
    subprocess.run(
        [sys.executable, "-m", "db.migrate", *args], env=env, cwd=REPO, check=True, timeout=120, capture_output=True
    )


async def _tables(infra: Infra) -> set[str]:
    engine = make_engine(infra.database_url)
    try:
        async with engine.connect() as conn:
            rows = await conn.execute(sa.text("select tablename from pg_tables where schemaname = 'public'"))
            return {r[0] for r in rows} & TABLES
    finally:
        await engine.dispose()


async def test_alembic_downgrade_then_upgrade(infra: Infra) -> None:
    assert await _tables(infra) == TABLES
    try:
        _migrate(infra, "downgrade", "base")
        assert await _tables(infra) == set()
    finally:
        _migrate(infra, "upgrade", "head")
    assert await _tables(infra) == TABLES
