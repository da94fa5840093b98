"""The measurements of ``bench.log_throughput``: latency at a fixed offered rate, and the
maximum rate of one process draining a backlog, each through a streams worker or
through the echo baseline.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from aiokafka.admin import AIOKafkaAdminClient

from bench.infra import Servers, say
from bench.load import RoomMix, Watch, backlog, latency_summary, paced
from bench.procs import Child, CpuMeter, CpuSampler
from db.engine import make_engine
from media_node.heartbeat import Heartbeat
from producers.admin import create_topics
from producers.kafka import EventProducer
from producers.rtc import CreateRoomRequested
from producers.topics import Topics

READY_TIMEOUT_S = 120.0


@dataclass
class Bench:
    """One benchmark run: its servers, ids, children and options."""

    servers: Servers
    run_id: str
    workdir: Path
    rate: float
    duration: float
    warmup: float
    rooms: int
    max_peers: int
    max_events: int
    media_nodes: int = 1
    worker_env: dict[str, str] = field(default_factory=dict)
    children: list[Child] = field(default_factory=list)
    producer: EventProducer | None = None
    bulk: EventProducer | None = None

    async def start(self) -> None:
        self.producer = EventProducer(self.servers.kafka, client_id="roomlog-bench")
        self.bulk = EventProducer(self.servers.kafka, client_id="roomlog-bench-bulk", linger_ms=20)
        await self.producer.start()
        await self.bulk.start()

    async def topics(self, phase: str) -> Topics:
        prefix = f"{self.run_id}-{phase}-"
        await create_topics(self.servers.kafka, prefix, quiet=True)
        return Topics(prefix)

    def mix(self, phase: str, seed: int) -> RoomMix:
        return RoomMix(f"{self.run_id}-{phase}", self.rooms, self.max_peers, seed)

    def start_media_nodes(self, topics: Topics) -> list[asyncio.Task[None]]:
        """Heartbeat like ``media_node`` processes (1/s), so rooms get placed on a live
        node as in production, instead of asking for placement on every join."""
        assert self.producer is not None
        return [
            asyncio.create_task(
                Heartbeat(
                    self.producer, topics.name("media.nodes"), f"{topics.prefix}node{i}", f"127.0.0.1:{41000 + i}", 1.0
                ).run()
            )
            for i in range(self.media_nodes)
        ]

    def worker(
        self, phase: str, topics: Topics, *, projection: bool, profile: tuple[str, Path, list[str]] | None = None
    ) -> Child:
        app_id = f"{topics.prefix}streams"
        env = {
            "KAFKA_BOOTSTRAP": self.servers.kafka,
            "DATABASE_URL": self.servers.database_url,
            "ROOMLOG_TOPIC_PREFIX": topics.prefix,
            "ROOMLOG_STREAMS_APP_ID": app_id,
            "ROOMLOG_STREAMS_LOG_LEVEL": "warning",
            "ROOMLOG_STREAMS_PROJECT_TO_POSTGRES": "true" if projection else "false",
            **self.worker_env,
        }
        if profile is None:
            child = Child(f"streams-{phase}", "streams", env, self.workdir / phase)
        else:
            kind, out, path = profile
            child = Child(
                f"streams-{phase}",
                "bench.profile_worker",
                env,
                self.workdir / phase,
                args=["--out", str(out), "--profiler", kind],
                extra_pythonpath=path,
            )
        self.children.append(child.start())
        say(
            f"{phase}: started streams worker pid {child.pid} (app id {app_id}, "
            f"projection {'on' if projection else 'off'})"
        )
        return child

    def echo(self, phase: str, topics: Topics) -> Child:
        args = [
            "--bootstrap",
            self.servers.kafka,
            "--source",
            topics.name("rtc.intents"),
            "--target",
            topics.name("rtc.facts"),
            "--group",
            f"{topics.prefix}echo",
        ]
        child = Child(f"echo-{phase}", "bench.echo", {}, self.workdir / phase, args=args)
        self.children.append(child.start())
        say(f"{phase}: started echo baseline pid {child.pid}")
        return child

    async def stop_child(self, child: Child) -> None:
        await asyncio.to_thread(child.stop)

    async def cleanup(self, *, keep_data: bool = False) -> None:
        for child in self.children:
            await asyncio.to_thread(child.stop)
        for producer in (self.producer, self.bulk):
            if producer is not None:
                await producer.stop()
        if keep_data:
            say(f"kept topics {self.run_id}-* and rows of rooms {self.run_id}-*")
            return
        admin = AIOKafkaAdminClient(bootstrap_servers=self.servers.kafka, client_id="roomlog-bench")
        await admin.start()
        try:
            mine = [t for t in await admin.list_topics() if t.startswith(f"{self.run_id}-")]
            if mine:
                await admin.delete_topics(mine)
            say(f"deleted {len(mine)} topics {self.run_id}-*")
        finally:
            await admin.close()
        engine = make_engine(self.servers.database_url)
        try:
            async with engine.begin() as conn:
                await conn.execute(sa.text("delete from rooms where room_id like :p"), {"p": f"{self.run_id}-%"})
        finally:
            await engine.dispose()


def alive_check(child: Child) -> Callable[[], None]:
    def check() -> None:
        if not child.alive():
            raise RuntimeError(f"{child.name} exited ({child.proc.returncode if child.proc else '?'}):\n{child.tail()}")

    return check


async def stop_tasks(tasks: list[asyncio.Task[None]]) -> None:
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)


async def ready(bench: Bench, topics: Topics, watch: Watch, child: Child, *, echo: bool = False) -> float:
    """Send a probe intent and wait for its fact; returns seconds from the child's start."""
    assert bench.producer is not None
    t0 = time.perf_counter()
    probe = CreateRoomRequested.new(room_id=f"{topics.prefix}probe")
    await bench.producer.send(topics.name("rtc.intents"), probe)
    if not await watch.wait_all([str(probe.event_id)], READY_TIMEOUT_S, alive_check(child)):
        raise RuntimeError(f"{child.name} not ready after {READY_TIMEOUT_S}s:\n{child.tail()}")
    return time.perf_counter() - t0


