"""``python -m bench.sfu_forwarding``: subscribers per core of one media node, against aiortc's relay.

One media-node process (``python -m media_node``) runs pinned to core 0; this process —
the load generator: one publisher of pre-encoded 720p VP8 + Opus, counting subscribers and
two decoding canaries — and Kafka run on core 1. The node is driven through its Kafka
commands. Subscribers are added step by step until RTP loss exceeds 1 %, a stream
starves or a canary freezes; the last passing step is ``subscribers_per_core`` (measured,
never extrapolated). The same harness then runs the baseline: ``bench.sfu_stock_node``
(aiortc ``MediaRelay``, decode + re-encode per subscriber) on the same core.

Run it in a loopback-only network namespace (media must not leave the machine)::

    scripts/netns.sh bash -c '.venv/bin/python -m bench.sfu_forwarding --json'

Without ``KAFKA_BOOTSTRAP`` it starts Kafka with ``scripts/infra.sh`` (run dir
``.run/bench-sfu``) and stops it at the end. See ``bench/SFU_FORWARDING.md``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import pstats
import socket
import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import uvloop

from bench.procs import REPO, Child, set_nice
from bench.sfu_harness import Criteria, NodeRun
from bench.sfu_media import FPS, HEIGHT, WIDTH, MediaLoop, load_or_encode
from bench.sfu_signaling import NodeControl

RUN_DIR = REPO / ".run" / "bench-sfu"
TARGET_SUBSCRIBERS = 100
TARGET_RATIO = 10
GOAL_PPS = 40_000
ROOMLOG_STEPS = "10,20,40,60,80,100,110,120,130,140,160,180,200,240,270,320"
BASELINE_STEPS = "1,2,3,4,6,8,12,16"
#: --experiment name -> module run instead of ``media_node``
EXPERIMENTS = {"direct-send": "bench.sfu_node_direct", "lossy-2pct": "bench.sfu_node_lossy"}


def say(message: str) -> None:
    print(f"[sfu-bench {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m bench.sfu_forwarding", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--json", action="store_true", help="print only the JSON result on stdout")
    p.add_argument(
        "--steps", default=ROOMLOG_STEPS, help="subscriber counts for the roomlog node (default %(default)s)"
    )
    p.add_argument("--baseline-steps", default=BASELINE_STEPS, help="subscriber counts for the baseline")
    p.add_argument("--window", type=float, default=10.0, help="measurement window per step, s")
    p.add_argument("--settle", type=float, default=4.0, help="wait after the step's subscribers started, s")
    p.add_argument("--max-loss", type=float, default=1.0, help="loss limit, %% of packets")
    p.add_argument(
        "--max-p50-ms",
        type=float,
        default=100.0,
        help="median added latency limit (a node falling behind queues packets)",
    )
    p.add_argument(
        "--max-other-pct",
        type=float,
        default=20.0,
        help="re-measure a failed step if other work on the machine used more than this %% of a core",
    )
    p.add_argument("--canaries", type=int, default=2, help="decoding subscribers (the first ones of every run)")
    p.add_argument("--skip-baseline", action="store_true")
    p.add_argument("--skip-roomlog", action="store_true")
    p.add_argument(
        "--profile",
        action="store_true",
        help="then run the roomlog node under cProfile at --profile-subscribers and report hot spots",
    )
    p.add_argument(
        "--profile-subscribers",
        type=int,
        default=0,
        help="subscribers for --profile (default: the measured subscribers_per_core)",
    )
    p.add_argument(
        "--nice",
        type=int,
        default=-10,
        help="nice value of the node and the generator (default %(default)s: the cores are shared "
        "with whatever else runs on the machine; Kafka keeps 0)",
    )
    p.add_argument(
        "--experiment",
        action="append",
        default=[],
        choices=sorted(EXPERIMENTS),
        help="also grow a variant of the roomlog node (bench-only monkeypatch, see its module)",
    )
    p.add_argument("--node-core", type=int, default=0)
    p.add_argument("--generator-core", type=int, default=1)
    p.add_argument("--run-dir", type=Path, default=RUN_DIR)
    return p.parse_args(argv)


@contextlib.contextmanager
def kafka(run_dir: Path) -> Iterator[str]:
    """KAFKA_BOOTSTRAP from the environment, or a Kafka started (and stopped) here."""
    if os.environ.get("KAFKA_BOOTSTRAP"):
        say(f"using Kafka at {os.environ['KAFKA_BOOTSTRAP']}")
        yield os.environ["KAFKA_BOOTSTRAP"]
        return
    run_dir.mkdir(parents=True, exist_ok=True)
    # only Kafka is needed: point Postgres and MinIO elsewhere so infra.sh does not start them
    env = {
        **os.environ,
        "ROOMLOG_RUN_DIR": str(run_dir),
        "DATABASE_URL": "postgresql://unused",
        "MINIO_ENDPOINT": "unused:1",
    }
    script = str(REPO / "scripts" / "infra.sh")
    say(f"starting Kafka in {run_dir} (pinned like this process)")
    try:
        subprocess.run(
            [script, "up"],
            env=env,
            check=True,
            stdout=sys.stderr,
            stderr=sys.stderr,
            cwd=REPO,
            preexec_fn=lambda: set_nice(0),
        )  # Kafka does not share the generator's priority
        values = dict(line.split("=", 1) for line in (run_dir / "infra.env").read_text().splitlines() if "=" in line)
        yield values["KAFKA_BOOTSTRAP"]
    finally:
        say("stopping the Kafka this benchmark started")
        subprocess.run([script, "down"], env=env, check=False, stdout=sys.stderr, stderr=sys.stderr, cwd=REPO)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def steps_of(text: str) -> list[int]:
    return [int(x) for x in text.split(",") if x.strip()]


async def run_node(
    args: argparse.Namespace,
    bootstrap: str,
    prefix: str,
    loops: tuple[MediaLoop, MediaLoop],
    stock: bool,
    steps: list[int],
    profile_path: Path | None = None,
    experiment: str | None = None,
    extra_env: dict[str, str] | None = None,
    scrape_every_s: float = 0.0,
) -> list[dict[str, Any]]:
    label = "stock" if stock else f"roomlog-{experiment}" if experiment else "roomlog"
    node_id = f"bench-{label}-{uuid.uuid4().hex[:6]}"
    port = 0 if stock else free_port()
    env = {
        "KAFKA_BOOTSTRAP": bootstrap,
        "ROOMLOG_TOPIC_PREFIX": prefix,
        "ROOMLOG_NODE_NODE_ID": node_id,
        "ROOMLOG_NODE_METRICS_PORT": str(port),
        "ROOMLOG_NODE_LOG_LEVEL": "info",
        "ROOMLOG_NODE_FORBID_CODECS": "true",  # the roomlog node must never decode or encode
        **(extra_env or {}),  # bench.observability_cost: tracing on
    }
    module, node_args = (
        ("bench.sfu_stock_node", ["--node-id", node_id])
        if stock
        else (EXPERIMENTS[experiment] if experiment else "media_node", [])
    )
    node = Child(
        label,
        module,
        env,
        REPO,
        node_args,
        log_file=args.run_dir / "logs" / f"{node_id}.log",
        core=args.node_core,
        nice=args.nice,
        profile_path=profile_path,
    )
    control = NodeControl(bootstrap, prefix, node_id, f"bench-room-{label}")
    criteria = Criteria(max_loss_pct=args.max_loss, max_p50_ms=args.max_p50_ms)
    run = NodeRun(label, node, control, loops[0], loops[1], criteria, say, port, args.canaries)
    say(f"{label}: starting {module} on core {args.node_core}{' under cProfile' if profile_path else ''}")
    results: list[dict[str, Any]] = []
    scraper = asyncio.create_task(scrape(port, scrape_every_s)) if scrape_every_s and port else None
    try:
        await run.start()
        results = await run.grow(steps, args.window, args.settle, max_other_pct=args.max_other_pct)
    finally:
        if scraper is not None:
            scraper.cancel()
        await run.stop()
    if results:  # what the node's own log says about the end of the run
        results[-1]["node_consent_expired"] = run.node_log_count("Consent to send expired")
        results[-1]["node_log_errors"] = run.node_log_count('"level": "error"')
    return results


async def scrape(port: int, every_s: float) -> None:
    """Fetch the node's ``/metrics`` like Prometheus does, until cancelled (observability_cost)."""

    def fetch() -> None:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
            r.read()

    while True:
        await asyncio.sleep(every_s)
        with contextlib.suppress(OSError):
            await asyncio.to_thread(fetch)


