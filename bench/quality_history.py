"""How fast the quality history projection writes samples into Postgres.

``python -m bench.quality_history [--json] [--samples N] [--legs L]``

Phases (real Postgres and Kafka, ``bench.infra.servers``):

- ``db``: ``write_samples`` on batches of ``--batch`` (500, the worker's batch) samples of
  ``--legs`` distinct legs (40,000 = 20,000 subscribers' video and audio legs at one sample
  per 2 s): one SQL statement per batch; then the same batches again (all re-delivered:
  every sample dropped by its event id).
- ``projection``: ``--samples`` samples are put on ``quality.samples`` first (a backlog),
  then the projection agent alone drains them on the streams driver in this process: Kafka
  fetch, validation, one statement per batch. Time from its start until every sample is in
  ``quality_stats`` (``sum(samples)``), startup included.
- ``worker``: the same with a whole ``python -m streams`` worker, where the quality agent
  reads the same samples beside the projection, as in production.

JSON keys: ``db_samples_per_s``, ``db_redelivered_per_s``, ``projection_samples_per_s``,
``worker_samples_per_s``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import sys
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import text

from bench.infra import Servers, say, servers
from bench.procs import Child, machine
from db.engine import make_engine
from producers.admin import create_topics
from producers.kafka import EventProducer
from producers.media import QualitySample
from producers.topics import Topics
from streams.driver import DrivenAgent, Driver, DriverSettings
from streams.quality_projection import QualityProjection, bucket_of, write_samples


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m bench.quality_history",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--json", action="store_true", help="one line of JSON on stdout")
    p.add_argument("--samples", type=int, default=100_000, help="samples per phase")
    p.add_argument("--legs", type=int, default=40_000, help="distinct legs the samples cycle over")
    p.add_argument("--rooms", type=int, default=2_000, help="rooms the legs are spread over")
    p.add_argument("--batch", type=int, default=500, help="samples per statement in the db phase")
    p.add_argument("--timeout", type=float, default=600.0, help="seconds the worker phase may take")
    p.add_argument("--phases", default="db,projection,worker", help="which phases to run (comma-separated)")
    return p.parse_args(argv)


def make_samples(run: str, n: int, legs: int, rooms: int, start: datetime) -> list[QualitySample]:
    """``n`` samples, leg after leg, each leg every 2 s of sample time (5 per 10 s bucket)."""
    out = []
    for i in range(n):
        leg, round_ = i % legs, i // legs
        out.append(
            QualitySample.new(
                occurred_at=start + timedelta(seconds=2 * round_),
                room_id=f"{run}-r{leg % rooms}",
                peer_id=f"p{leg // 2}",
                leg=f"sub/cam{leg % 2}",
                loss_pct=(i % 7) * 1.5,
                rtt_ms=20 + i % 11,
                jitter_ms=2.0,
                bitrate_kbps=450.0,
                packets=90,
                nacks=i % 3,
                plis=0,
                layer="high",
                layers=["low", "mid", "high"],
                bandwidth_kbps=900.0,
                kind="video",
                source_id=f"cam{leg % 2}",
                publisher_peer_id="pub",
            )
        )
    return out


async def projected(database_url: str, run: str) -> int:
    engine = make_engine(database_url)
    try:
        async with engine.connect() as conn:
            return int(
                (
                    await conn.execute(
                        text("SELECT coalesce(sum(samples), 0) FROM quality_stats WHERE room_id LIKE :p"),
                        {"p": f"{run}-%"},
                    )
                ).scalar_one()
            )
    finally:
        await engine.dispose()


async def db_phase(database_url: str, args: argparse.Namespace) -> dict[str, Any]:
    run = f"qhdb-{uuid.uuid4().hex[:8]}"
    samples = make_samples(run, args.samples, args.legs, args.rooms, bucket_of(datetime.now(UTC)))
    batches = [samples[i : i + args.batch] for i in range(0, len(samples), args.batch)]
    engine = make_engine(database_url)
    out: dict[str, Any] = {}
    try:
        for name in ("db", "db_redelivered"):
            start = time.perf_counter()
            for batch in batches:
                async with engine.begin() as conn:
                    await write_samples(conn, batch)
            seconds = time.perf_counter() - start
            out[f"{name}_samples_per_s" if name == "db" else "db_redelivered_per_s"] = round(len(samples) / seconds)
            say(f"{name}: {len(samples)} samples in {seconds:.1f} s")
    finally:
        await engine.dispose()
    total = await projected(database_url, run)
    assert total == len(samples), f"{total} samples in Postgres, {len(samples)} written (twice)"
    return out


async def backlog(kafka: str, prefix: str, samples: list[QualitySample]) -> Topics:
    await create_topics(kafka, prefix, quiet=True)
    topics = Topics(prefix)
    say(f"producing a backlog of {len(samples)} samples on {topics.name('quality.samples')}")
    async with EventProducer(kafka, client_id="bench") as producer:
        pending = [await producer.send_soon(topics.name("quality.samples"), s) for s in samples]
        await asyncio.gather(*pending)
    return topics


async def drain(database_url: str, run: str, total: int, timeout: float, alive: Any) -> tuple[int, float]:
    """Poll Postgres until ``total`` samples of ``run`` are in; (done, seconds)."""
    start = time.perf_counter()
    done = 0
    while time.perf_counter() - start < timeout:
        done = await projected(database_url, run)
        if done >= total:
            break
        alive()
        await asyncio.sleep(0.5)
    return done, time.perf_counter() - start


async def projection_phase(kafka: str, database_url: str, args: argparse.Namespace) -> dict[str, Any]:
    """The projection agent alone, in this process, on the streams driver."""
    run = f"qhp-{uuid.uuid4().hex[:8]}"
    samples = make_samples(run, args.samples, args.legs, args.rooms, bucket_of(datetime.now(UTC)))
    topics = await backlog(kafka, f"{run}-", samples)
    engine = make_engine(database_url)
    projection = QualityProjection(lambda: engine)
    driver = Driver(
        DriverSettings(bootstrap=kafka, app_id=f"{run}-streams"),
        [DrivenAgent("quality-projection", [topics.name("quality.samples")], [], projection.samples)],
    )
    await driver.start()
    try:
        done, seconds = await drain(database_url, run, len(samples), args.timeout, lambda: None)
    finally:
        await driver.stop()
        await engine.dispose()
    say(f"projection agent alone: {done} of {len(samples)} samples in {seconds:.1f} s (startup included)")
    return {"projection_samples_per_s": round(done / seconds), "projection_seconds": round(seconds, 1)}


async def worker_phase(kafka: str, database_url: str, args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    run = f"qhw-{uuid.uuid4().hex[:8]}"
    prefix = f"{run}-"
    samples = make_samples(run, args.samples, args.legs, args.rooms, bucket_of(datetime.now(UTC)))
    await backlog(kafka, prefix, samples)
    env = {
        "KAFKA_BOOTSTRAP": kafka,
        "DATABASE_URL": database_url,
        "ROOMLOG_TOPIC_PREFIX": prefix,
        "ROOMLOG_STREAMS_APP_ID": f"{prefix}streams",
        "ROOMLOG_STREAMS_DATA_DIR": str(workdir),
    }
    worker = Child("worker", "streams", env, workdir).start()

    def alive() -> None:
        if not worker.alive():
            raise RuntimeError(f"worker exited; see {worker.log_path}")

    try:
        done, seconds = await drain(database_url, run, len(samples), args.timeout, alive)
    finally:
        worker.stop(30)
    say(f"worker: {done} of {len(samples)} samples projected in {seconds:.1f} s")
    return {
        "worker_samples_per_s": round(done / seconds),
        "worker_samples_projected": done,
        "worker_seconds": round(seconds, 1),
    }


async def measure(args: argparse.Namespace, srv: Servers) -> dict[str, Any]:
    workdir = srv.run_dir / "work" / f"quality-history-{uuid.uuid4().hex[:6]}"
    workdir.mkdir(parents=True)
    result: dict[str, Any] = {}
    phases = set(args.phases.split(","))
    if "db" in phases:
        result.update(await db_phase(srv.database_url, args))
    if "projection" in phases:
        result.update(await projection_phase(srv.kafka, srv.database_url, args))
    if "worker" in phases:
        result.update(await worker_phase(srv.kafka, srv.database_url, args, workdir))
    loadavg = " ".join(Path("/proc/loadavg").read_text().split()[:3])  # noqa: ASYNC240 - procfs
    result.update(
        machine={**machine(), "loadavg_at_end": loadavg}, config={k: v for k, v in vars(args).items() if k != "json"}
    )
    return result


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.getLogger("aiokafka").setLevel(logging.ERROR)
    with servers() as srv:
        result = asyncio.run(measure(args, srv))
    print(json.dumps(result) if args.json else json.dumps(result, indent=2), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
