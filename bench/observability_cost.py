"""``python -m bench.observability_cost``: what tracing and metrics cost, off vs on in one run.

Two measurements, each run in every mode back to back (``off``, then ``on@<ratio>`` for each
``--sample-ratio``, rotated each of ``--rounds`` rounds, so drift on the shared machine falls
on every mode alike):

- **log** (``bench.log_throughput``'s max phase, projection on): a backlog of
  ``--max-events`` intents drained by a fresh ``python -m streams`` worker → events/s, and
  events per CPU-second the worker used (the figure that holds on a shared machine).
- **sfu** (``bench.sfu_forwarding``'s harness): one media node forwarding to a fixed
  ``--subscribers`` → forwarded packets per node CPU-second (the node is pinned to one core;
  at a fixed load the cost shows as CPU, not as lost subscribers).

``off``: ``ROOMLOG_TRACING`` unset, no metrics endpoint on the worker (the node keeps the one
the harness reads its counter from, scraped once per window). ``on``: ``ROOMLOG_TRACING=1``
exporting the sampled spans (``--sample-ratio``, default 1: every trace) over OTLP to a real
Jaeger (``scripts/infra.sh jaeger up``), and the service's ``/metrics`` scraped every 2 s as
Prometheus would. The metric increments themselves run in both modes (they cannot be
switched off). Prints one JSON object: per mode the median and every round, and per ``on``
mode ``ratio`` = on / off (``lost_pct`` = 100 × (1 − ratio); the goal is under 5 %).

Run it in the loopback-only namespace (media must not leave the machine)::

    scripts/netns.sh bash -c '.venv/bin/python -m bench.observability_cost --json'
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import shutil
import statistics
import subprocess
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from bench import phases
from bench.infra import Servers, run_bench, say
from bench.procs import REPO, machine, set_nice
from bench.sfu_forwarding import free_port, scrape
from bench.sfu_media import load_or_encode

GOAL_LOST_PCT = 5.0


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m bench.observability_cost",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--json", action="store_true", help="print the result as one JSON object on stdout")
    p.add_argument("--rounds", type=int, default=2, help="off/on pairs per measurement (default 2)")
    p.add_argument("--max-events", type=int, default=20000, help="backlog of the log measurement (default 20000)")
    p.add_argument("--rooms", type=int, default=200)
    p.add_argument("--max-peers", type=int, default=10)
    p.add_argument("--subscribers", type=int, default=40, help="subscribers of the sfu measurement (default 40)")
    p.add_argument("--window", type=float, default=10.0, help="sfu measurement window, s")
    p.add_argument("--settle", type=float, default=4.0)
    p.add_argument("--skip", action="append", default=[], choices=["log", "sfu"])
    p.add_argument(
        "--sample-ratio",
        type=float,
        action="append",
        help="ROOMLOG_TRACING_SAMPLE_RATIO of an 'on' mode (repeatable: one mode each; default 1: every trace)",
    )
    args = p.parse_args(argv)
    args.sample_ratio = args.sample_ratio or [1.0]
    args.loadavg = " ".join(Path("/proc/loadavg").read_text().split(" ")[:3])
    return args


@contextlib.asynccontextmanager
async def jaeger(run_dir: Path) -> AsyncIterator[str]:
    """A Jaeger started by the project's script in ``run_dir``; its OTLP traces endpoint."""
    env = {
        **os.environ,
        "ROOMLOG_RUN_DIR": str(run_dir),
        "JAEGER_OTLP_PORT": str(free_port()),
        "JAEGER_UI_PORT": str(free_port() + 1),
        "JAEGER_HEALTH_PORT": str(free_port()),
    }
    script = [str(REPO / "scripts" / "infra.sh"), "jaeger"]
    up = await asyncio.to_thread(subprocess.run, [*script, "up"], env=env, capture_output=True, text=True)
    if up.returncode != 0:
        raise RuntimeError(f"jaeger did not start:\n{up.stdout}\n{up.stderr}")
    urls = dict(line.split("=", 1) for line in up.stdout.split() if "=" in line)
    say(f"jaeger up: {urls}")
    try:
        yield urls["ROOMLOG_TRACING_ENDPOINT"]
    finally:
        await asyncio.to_thread(subprocess.run, [*script, "down"], env=env, capture_output=True)


def traced_env(endpoint: str, prefix: str, ratio: float) -> dict[str, str]:
    return {
        f"ROOMLOG_{prefix}TRACING": "1",
        f"ROOMLOG_{prefix}TRACING_ENDPOINT": endpoint,
        f"ROOMLOG_{prefix}TRACING_SAMPLE_RATIO": str(ratio),
    }


def modes(args: argparse.Namespace) -> dict[str, float | None]:
    """``off`` and one ``on@<ratio>`` per ``--sample-ratio``: mode -> sample ratio (None: off)."""
    return {"off": None, **{f"on@{ratio:g}": ratio for ratio in args.sample_ratio}}


def order(names: list[str], index: int) -> list[str]:
    """Round ``index`` runs the modes rotated by one each round (drift falls on all alike)."""
    shift = index % len(names)
    return names[shift:] + names[:shift]


async def log_mode(bench: phases.Bench, mode: str, index: int, endpoint: str, ratio: float | None) -> dict[str, Any]:
    scraper: asyncio.Task[None] | None = None
    if ratio is not None:
        port = free_port()
        bench.worker_env = {**traced_env(endpoint, "STREAMS_", ratio), "ROOMLOG_STREAMS_METRICS_PORT": str(port)}
        scraper = asyncio.create_task(scrape(port, 2.0))
    else:
        bench.worker_env = {}
    try:
        result = await phases.max_rate(bench, f"obs{mode.replace('@', '').replace('.', '')}{index}", projection=True)
    finally:
        if scraper is not None:
            scraper.cancel()
    out = {k: result.get(k) for k in ("events_per_s", "handled", "missing", "worker_cpu_pct", "other_cpu_pct")}
    cpu = out["worker_cpu_pct"]
    # on a shared machine the worker gets what the others leave it: events per CPU-second it used
    rate = out["events_per_s"]
    out["events_per_worker_cpu_second"] = round(rate / (cpu / 100)) if cpu and rate else None
    return out