async def latency(bench: Bench, phase: str, *, baseline: bool) -> dict[str, Any]:
    """Offer ``rate`` intents/s for ``warmup + duration`` s; latency of each intent from
    just before ``send`` to its first fact reaching the watcher (warm-up excluded)."""
    assert bench.producer is not None
    topics = await bench.topics(phase)
    id_name = "event_id" if baseline else "causation_id"
    watch = await Watch(bench.servers.kafka, topics.name("rtc.facts"), id_name).start()
    one_hop = await Watch(bench.servers.kafka, topics.name("rtc.intents"), "event_id").start() if baseline else None
    nodes = [] if baseline else bench.start_media_nodes(topics)
    child = bench.echo(phase, topics) if baseline else bench.worker(phase, topics, projection=True)
    try:
        ready_s = await ready(bench, topics, watch, child)
        say(
            f"{phase}: ready after {ready_s:.1f}s; offering {bench.rate:.0f}/s for "
            f"{bench.warmup:.0f}s warm-up + {bench.duration:.0f}s"
        )
        mix = bench.mix(phase, seed=1)
        meter = CpuMeter({"worker": child.pid, "bench": os.getpid()})
        meter.start()
        run = await paced(
            bench.producer, topics.name("rtc.intents"), mix.next, bench.rate, bench.warmup + bench.duration
        )
        cpu = meter.stop()
        skip = int(bench.rate * bench.warmup)
        measured = dict(list(run.sent_at.items())[skip:])
        await watch.wait_all(measured, 15.0, alive_check(child))
        result: dict[str, Any] = {
            **latency_summary(measured, watch.seen),
            "offered_rate_per_s": round(run.achieved_rate, 1),
            "loadgen_lag_p99_ms": round(run.lag_p99_ms, 2),
            "loadgen_lag_max_ms": round(run.lag_max_ms, 2),
            "send_errors": run.errors,
            "ready_s": round(ready_s, 2),
            "mix": mix.counts(),
            **{k.replace("worker", "echo" if baseline else "worker"): v for k, v in cpu.items()},
        }
        if one_hop is not None:
            hop = latency_summary(measured, one_hop.seen)
            result["one_hop_p50_ms"], result["one_hop_p99_ms"] = hop["p50_ms"], hop["p99_ms"]
        return result
    finally:
        await stop_tasks(nodes)
        await watch.stop()
        if one_hop is not None:
            await one_hop.stop()
        await bench.stop_child(child)


async def prime(bench: Bench, phase: str, topics: Topics, mix: RoomMix, *, projection: bool) -> dict[str, Any]:
    """Run a worker until every room of ``mix`` is open and placed on a node, then stop it
    (SIGTERM: Faust commits and leaves). Its successor, same app id, recovers that state,
    so the backlog meets rooms as a worker restarted in production would."""
    assert bench.producer is not None
    watch = await Watch(bench.servers.kafka, topics.name("rtc.facts")).start()
    child = bench.worker(phase, topics, projection=projection)
    try:
        ready_s = await ready(bench, topics, watch, child)
        joins = mix.prime()
        for event in joins:
            await bench.producer.send_soon(topics.name("rtc.intents"), event)
        await bench.producer.flush()
        check = alive_check(child)
        if not await watch.wait_all([str(e.event_id) for e in joins], 60.0, check):
            raise RuntimeError(f"{phase}: priming joins not handled:\n{child.tail()}")
        if bench.media_nodes and not await watch.wait_until(
            lambda: watch.types["RoomPlaced"] >= mix.rooms, 60.0, check
        ):
            raise RuntimeError(f"{phase}: rooms not placed ({watch.types['RoomPlaced']}/{mix.rooms})")
        return {"ready_s": round(ready_s, 2)}
    finally:
        await watch.stop()
        await bench.stop_child(child)


