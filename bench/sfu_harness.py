"""One node under test: start it, publish, grow the subscribers step by step, measure windows.

A step adds subscribers (canaries first) until the node has ``n`` of them, waits until
every new one receives video and audio (canaries: decoded frames), lets things settle and
measures a window. The step passes when RTP loss (from sequence numbers) is ≤ the limit,
no subscriber stream starves, every subscriber started, and every canary keeps decoding
the publisher's frames (no gap > ``freeze_s``, ≥ ``min_canary_fps_ratio`` of the source's
frame rate). Growth stops at the first failing step.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
import urllib.request
from dataclasses import dataclass, field
from typing import Any

from aiortc import RTCPeerConnection, RTCRtpSender, RTCSessionDescription

from bench.procs import Child
from bench.sfu_generator import (
    Canary,
    ConsentWatch,
    LoopLag,
    Recorder,
    SendLog,
    Stream,
    canary_report,
    count_rtp,
    never_decode,
    percentile,
)
from bench.sfu_media import FPS, LoopTrack, MediaLoop
from bench.sfu_procs import Meter, other_cpu_pct, udp_drops
from bench.sfu_signaling import NodeControl, NodeError, new_pc

perf = time.perf_counter
LATENCY_FAILURE = "median added latency"


@dataclass
class Criteria:
    max_loss_pct: float = 1.0
    freeze_s: float = 1.0
    min_canary_fps_ratio: float = 0.9
    starve_ratio: float = 0.5  # a stream that got less than this share of what was published starved
    #: Median added latency above this means packets queue up (the node, or the generator, is
    #: falling behind): a short window would otherwise pass a node that is seconds behind.
    max_p50_ms: float = 100.0


@dataclass
class Subscriber:
    name: str
    pc: RTCPeerConnection
    canary: Canary | None = None
    streams: dict[int, Stream] = field(default_factory=dict)
    answered: asyncio.Event = field(default_factory=asyncio.Event)
    task: asyncio.Task[None] | None = None
    error: str | None = None

    def started(self) -> bool:
        if self.canary is not None:
            return bool(self.canary.frames) and self.canary.audio_frames > 0
        return len(self.streams) >= 2 and all(s.received > 0 for s in self.streams.values())


class NodeRun:
    """One node process driven through its commands, with the subscribers it serves."""

    def __init__(
        self,
        label: str,
        node: Child,
        control: NodeControl,
        video: MediaLoop,
        audio: MediaLoop,
        criteria: Criteria,
        say: Any,
        metrics_port: int = 0,
        canaries: int = 2,
    ) -> None:
        self.label, self.node, self.control = label, node, control
        self.video, self.audio = video, audio
        self.criteria, self.say = criteria, say
        self.metrics_port = metrics_port
        self.canaries = canaries
        self.log = SendLog()
        self.recorder = Recorder(self.log)
        self.lag = LoopLag()
        self.consent = ConsentWatch()
        self.publisher: RTCPeerConnection | None = None
        self.subscribers: list[Subscriber] = []

    async def start(self, timeout: float = 60.0) -> None:
        self.node.start()
        await self.control.start()
        try:
            await self.control.wait_alive(timeout)
        except TimeoutError:
            raise NodeError(f"{self.label} node sent no heartbeat in {timeout:.0f} s:\n{self.node.tail()}") from None
        pc = self.publisher = new_pc()
        for loop, on_frame in ((self.video, self.log.on_frame), (self.audio, None)):
            transceiver = pc.addTransceiver(LoopTrack(loop, on_frame), direction="sendonly")
            wanted = "video/VP8" if loop.kind == "video" else "audio/opus"
            transceiver.setCodecPreferences(
                [c for c in RTCRtpSender.getCapabilities(loop.kind).codecs if c.mimeType == wanted]
            )
        self.log.hook(pc)
        await self.control.open_publisher(pc, "publisher")
        self.lag.start()

    async def stop(self) -> None:
        self.lag.stop()
        for sub in self.subscribers:
            if sub.task is not None:
                sub.task.cancel()
            if sub.canary is not None:
                sub.canary.stop()
        for pc in [s.pc for s in self.subscribers] + ([self.publisher] if self.publisher else []):
            with contextlib.suppress(Exception):
                await asyncio.wait_for(pc.close(), 5)
        await self.control.stop()
        self.node.stop()
        logging.getLogger("aioice.ice").removeHandler(self.consent)

    def node_log_count(self, text: str) -> int:
        try:
            return self.node.log_path.read_text(errors="replace").count(text)
        except OSError:
            return 0

    # --- subscribers -----------------------------------------------------------------

    async def _negotiate(self, sub: Subscriber) -> None:
        """Answer every offer the node makes to this subscriber (the first and renegotiations)."""
        tapped: set[int] = set()
        try:
            while True:
                offer = await self.control.next_offer(sub.name, 3600 if sub.answered.is_set() else 60)
                await sub.pc.setRemoteDescription(RTCSessionDescription(sdp=offer.sdp, type="offer"))
                if sub.canary is None:
                    fresh = [t for t in sub.pc.getTransceivers() if id(t) not in tapped]
                    tapped |= {id(t) for t in fresh}
                    never_decode(fresh)
                await sub.pc.setLocalDescription(await sub.pc.createAnswer())
                if sub.canary is None and not sub.streams and not sub.answered.is_set():
                    sub.streams = count_rtp(sub.pc, self.recorder)
                await self.control.answer(sub.name, sub.pc.localDescription.sdp)
                sub.answered.set()
        except (NodeError, asyncio.CancelledError) as exc:
            sub.error = str(exc) or type(exc).__name__
            sub.answered.set()

    async def add(self, n: int, start_timeout: float = 30.0) -> list[str]:
        """Grow to ``n`` subscribers; returns the names of those that did not start."""
        fresh = []
        while len(self.subscribers) < n:
            index = len(self.subscribers)
            canary = Canary(f"canary-{index}") if index < self.canaries else None
            sub = Subscriber(f"{self.label}-{'canary' if canary else 'sub'}-{index}", new_pc(), canary)
            if canary is not None:
                canary.attach(sub.pc)
            sub.task = asyncio.ensure_future(self._negotiate(sub))
            self.subscribers.append(sub)
            fresh.append(sub)
        began = perf()
        for batch_start in range(0, len(fresh), 20):  # commands in batches: the node sets up 20 at a time
            batch = fresh[batch_start : batch_start + 20]
            await asyncio.gather(*(self.control.subscribe(s.name, "publisher") for s in batch))
            await asyncio.wait_for(asyncio.gather(*(s.answered.wait() for s in batch)), 120)
        answered = perf()
        deadline = answered + start_timeout
        while perf() < deadline and not all(s.started() for s in fresh):  # noqa: ASYNC110 - counters, no event
            await asyncio.sleep(0.2)
        failed = [s.name for s in fresh if not s.started()]
        errors = {s.error for s in fresh if s.error}
        self.say(
            f"{self.label}: +{len(fresh)} subscribers negotiated in {answered - began:.1f} s, receiving "
            f"after {perf() - answered:.1f} s more; {len(failed)} not receiving"
            + (f" ({'; '.join(sorted(errors))[:300]})" if errors else "")
        )
        return failed

    # --- measuring -----------------------------------------------------------------------

    def _forwarded_metric(self) -> float | None:
        if not self.metrics_port:
            return None
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.metrics_port}/metrics", timeout=5) as r:
                text = r.read().decode()
        except OSError:
            return None
        return sum(
            float(line.rsplit(" ", 1)[1])
            for line in text.splitlines()
            if line.startswith("roomlog_media_node_forwarded_packets_total{")
        )

    async def window(self, seconds: float) -> dict[str, Any]:
        streams = list(self.recorder.streams)
        snap = {id(s): (s.received, s.max_ext) for s in streams}
        published0 = dict(self.log.count)
        meter = Meter(self.node.pid)
        owners = {"node": self.node.pid, "generator": os.getpid()}
        drops0 = udp_drops(owners)
        metric0 = await asyncio.to_thread(self._forwarded_metric)
        self.recorder.latencies.clear()
        self.recorder.audio_latencies.clear()
        self.lag.lags.clear()
        meter.start()
        self.recorder.recording = True
        start = perf()
        await asyncio.sleep(seconds)
        end = perf()
        self.recorder.recording = False
        cpu = meter.stop()
        metric1 = await asyncio.to_thread(self._forwarded_metric)
        drops1 = udp_drops(owners)
        published = {k: self.log.count[k] - published0[k] for k in published0}
        expected = received = starved = 0
        for s in streams:
            got, seen = s.received - snap[id(s)][0], s.max_ext - snap[id(s)][1]
            expected, received = expected + seen, received + got
            if got < self.criteria.starve_ratio * published.get(s.kind or "video", 0):
                starved += 1
        lost = max(0, expected - received)
        raw = [s for s in self.subscribers if s.canary is None]
        canaries = [s for s in self.subscribers if s.canary is not None]
        lat = self.recorder.latencies
        p50, p99 = percentile(lat, 50), percentile(lat, 99)
        # every subscriber's copies: raw ones counted exactly, canaries assumed whole
        per_subscriber = (published["video"] + published["audio"]) / (end - start)
        delivered_pps = received / (end - start) + per_subscriber * len(canaries)
        lags = self.lag.lags
        result: dict[str, Any] = {
            "subscribers": len(self.subscribers),
            "counting_subscribers": len(raw),
            "canaries": len(canaries),
            "window_s": round(end - start, 2),
            "published_pps": round(per_subscriber, 1),
            "received_pps": round(delivered_pps, 1),
            "node_forwarded_total": metric1,
            "node_counter_pps": None
            if metric0 is None or metric1 is None
            else round((metric1 - metric0) / (end - start), 1),
            "loss_pct": round(100 * lost / expected, 3) if expected else None,
            "lost": lost,
            "starved_streams": starved,
            "streams": len(streams),
            "p50_added_ms": None if p50 is None else round(p50 * 1000, 2),
            "p99_added_ms": None if p99 is None else round(p99 * 1000, 2),
            "latency_samples": len(lat),
            "audio_p50_added_ms": _ms(percentile(self.recorder.audio_latencies, 50)),
            "audio_p99_added_ms": _ms(percentile(self.recorder.audio_latencies, 99)),
            "unmatched_streams": sum(1 for s in streams if s.offset is None),
            "canary": [canary_report(s.canary, self.log, start, end) for s in canaries if s.canary],
            **cpu,
            "udp_drops": {k: drops1[k] - drops0.get(k, 0) for k in drops1},
            "generator_loop_lag_p99_ms": round((percentile(lags, 99) or 0) * 1000, 1),
            "publisher_late_max_ms": round(max([t.late_s for t in self._tracks()] or [0.0]) * 1000, 1),
            "publisher_state": self.publisher.connectionState if self.publisher else None,
            "node_alive": self.node.alive(),
            "subscribers_disconnected": sum(1 for s in self.subscribers if s.pc.connectionState != "connected"),
            "generator_consent_expired": self.consent.expired,
        }
        return result

    def _tracks(self) -> list[LoopTrack]:
        assert self.publisher is not None
        return [s.track for s in self.publisher.getSenders() if isinstance(s.track, LoopTrack)]

    def judge(self, w: dict[str, Any], not_started: list[str]) -> list[str]:
        """Why a window fails (empty: it passes)."""
        c = self.criteria
        why = []
        if not w["node_alive"]:
            why.append("node died")
        if w["publisher_state"] != "connected":
            why.append(f"publisher connection {w['publisher_state']}")
        if w["subscribers_disconnected"]:
            why.append(f"{w['subscribers_disconnected']} subscriber connections lost")
        if not_started:
            why.append(f"{len(not_started)} subscribers never received media")
        if w["counting_subscribers"] and (w["loss_pct"] is None or w["loss_pct"] > c.max_loss_pct):
            why.append(f"loss {w['loss_pct']}% > {c.max_loss_pct}%")
        if w["p50_added_ms"] is not None and w["p50_added_ms"] > c.max_p50_ms:
            why.append(f"{LATENCY_FAILURE} {w['p50_added_ms']} ms > {c.max_p50_ms} ms (falling behind)")
        if w["starved_streams"]:
            why.append(f"{w['starved_streams']} streams starved")
        for i, report in enumerate(w["canary"]):
            if report["max_gap_s"] > c.freeze_s:
                why.append(f"canary {i} froze {report['max_gap_s']} s")
            if report["fps"] < c.min_canary_fps_ratio * FPS:
                why.append(f"canary {i} decoded {report['fps']} fps")
        return why

    @staticmethod
    def generator_saturated(w: dict[str, Any]) -> bool:
        return bool(
            w["generator_cpu_pct"] >= 90
            or w["generator_loop_lag_p99_ms"] > 50
            or w["udp_drops"].get("generator", 0) > 0
        )

    async def grow(
        self, steps: list[int], window_s: float, settle_s: float, retries: int = 2, max_other_pct: float = 20.0
    ) -> list[dict[str, Any]]:
        """Measure each step; a failed window measured while other work used more than
        ``max_other_pct`` of a core is measured again (up to ``retries`` times)."""
        results = []
        for n in steps:
            not_started = await self.add(n)
            await asyncio.sleep(settle_s)
            for attempt in range(retries + 1):
                await wait_quiet(max_other_pct, self.say, {os.getpid(), self.node.pid})
                w = await self.window(window_s)
                w["failures"] = self.judge(w, not_started)
                w["passed"] = not w["failures"]
                # the stop rule (loss, canary freeze) plus the failures that leave nothing
                # to measure; the latency bound is ours, so growth goes on past it until these fail
                w["passed_issue_criteria"] = not [f for f in w["failures"] if LATENCY_FAILURE not in f]
                w["generator_saturated"] = self.generator_saturated(w)
                w["attempt"] = attempt + 1
                if (
                    w["passed"]
                    or w["other_cpu_pct"] <= max_other_pct
                    or not w["node_alive"]
                    or w["publisher_state"] != "connected"
                    or attempt == retries
                ):
                    break
                self.say(
                    f"{self.label} n={n}: failed while other work used {w['other_cpu_pct']}% "
                    f"({'; '.join(w['failures'])}): measuring again"
                )
                await asyncio.sleep(settle_s)
            self.say(
                f"{self.label} n={n}: {'PASS' if w['passed'] else 'FAIL ' + '; '.join(w['failures'])} | "
                f"loss {w['loss_pct']}% rx {w['received_pps']:.0f} pps, node {w['node_cpu_pct']}% "
                f"gen {w['generator_cpu_pct']}% other {w['other_cpu_pct']}% p50/p99 {w['p50_added_ms']}/"
                f"{w['p99_added_ms']} ms canary {[(c['fps'], c['max_gap_s']) for c in w['canary']]} "
                f"drops {w['udp_drops']} lag99 {w['generator_loop_lag_p99_ms']} ms"
            )
            results.append(w)
            if not w["passed_issue_criteria"]:
                break
        return results


def _ms(seconds: float | None) -> float | None:
    return None if seconds is None else round(seconds * 1000, 2)


async def wait_quiet(max_other_pct: float, say: Any, pids: set[int], longest_s: float = 60.0) -> float:
    """Wait (up to ``longest_s``) until work outside this benchmark uses ≤ ``max_other_pct``
    of a core over one second; returns the last reading."""
    waited = 0.0
    while True:
        other = await asyncio.to_thread(other_cpu_pct, pids)
        if other <= max_other_pct or waited >= longest_s:
            return other
        if waited == 0.0:
            say(f"other work uses {other:.0f}% of a core: waiting up to {longest_s:.0f} s for a quieter machine")
        waited += 1.0
