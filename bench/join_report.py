"""The JSON report of ``bench.join_latency``: the join → first frame summary, every hop and
hop group, the direct-pair baseline, the targets and the load generator's health."""

from __future__ import annotations

import argparse
import time
from typing import TYPE_CHECKING, Any

from bench.infra import Servers
from bench.join_hops import GROUPS, HOPS, group_sum, hops_of, summary
from bench.procs import machine

if TYPE_CHECKING:
    from bench.join_latency import TimedRoom

PUBLISHER_CODE = 1
TARGETS = {"first_frame_p99_ms": 500, "seed_first_frame_p99_ms": 2000, "seed_sdp_negotiation_p99_ms": 200}


def report(
    args: argparse.Namespace,
    subs: list[TimedRoom],
    log: dict[tuple[str, str], float],
    forwarding: dict[str, float],
    base: dict[str, Any],
    health: dict[str, Any],
    srv: Servers,
    run_id: str,
) -> dict[str, Any]:
    origin = min(r.stamps.get("join_sent", time.time()) for r in subs)
    per = [hops_of(r.stamps, r.peer_id or "", r.join_request_id or "", log, forwarding, origin) for r in subs]
    n = len(subs)
    total = summary([p["total"] for p in per], total=n)
    hops = {h: summary([p[h] for p in per]) for h in HOPS}
    grouped = {g: summary([group_sum(p, hs) for p in per]) for g, hs in GROUPS.items()}
    means = {h: v["mean_ms"] or 0.0 for h, v in hops.items()}
    sdp = summary([p["sdp_negotiation"] for p in per], total=n)
    wrong = sum(1 for r in subs if r.first_code is not None and r.first_code != PUBLISHER_CODE)
    return {
        "p50_ms": total["p50_ms"],
        "p99_ms": total["p99_ms"],
        "max_ms": total["max_ms"],
        "mean_ms": total["mean_ms"],
        "subscribers": n,
        "first_frames": n - total["missing"],
        "wrong_source_frames": wrong,
        "baseline": {
            "what": "direct aiortc publisher PC -> subscriber PC on loopback, no roomlog: "
            "createOffer -> first decoded frame",
            **base,
        },
        "overhead_p50_ms": _diff(total["p50_ms"], base.get("first_frame_p50_ms")),
        "overhead_p99_ms": _diff(total["p99_ms"], base.get("first_frame_p99_ms")),
        "joined": summary([p["joined_rx"] for p in per], total=n),
        "sdp_negotiation": {"what": "SubscriberOffered written -> ApplySubscriberAnswer written", **sdp},
        "hops": hops,
        "hop_groups": grouped,
        "joined_hops": {h: summary([p[h] for p in per]) for h in ("streams_joined", "notify_joined")},
        "dominant_hop": max(means, key=lambda h: means[h]),
        "dominant_hop_share_of_mean": round(max(means.values()) / total["mean_ms"], 2) if total["mean_ms"] else None,
        "targets": TARGETS,
        "meets_targets": {
            "first_frame_p99_ms": _lt(total["p99_ms"], TARGETS["first_frame_p99_ms"]),
            "seed_first_frame_p99_ms": _lt(total["p99_ms"], TARGETS["seed_first_frame_p99_ms"]),
            "seed_sdp_negotiation_p99_ms": _lt(sdp["p99_ms"], TARGETS["seed_sdp_negotiation_p99_ms"]),
        },
        **health,
        "machine": {**machine(), "loadavg_at_start": args.loadavg},
        "config": {
            "subscribers": args.subscribers,
            "resolution": f"{args.width}x{args.height}",
            "fps": args.fps,
            "warmup_subscribers": args.warmup,
            "baseline_runs": args.baseline_runs,
            "servers": "started" if srv.started else "existing",
            "run_id": run_id,
        },
        **(
            {"per_subscriber": [{k: None if v is None else round(v, 1) for k, v in p.items()} for p in per]}
            if args.per_subscriber
            else {}
        ),
    }


def _diff(a: float | None, b: float | None) -> float | None:
    return None if a is None or b is None else round(a - b, 1)


def _lt(value: float | None, limit: float) -> bool | None:
    return None if value is None else value < limit