def last_pass(steps: list[dict[str, Any]], key: str = "passed") -> dict[str, Any] | None:
    """The last step that passed, if every step before it passed too."""
    best = None
    for step in steps:
        if not step[key]:
            break
        best = step
    return best


def profile_top(path: Path, forwarded: float, limit: int = 25) -> list[dict[str, Any]]:
    stats = pstats.Stats(str(path))
    rows = []
    for (file, line, func), (_cc, calls, tottime, cumtime, _callers) in stats.stats.items():  # type: ignore[attr-defined]
        rows.append(
            {
                "function": f"{Path(file).name}:{line}({func})",
                "calls": calls,
                "tottime_s": round(tottime, 3),
                "cumtime_s": round(cumtime, 3),
                "tottime_us_per_forwarded_packet": round(tottime * 1e6 / forwarded, 3) if forwarded else None,
            }
        )
    rows.sort(key=lambda r: -r["tottime_s"])
    return rows[:limit]


def summarize(
    roomlog: list[dict[str, Any]],
    baseline: list[dict[str, Any]],
    loops: tuple[MediaLoop, MediaLoop],
    args: argparse.Namespace,
) -> dict[str, Any]:
    best, base = last_pass(roomlog), last_pass(baseline)
    loose = last_pass(roomlog, "passed_issue_criteria")
    n = best["subscribers"] if best else 0
    base_n = base["subscribers"] if base else 0
    limiting = [s for s in roomlog if not s["passed"]][:1] or roomlog[-1:]
    saturated = any(s["generator_saturated"] for s in [*limiting, *roomlog[-1:], *([best] if best else [])])
    out: dict[str, Any] = {
        "subscribers_per_core": n,
        "forwarded_pps_per_core": best["received_pps"] if best else 0,
        "p50_added_ms": best["p50_added_ms"] if best else None,
        "p99_added_ms": best["p99_added_ms"] if best else None,
        "cpu_per_stream_pct": round(best["node_cpu_pct"] / n, 3) if best and n else None,
        "generator_cpu_pct": best["generator_cpu_pct"] if best else None,
        "generator_saturated": saturated,
        "baseline_subscribers_per_core": base_n,
        # without our median-latency bound: the rule (loss, freeze) and dead streams only
        "subscribers_per_core_issue_criteria": loose["subscribers"] if loose else 0,
        "p50_added_ms_issue_criteria": loose["p50_added_ms"] if loose else None,
        "node_cpu_pct": best["node_cpu_pct"] if best else None,
        "forwarded_pps_per_node_cpu_second": round(best["received_pps"] / (best["node_cpu_pct"] / 100))
        if best and best["node_cpu_pct"]
        else None,
        "ratio_to_baseline": round(n / base_n, 1) if base_n else None,
        "roomlog_stopped_by": limiting[0]["failures"]
        if limiting and not limiting[0]["passed"]
        else ["no step failed: the largest step passed (a lower bound)"]
        if roomlog
        else [],
        "issue_criteria_stopped_by": roomlog[-1]["failures"]
        if roomlog and not roomlog[-1]["passed_issue_criteria"]
        else ["no step failed: the largest step passed (a lower bound)"]
        if roomlog
        else [],
        "baseline_stopped_by": [s for s in baseline if not s["passed"]][-1]["failures"]
        if any(not s["passed"] for s in baseline)
        else [],
        "targets": {
            "subscribers_per_core": TARGET_SUBSCRIBERS,
            "ratio_to_baseline": TARGET_RATIO,
            "goal_forwarded_pps_per_core": GOAL_PPS,
        },
        "media": {
            "video": f"VP8 {WIDTH}x{HEIGHT} {FPS} fps",
            "video_kbps": round(loops[0].bitrate / 1000),
            "audio": "Opus 20 ms",
            "audio_kbps": round(loops[1].bitrate / 1000),
            "keyframe_interval_s": 2.0,
        },
        "criteria": {
            "max_loss_pct": args.max_loss,
            "canary_freeze_s": 1.0,
            "canary_min_fps": 0.9 * FPS,
            "max_p50_added_ms": args.max_p50_ms,
            "max_other_cpu_pct_before_remeasuring": args.max_other_pct,
            "window_s": args.window,
        },
        "steps": roomlog,
        "baseline_steps": baseline,
    }
    out["meets_targets"] = bool(
        n >= TARGET_SUBSCRIBERS and (base_n == 0 or n >= TARGET_RATIO * base_n) and not args.skip_baseline
    )
    return out