async def max_rate(
    bench: Bench,
    phase: str,
    *,
    baseline: bool = False,
    projection: bool = True,
    profile: tuple[str, Path, list[str]] | None = None,
) -> dict[str, Any]:
    """Write a backlog of ``max_events`` intents, then start one process on it and time
    it from its first output to the output of the last intent (start-up and state
    recovery excluded). A worker gets primed rooms first (see ``prime``)."""
    assert bench.bulk is not None
    topics = await bench.topics(phase)
    mix = bench.mix(phase, seed=2)
    nodes = [] if baseline else bench.start_media_nodes(topics)
    name = "echo" if baseline else "worker"
    watch: Watch | None = None
    child: Child | None = None
    try:
        primed = {} if baseline else await prime(bench, phase, topics, mix, projection=projection)
        t0 = time.perf_counter()
        ids = await backlog(bench.bulk, topics.name("rtc.intents"), mix.next, bench.max_events)
        loadgen_rate = len(ids) / (time.perf_counter() - t0)
        say(f"{phase}: backlog of {len(ids)} intents written ({loadgen_rate:.0f}/s)")
        watch = await Watch(
            bench.servers.kafka, topics.name("rtc.facts"), "event_id" if baseline else "causation_id", from_end=True
        ).start()
        child = (
            bench.echo(phase, topics)
            if baseline
            else bench.worker(phase, topics, projection=projection, profile=profile)
        )
        started = time.perf_counter()
        check = alive_check(child)
        while watch.first_at is None:
            check()
            if time.perf_counter() - started > READY_TIMEOUT_S:
                raise RuntimeError(f"{child.name}: no output after {READY_TIMEOUT_S}s:\n{child.tail()}")
            await asyncio.sleep(0.002)
        meter = CpuMeter({name: child.pid, "bench": os.getpid()})
        meter.start()
        sampler = CpuSampler(child.pid)
        sampling = asyncio.create_task(_sample(sampler))
        first = watch.first_at
        try:
            complete = await watch.wait_all(ids, max(120.0, bench.max_events / 250), check, idle=10.0)
        finally:
            sampling.cancel()
        cpu = meter.stop()
        done = [watch.seen[i] for i in ids if i in watch.seen]
        last = max(done) if done else first
        elapsed = max(last - first, 1e-9)
        # over first..last fact only (the meter above also counts an idle wait for lost intents)
        cpu[f"{name}_cpu_pct"] = sampler.pct_between(first, last) or cpu[f"{name}_cpu_pct"]
        result: dict[str, Any] = {
            "events": len(ids),
            "handled": len(done),
            "missing": len(ids) - len(done),
            "complete": complete,
            "missing_sample": [i for i in ids if i not in watch.seen][:5],
            "seconds": round(elapsed, 3),
            "events_per_s": round(len(done) / elapsed, 1),
            "startup_s": round(first - started, 2),
            "facts": watch.records,
            "fact_types": dict(watch.types),
            "loadgen_backlog_rate_per_s": round(loadgen_rate, 1),
            "mix": mix.counts(),
            **primed,
            **cpu,
        }
        say(
            f"{phase}: {len(done)}/{len(ids)} intents in {elapsed:.2f}s = "
            f"{result['events_per_s']:.0f}/s ({name} cpu {cpu.get(f'{name}_cpu_pct')}%, "
            f"other processes {cpu.get('other_cpu_pct')}%)"
        )
        if projection and not baseline and complete:
            result.update(await projection_caught_up(bench, mix, first))
        return result
    finally:
        await stop_tasks(nodes)
        if watch is not None:
            await watch.stop()
        if child is not None:
            await bench.stop_child(child)


async def _sample(sampler: CpuSampler) -> None:
    while True:
        sampler.sample()
        await asyncio.sleep(sampler.interval)


async def projection_caught_up(bench: Bench, mix: RoomMix, since: float, timeout: float = 120.0) -> dict[str, Any]:
    """Seconds from ``since`` until Postgres holds a row per joined peer and every
    leave is applied (``room_members`` of this phase's rooms)."""
    engine = make_engine(bench.servers.database_url)
    query = sa.text("select count(*), count(*) filter (where state = 'left') from room_members where room_id like :p")
    want = (mix.joins, mix.leaves)
    deadline = time.perf_counter() + timeout
    got: tuple[int, int] = (0, 0)
    try:
        while time.perf_counter() < deadline:
            async with engine.connect() as conn:
                row = (await conn.execute(query, {"p": f"{mix.tag}-%"})).one()
            got = (int(row[0]), int(row[1]))
            if got == want:
                return {"projection_caught_up_s": round(time.perf_counter() - since, 2)}
            await asyncio.sleep(0.1)
    finally:
        await engine.dispose()
    return {"projection_caught_up_s": None, "projection_rows": list(got), "projection_expected": list(want)}