async def measure_log(args: argparse.Namespace, srv: Servers, run_id: str, endpoint: str) -> dict[str, Any]:
    bench = phases.Bench(
        servers=srv,
        run_id=run_id,
        workdir=srv.run_dir / "work" / run_id,
        rate=1000.0,
        duration=10.0,
        warmup=2.0,
        rooms=args.rooms,
        max_peers=args.max_peers,
        max_events=args.max_events,
    )
    ratios = modes(args)
    runs: dict[str, list[dict[str, Any]]] = {mode: [] for mode in ratios}
    try:
        await bench.start()
        for index in range(args.rounds):
            for mode in order(list(ratios), index):
                runs[mode].append(await log_mode(bench, mode, index, endpoint, ratios[mode]))
                say(f"log {mode} round {index}: {runs[mode][-1]['events_per_s']} events/s")
    finally:
        await bench.cleanup()
        shutil.rmtree(bench.workdir, ignore_errors=True)
    return {"per_worker_cpu_second": compare(runs, "events_per_worker_cpu_second"), **compare(runs, "events_per_s")}


async def measure_sfu(args: argparse.Namespace, kafka: str, endpoint: str) -> dict[str, Any]:
    from bench import sfu_forwarding as sfu
    from producers.admin import create_topics

    sfu_args = sfu.parse_args(["--window", str(args.window), "--settle", str(args.settle)])
    cores = os.sched_getaffinity(0)
    if {sfu_args.node_core, sfu_args.generator_core} <= cores and sfu_args.node_core != sfu_args.generator_core:
        os.sched_setaffinity(0, {sfu_args.generator_core})
    else:
        sfu_args.node_core = -1
    if not set_nice(sfu_args.nice):
        sfu_args.nice = None
    loops = load_or_encode(sfu_args.run_dir / "media", say)
    prefix = f"bench-obs-{os.getpid()}-"
    await create_topics(kafka, prefix, quiet=True)
    ratios = modes(args)
    runs: dict[str, list[dict[str, Any]]] = {mode: [] for mode in ratios}
    try:
        for index in range(args.rounds):
            for mode in order(list(ratios), index):
                ratio = ratios[mode]
                extra = traced_env(endpoint, "NODE_", ratio) if ratio is not None else {}
                steps = await sfu.run_node(
                    sfu_args,
                    kafka,
                    prefix,
                    loops,
                    False,
                    [args.subscribers],
                    extra_env=extra,
                    scrape_every_s=2.0 if ratio is not None else 0.0,
                )
                step = steps[-1] if steps else {}
                cpu = step.get("node_cpu_pct") or 0
                runs[mode].append(
                    {
                        "forwarded_pps_per_node_cpu_second": round(step["received_pps"] / (cpu / 100)) if cpu else None,
                        "received_pps": step.get("received_pps"),
                        "node_cpu_pct": cpu,
                        "loss_pct": step.get("loss_pct"),
                        "passed": step.get("passed"),
                    }
                )
                say(f"sfu {mode} round {index}: {runs[mode][-1]}")
    finally:
        await sfu.delete_topics(kafka, prefix)
    return {**compare(runs, "forwarded_pps_per_node_cpu_second"), "subscribers": args.subscribers}


def compare(runs: dict[str, list[dict[str, Any]]], key: str) -> dict[str, Any]:
    medians = {mode: _median([r.get(key) for r in rounds]) for mode, rounds in runs.items()}
    off = medians["off"]
    out: dict[str, Any] = {"figure": key, "off": off}
    for mode, on in medians.items():
        if mode == "off":
            continue
        ratio = round(on / off, 4) if off and on else None
        out[mode] = {
            "value": on,
            "ratio": ratio,
            "lost_pct": None if ratio is None else round(100 * (1 - ratio), 2),
            "meets_goal": None if ratio is None else 100 * (1 - ratio) < GOAL_LOST_PCT,
        }
    out["rounds"] = runs
    return out


def _median(values: list[Any]) -> float | None:
    got = [float(v) for v in values if v is not None]
    return round(statistics.median(got), 1) if got else None


async def measure(args: argparse.Namespace, srv: Servers, run_id: str) -> dict[str, Any]:
    out: dict[str, Any] = {"goal_lost_pct": GOAL_LOST_PCT}
    async with jaeger(srv.run_dir / f"jaeger-{run_id}") as endpoint:
        if "log" not in args.skip:
            out["log_throughput"] = await measure_log(args, srv, run_id, endpoint)
        if "sfu" not in args.skip:
            out["sfu_forwarding"] = await measure_sfu(args, srv.kafka, endpoint)
    out["machine"] = {**machine(), "loadavg_at_start": args.loadavg}
    out["config"] = {
        "rounds": args.rounds,
        "max_events": args.max_events,
        "subscribers": args.subscribers,
        "window_s": args.window,
        "sample_ratio": args.sample_ratio,
        "on": "ROOMLOG_TRACING=1 (every span exported to Jaeger over OTLP/HTTP) + /metrics scraped every 2 s",
        "off": "tracing off, no metrics endpoint (sfu: the harness's own counter read per window in both)",
    }
    return out


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    return run_bench(lambda srv, run_id: measure(args, srv, run_id), as_json=args.json)


if __name__ == "__main__":
    import sys

    sys.exit(main())
