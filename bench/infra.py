"""The servers a benchmark runs against: the ones in the environment, or its own.

If ``KAFKA_BOOTSTRAP`` and ``DATABASE_URL`` are set, those servers are used as they are.
Otherwise ``scripts/infra.sh up`` starts Kafka, Postgres and MinIO with
``ROOMLOG_RUN_DIR=<repo>/.run/bench``, the schema is migrated, and the same script
stops them (``down``) when the benchmark ends: only what the benchmark started.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import signal
import subprocess
import sys
import uuid
from collections.abc import Callable, Coroutine, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
BENCH_RUN_DIR = REPO / ".run" / "bench"


def say(message: str) -> None:
    """A progress line (stderr: stdout carries only the JSON result)."""
    print(f"[bench] {message}", file=sys.stderr, flush=True)


@dataclass(frozen=True)
class Servers:
    kafka: str
    database_url: str
    #: True when this benchmark started them (and stops them at the end).
    started: bool
    run_dir: Path


def _read_env_file(path: Path) -> dict[str, str]:
    out: dict[str, str] = {}
    for line in path.read_text().splitlines():
        key, sep, value = line.partition("=")
        if sep and key.strip() and not key.lstrip().startswith("#"):
            out[key.strip()] = value.strip()
    return out


def _infra(command: str, run_dir: Path) -> None:
    env = {**os.environ, "ROOMLOG_RUN_DIR": str(run_dir)}
    # the script logs to stdout; stdout of the benchmark is the JSON result only
    subprocess.run(
        [str(REPO / "scripts" / "infra.sh"), command],
        env=env,
        check=True,
        stdout=sys.stderr,
        stderr=sys.stderr,
        cwd=REPO,
    )


def migrate(database_url: str) -> None:
    env = {**os.environ, "DATABASE_URL": database_url, "PYTHONPATH": str(REPO)}
    subprocess.run(
        [sys.executable, "-m", "db.migrate", "upgrade", "head"],
        env=env,
        check=True,
        stdout=sys.stderr,
        stderr=sys.stderr,
        cwd=REPO,
    )


async def _schema_present(database_url: str) -> bool:
    import sqlalchemy as sa

    from db.engine import make_engine

    engine = make_engine(database_url)
    try:
        async with engine.connect() as conn:
            found = (await conn.execute(sa.text("select to_regclass('public.room_members')"))).scalar()
    finally:
        await engine.dispose()
    return found is not None


@contextmanager
def servers(run_dir: Path = BENCH_RUN_DIR) -> Iterator[Servers]:
    """The servers in the environment (``KAFKA_BOOTSTRAP`` + ``DATABASE_URL``), or our own
    from ``scripts/infra.sh`` in ``run_dir``, stopped on the way out."""
    kafka, database_url = os.environ.get("KAFKA_BOOTSTRAP"), os.environ.get("DATABASE_URL")
    if kafka and database_url:
        say(f"using running servers: kafka {kafka}, postgres {database_url.rsplit('@', 1)[-1]}")
        if not asyncio.run(_schema_present(database_url)):
            say("read-model tables missing: migrating")
            migrate(database_url)
        yield Servers(kafka, database_url, started=False, run_dir=run_dir)
        return
    run_dir.mkdir(parents=True, exist_ok=True)
    say(f"KAFKA_BOOTSTRAP/DATABASE_URL not set: starting servers in {run_dir}")
    try:
        _infra("up", run_dir)
        env = _read_env_file(run_dir / "infra.env")
        kafka, database_url = env["KAFKA_BOOTSTRAP"], env["DATABASE_URL"]
        migrate(database_url)
        yield Servers(kafka, database_url, started=True, run_dir=run_dir)
    finally:
        say("stopping the servers this benchmark started")
        _infra("down", run_dir)


Measure = Callable[[Servers, str], Coroutine[Any, Any, dict[str, Any]]]


def raise_interrupt(signum: int, frame: Any) -> None:
    """A SIGTERM handler: unwind like Ctrl-C, so children, topics and servers are cleaned up."""
    raise KeyboardInterrupt(f"signal {signum}")


def run_bench(measure: Measure, *, as_json: bool) -> int:
    """The main of a benchmark on the log: aiokafka's retry warnings off (fresh topics elect
    leaders), SIGTERM unwinds like Ctrl-C (children, topics and servers are cleaned up), a run
    id, the servers (started outside the event loop when none are given), ``measure`` under
    uvloop, and one JSON object on stdout."""
    logging.getLogger("aiokafka").setLevel(logging.ERROR)
    signal.signal(signal.SIGTERM, raise_interrupt)
    os.environ.setdefault("PYTHONPATH", str(REPO))
    run_id = f"bench-{uuid.uuid4().hex[:8]}"
    say(f"run {run_id}")
    with servers() as srv:
        try:
            import uvloop

            result = uvloop.run(measure(srv, run_id))
        except ImportError:
            result = asyncio.run(measure(srv, run_id))
    print(json.dumps(result) if as_json else json.dumps(result, indent=2), flush=True)
    return 0