async def amain(args: argparse.Namespace, bootstrap: str) -> dict[str, Any]:
    from producers.admin import create_topics

    prefix = f"bench-sfu-{uuid.uuid4().hex[:8]}-"
    await create_topics(bootstrap, prefix, quiet=True)
    try:
        return await measure(args, bootstrap, prefix)
    finally:
        await delete_topics(bootstrap, prefix)


async def delete_topics(bootstrap: str, prefix: str) -> None:
    """Remove this run's topics (a shared Kafka must not collect them)."""
    from aiokafka.admin import AIOKafkaAdminClient

    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, client_id="bench-sfu-admin")
    await admin.start()
    try:
        mine = [t for t in await admin.list_topics() if t.startswith(prefix)]
        if mine:
            await admin.delete_topics(mine)
    except Exception as exc:  # noqa: BLE001 - cleanup must not hide the result
        say(f"could not delete topics {prefix}*: {exc}")
    finally:
        await admin.close()


async def measure(args: argparse.Namespace, bootstrap: str, prefix: str) -> dict[str, Any]:
    loops = load_or_encode(args.run_dir / "media", say)
    say(f"media: video {loops[0].bitrate / 1000:.0f} kbps, audio {loops[1].bitrate / 1000:.0f} kbps")
    roomlog = [] if args.skip_roomlog else await run_node(args, bootstrap, prefix, loops, False, steps_of(args.steps))
    baseline = (
        []
        if args.skip_baseline
        else await run_node(args, bootstrap, prefix, loops, True, steps_of(args.baseline_steps))
    )
    result = summarize(roomlog, baseline, loops, args)
    for name in args.experiment:
        steps = await run_node(args, bootstrap, prefix, loops, False, steps_of(args.steps), experiment=name)
        best = last_pass(steps)
        result.setdefault("experiments", {})[name] = {
            "module": EXPERIMENTS[name],
            "subscribers_per_core": best["subscribers"] if best else 0,
            "forwarded_pps_per_core": best["received_pps"] if best else 0,
            "cpu_per_stream_pct": round(best["node_cpu_pct"] / best["subscribers"], 3) if best else None,
            "forwarded_pps_per_node_cpu_second": round(best["received_pps"] / (best["node_cpu_pct"] / 100))
            if best and best["node_cpu_pct"]
            else None,
            "p50_added_ms": best["p50_added_ms"] if best else None,
            "p99_added_ms": best["p99_added_ms"] if best else None,
            "stopped_by": next((s["failures"] for s in steps if not s["passed"]), []),
            "steps": steps,
        }
    if args.profile:
        # cProfile roughly halves the node's speed: profile it at half its measured capacity
        n = args.profile_subscribers or max(10, result["subscribers_per_core"] // 2)
        path = args.run_dir / f"profile-{prefix.strip('-')}" / "node.prof"
        path.parent.mkdir(parents=True, exist_ok=True)
        steps = await run_node(args, bootstrap, prefix, loops, False, [n], profile_path=path)
        forwarded = (steps[-1].get("node_forwarded_total") or 0) if steps else 0
        result["profile"] = {
            "subscribers": n,
            "path": str(path),
            "forwarded_packets": forwarded,
            "note": "whole node lifetime (setup included); us per forwarded packet = tottime / forwarded_packets",
            "window": {k: steps[-1][k] for k in ("received_pps", "node_cpu_pct", "p50_added_ms", "failures")}
            if steps
            else None,
            "top_by_tottime": profile_top(path, forwarded) if path.exists() else [],
        }
        if path.exists():
            say(
                "node profile (tottime):\n"
                + "\n".join(
                    f"  {r['tottime_us_per_forwarded_packet']:>8} us/pkt {r['tottime_s']:>8} s  {r['function']}"
                    for r in result["profile"]["top_by_tottime"]
                )
            )
    return result


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    cores = os.sched_getaffinity(0)
    if {args.node_core, args.generator_core} <= cores and args.node_core != args.generator_core:
        os.sched_setaffinity(0, {args.generator_core})  # this process, its threads and Kafka
    else:
        say(f"cannot pin (cores {sorted(cores)}): node and generator share cores; figures are not per core")
        args.node_core = -1
    if not set_nice(args.nice):
        say(f"cannot set nice {args.nice}: running at the default priority")
        args.nice = None
    with kafka(args.run_dir) as bootstrap:
        result = uvloop.run(amain(args, bootstrap))  # the generator's receive path is loop-bound too
    text = json.dumps(result, indent=None if args.json else 2)
    print(text, flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
