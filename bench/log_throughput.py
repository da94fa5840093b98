"""Latency and throughput of the room agent on the Kafka log, next to a baseline.

``python -m bench.log_throughput --json`` prints one JSON object on stdout (progress on
stderr). Phases, each on fresh prefixed topics and a fresh process:

1. ``baseline-latency``: intents at ``--rate``/s through ``bench.echo`` (a process that
   copies rtc.intents to rtc.facts and does nothing else) → ``baseline_p50_ms``/``p99``.
2. ``latency``: the same offered load through one ``python -m streams`` worker
   (projection to Postgres on) → ``p50_ms``, ``p99_ms``, ``offered_rate_per_s``.
3. ``baseline-max``: a backlog of ``--max-events`` intents drained by ``bench.echo``
   → ``baseline_max_events_per_s``.
4. ``max``: the same backlog drained by a fresh worker, projection on →
   ``max_events_per_s``, ``worker_cpu_pct``; ``max-noproj``: projection off →
   ``max_events_per_s_no_projection``.

See bench/README.md for what each figure means.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
from pathlib import Path
from typing import Any

from bench import phases
from bench.infra import Servers, run_bench, say
from bench.procs import machine

TARGETS = {"p99_ms_at_1000_per_s": 50, "min_events_per_s": 5000, "goal_events_per_s": 10000}


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench.log_throughput",
        description="Measure intent→fact latency at a fixed offered rate and the maximum rate of "
        "one streams worker, next to an echo baseline measured in the same run. Uses "
        "KAFKA_BOOTSTRAP/DATABASE_URL if set, else starts (and stops) its own servers "
        "with scripts/infra.sh in .run/bench.",
    )
    parser.add_argument(
        "--json", action="store_true", help="print the result as one JSON object on stdout (default: indented JSON)"
    )
    parser.add_argument("--rate", type=float, default=1000.0, help="offered intents/s (default 1000)")
    parser.add_argument("--duration", type=float, default=10.0, help="measured seconds at --rate (default 10)")
    parser.add_argument("--warmup", type=float, default=2.0, help="seconds at --rate before measuring (default 2)")
    parser.add_argument(
        "--max-events", type=int, default=30000, help="backlog size of the max-rate phases (default 30000)"
    )
    parser.add_argument("--rooms", type=int, default=200, help="rooms in the mix (default 200)")
    parser.add_argument("--max-peers", type=int, default=10, help="peers per room at most (default 10, ~5 on average)")
    parser.add_argument(
        "--media-nodes",
        type=int,
        default=1,
        help="simulated media nodes heartbeating on media.nodes, so rooms get "
        "placed as in production (default 1; 0: none)",
    )
    parser.add_argument(
        "--skip",
        action="append",
        default=[],
        choices=["baseline", "latency", "max", "noproj"],
        help="leave out some phases (repeatable)",
    )
    parser.add_argument(
        "--worker-env",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="extra environment for the streams workers, e.g. FAUST_LOOP=uvloop",
    )
    parser.add_argument(
        "--profile",
        choices=["cprofile", "pyinstrument"],
        help="also run the max phase once more with the worker under this profiler",
    )
    parser.add_argument("--profile-dir", type=Path, help="where profiles go (default .run/bench/profile-<run id>)")
    parser.add_argument(
        "--profile-path",
        action="append",
        default=[],
        metavar="DIR",
        help="extra PYTHONPATH entry for the profiled worker (where pyinstrument is)",
    )
    parser.add_argument("--keep-logs", action="store_true", help="keep the children's logs and data dirs")
    parser.add_argument(
        "--keep-data", action="store_true", help="keep this run's topics and Postgres rows (for debugging)"
    )
    args = parser.parse_args(argv)
    args.profile_path = [os.path.abspath(p) for p in args.profile_path]
    if args.profile_dir is not None:
        args.profile_dir = args.profile_dir.absolute()
    args.loadavg = " ".join(Path("/proc/loadavg").read_text().split(" ")[:3])
    for item in args.worker_env:
        if "=" not in item:
            parser.error(f"--worker-env wants KEY=VALUE, got {item!r}")
    return args


async def measure(args: argparse.Namespace, srv: Servers, run_id: str) -> dict[str, Any]:
    bench = phases.Bench(
        servers=srv,
        run_id=run_id,
        workdir=srv.run_dir / "work" / run_id,
        rate=args.rate,
        duration=args.duration,
        warmup=args.warmup,
        rooms=args.rooms,
        max_peers=args.max_peers,
        max_events=args.max_events,
        media_nodes=args.media_nodes,
        worker_env=dict(i.split("=", 1) for i in args.worker_env),
    )
    details: dict[str, Any] = {}
    failed = True
    try:
        await bench.start()
        if "baseline" not in args.skip:
            details["baseline_latency"] = await phases.latency(bench, "baselat", baseline=True)
        if "latency" not in args.skip:
            details["latency"] = await phases.latency(bench, "lat", baseline=False)
        if "baseline" not in args.skip:
            details["baseline_max"] = await phases.max_rate(bench, "basemax", baseline=True)
        if "max" not in args.skip:
            details["max"] = await phases.max_rate(bench, "max", projection=True)
        if "noproj" not in args.skip:
            details["max_no_projection"] = await phases.max_rate(bench, "maxnoproj", projection=False)
        if args.profile:
            out = args.profile_dir or srv.run_dir / f"profile-{run_id}"
            details["profiled_max"] = await phases.max_rate(
                bench, "maxprof", projection=True, profile=(args.profile, out, args.profile_path)
            )
            details["profiled_max"]["profile_dir"] = str(out)
        failed = any(isinstance(p, dict) and p.get("complete") is False for p in details.values())
    finally:
        await bench.cleanup(keep_data=args.keep_data)
        if failed or args.keep_logs:
            say(
                f"children's logs kept in {bench.workdir} (a phase failed or was incomplete)"
                if failed
                else f"children's logs kept in {bench.workdir}"
            )
        else:
            shutil.rmtree(bench.workdir, ignore_errors=True)
    return summarize(args, srv, run_id, details, args.loadavg)


def summarize(args: argparse.Namespace, srv: Servers, run_id: str, d: dict[str, Any], loadavg: str) -> dict[str, Any]:
    lat, base_lat = d.get("latency", {}), d.get("baseline_latency", {})
    top, noproj, base_max = d.get("max", {}), d.get("max_no_projection", {}), d.get("baseline_max", {})
    out: dict[str, Any] = {
        "p50_ms": lat.get("p50_ms"),
        "p99_ms": lat.get("p99_ms"),
        "offered_rate_per_s": lat.get("offered_rate_per_s"),
        "max_events_per_s": top.get("events_per_s"),
        "max_events_per_s_no_projection": noproj.get("events_per_s"),
        "baseline_p50_ms": base_lat.get("p50_ms"),
        "baseline_p99_ms": base_lat.get("p99_ms"),
        "baseline_max_events_per_s": base_max.get("events_per_s"),
        "events_phase1": lat.get("count"),
        "events_phase2": top.get("handled"),
        "missing_phase1": lat.get("missing"),
        "missing_phase2": top.get("missing"),
        "missing_phase2_no_projection": noproj.get("missing"),
        "worker_cpu_pct": top.get("worker_cpu_pct"),
        "worker_cpu_pct_no_projection": noproj.get("worker_cpu_pct"),
        "worker_cpu_pct_phase1": lat.get("worker_cpu_pct"),
        "machine_cpu_pct_phase2": top.get("machine_cpu_pct"),
        "other_processes_cpu_pct_phase2": top.get("other_cpu_pct"),
        "projection_caught_up_s": top.get("projection_caught_up_s"),
        "loadgen": {
            "target_rate_per_s": args.rate,
            "achieved_rate_per_s": lat.get("offered_rate_per_s"),
            "lag_p99_ms": lat.get("loadgen_lag_p99_ms"),
            "lag_max_ms": lat.get("loadgen_lag_max_ms"),
            "bench_process_cpu_pct_phase1": lat.get("bench_cpu_pct"),
            "backlog_write_rate_per_s": top.get("loadgen_backlog_rate_per_s"),
        },
        "targets": TARGETS,
        "meets_targets": {
            "p99_ms_at_1000_per_s": _lt(lat.get("p99_ms"), TARGETS["p99_ms_at_1000_per_s"]),
            "min_events_per_s": _ge(top.get("events_per_s"), TARGETS["min_events_per_s"]),
            "goal_events_per_s": _ge(top.get("events_per_s"), TARGETS["goal_events_per_s"]),
        },
        "machine": {**machine(), "loadavg_at_start": loadavg},
        "config": {
            "rate": args.rate,
            "duration_s": args.duration,
            "warmup_s": args.warmup,
            "max_events": args.max_events,
            "rooms": args.rooms,
            "max_peers": args.max_peers,
            "media_nodes": args.media_nodes,
            "worker_env": args.worker_env,
            "servers": "started" if srv.started else "existing",
            "run_id": run_id,
        },
        "phases": d,
    }
    return out


def _lt(value: float | None, limit: float) -> bool | None:
    return None if value is None else value < limit


def _ge(value: float | None, limit: float) -> bool | None:
    return None if value is None else value >= limit


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    return run_bench(lambda srv, run_id: measure(args, srv, run_id), as_json=args.json)


if __name__ == "__main__":
    sys.exit(main())
