"""``python -m bench.native_core [--json]``: the native core vs the Python path, per core.

One publisher stream (VP8, ~1,100-byte packets, SRTP) fanned out to ``--subscribers`` legs,
each with its own UDP socket (as aioice gives every connection one) sending to a sink on
loopback. Both paths do the same per-packet work and are measured in the same run:

* **native**: ``native.core.Core.run_once``: ``recvmmsg`` → libsrtp unprotect → rewrite
  (forwarder.py's rules, in C) → libsrtp protect → ``sendmmsg`` per socket;
* **python**: ``recvfrom`` → pylibsrtp ``unprotect`` → ``RtpPacket.parse`` →
  ``media_node.forwarder`` ``Encoding.push`` (the node's own Downstream rewrite) → the
  ``OutboundLeg.prepare`` stamping and ``aiortc_glue.serialize`` → pylibsrtp ``protect`` →
  ``sendto``. This is the *cheapest* Python path (the ``direct-send`` experiment's last hop,
  without aiortc's coroutine chain), so the ratio is a lower bound for the node.

The publisher's packets are protected beforehand and written into the node's inbound socket
in bursts of ``--burst``; only the node side is timed, in CPU seconds of this thread
(``time.thread_time``), so the figure is forwarded packets per second of one core. A sink
process (a native core with the subscribers' SSRCs as in streams: it verifies SRTP) counts
what arrives (``delivered``: loss on the way would show there). ``--sustained 50,100`` also
runs the core on its own thread under a publisher paced at ``--in-pps`` for ``--seconds``:
forwarded packets/s, the thread's share of a core, loss. Prints JSON.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Awaitable, Callable
from typing import Any

from aiortc.rtp import RtpPacket
from pylibsrtp import Policy, Session

from media_node.aiortc_glue import ExtensionIds, serialize
from media_node.forwarder import Encoding, Source
from native import core as native

#: --srtp-profile: name -> (libsrtp profile, master key + salt length)
PROFILES = {
    "AEAD_AES_128_GCM": (native.PROFILE_AEAD_AES_128_GCM, 28),
    "AEAD_AES_256_GCM": (native.PROFILE_AEAD_AES_256_GCM, 44),
    "AES128_CM_SHA1_80": (native.PROFILE_AES128_CM_SHA1_80, 30),
}
PROFILE, KEY_LENGTH = PROFILES["AEAD_AES_128_GCM"]
IDS = ExtensionIds(mid=4, abs_send_time=3, audio_level=1)
IN_SSRC = 0x1111
PAYLOAD = 1100


def _session(master: bytes, inbound: bool) -> Session:
    policy = Policy(
        key=master,
        ssrc_type=Policy.SSRC_ANY_INBOUND if inbound else Policy.SSRC_ANY_OUTBOUND,
        srtp_profile=PROFILE,
    )
    policy.allow_repeat_tx = True
    policy.window_size = 1024
    return Session(policy)


def _key(seed: int) -> bytes:
    return bytes((seed * 31 + i * 7) & 0xFF for i in range(KEY_LENGTH))


def publisher_packets(count: int, seq0: int) -> list[bytes]:
    """``count`` SRTP packets of one VP8 stream: a keyframe first, 30 fps, 5 packets a frame."""
    tx = _session(_key(1), inbound=False)
    out = []
    for i in range(count):
        frame, index = divmod(i, 5)
        start = index == 0
        pic = frame & 0x7FFF
        descriptor = bytes((0x80 | (0x10 if start else 0), 0x80, 0x80 | (pic >> 8), pic & 0xFF))
        header = bytes(((0x00 if i == 0 else 0x01) if start else 0x33,))
        payload = descriptor + header + bytes((i + k) & 0xFF for k in range(PAYLOAD))
        packet = RtpPacket(
            payload_type=96,
            marker=int(index == 4),
            sequence_number=(seq0 + i) & 0xFFFF,
            timestamp=(3000 * frame) & 0xFFFFFFFF,
            ssrc=IN_SSRC,
            payload=payload,
        )
        raw = serialize(packet, ExtensionIds())
        assert raw is not None
        out.append(tx.protect(raw))
    return out


def _sink(sock: socket.socket, subscribers: int, done: Any, delivered: Any, lost: Any) -> None:
    """The subscribers' side, in C so that it is not the bottleneck: a native core whose in
    streams are the subscribers' SSRCs (no out streams): it decrypts every datagram (SRTP
    must verify) and counts packets and sequence gaps per stream."""
    _nice(-10)
    core = native.Core()
    leg = core.add_leg(core.add_socket(sock.fileno()), None, PROFILE, _key(4), _key(5))
    ins = [core.add_in(leg, 0x5000 + i, "VP8", 90000) for i in range(subscribers)]
    while not done.is_set():
        core.run_once(100)
    while core.run_once(100):
        pass
    delivered.value = sum(core.in_stats(i)["packets"] for i in ins)
    lost.value = sum(core.in_stats(i)["lost"] for i in ins)


def _big_buffer(sock: socket.socket, option: int, size: int) -> None:
    """SO_RCVBUF/SO_SNDBUF beyond net.core.rmem_max/wmem_max when root (…FORCE), else as allowed."""
    force = {socket.SO_RCVBUF: 33, socket.SO_SNDBUF: 32}[option]  # SO_RCVBUFFORCE, SO_SNDBUFFORCE
    try:
        sock.setsockopt(socket.SOL_SOCKET, force, size)
    except PermissionError:
        sock.setsockopt(socket.SOL_SOCKET, option, size)


def _nice(value: int) -> None:
    """This thread at ``value`` niceness if allowed (the machine is shared: see bench/SFU_FORWARDING.md)."""
    try:
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), value)
    except PermissionError:
        pass


class Rig:
    """The node's sockets (inbound + one per subscriber) and the sink process."""

    def __init__(self, subscribers: int) -> None:
        self.inbound = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        _big_buffer(self.inbound, socket.SO_RCVBUF, 8 << 20)
        self.inbound.bind(("127.0.0.1", 0))
        self.feeder = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.feeder.bind(("127.0.0.1", 0))
        self.feeder.connect(self.inbound.getsockname())
        self.legs = []
        for _ in range(subscribers):
            s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            s.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 1 << 20)
            s.bind(("127.0.0.1", 0))
            self.legs.append(s)
        sink = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        _big_buffer(sink, socket.SO_RCVBUF, 32 << 20)
        sink.bind(("127.0.0.1", 0))
        self.sink_addr: tuple[str, int] = sink.getsockname()
        ctx = multiprocessing.get_context("fork")
        self.done = ctx.Event()
        self.delivered = ctx.Value("q", 0)
        self.lost = ctx.Value("q", 0)
        self.sink = ctx.Process(
            target=_sink, args=(sink, subscribers, self.done, self.delivered, self.lost), daemon=True
        )
        self.sink.start()
        sink.close()

    def close(self) -> int:
        """Stop the sink; the packets it received (``self.lost``: sequence gaps it saw)."""
        self.done.set()
        self.sink.join(30)
        for s in [self.inbound, self.feeder, *self.legs]:
            s.close()
        return int(self.delivered.value)


def run_native(packets: list[bytes], subscribers: int, burst: int) -> dict[str, Any]:
    rig = Rig(subscribers)
    core = native.Core()
    try:
        sock_in = core.add_socket(rig.inbound.fileno())
        pub_leg = core.add_leg(sock_in, rig.feeder.getsockname(), PROFILE, _key(1), _key(2))
        in_id = core.add_in(pub_leg, IN_SSRC, "VP8", 90000)
        for i, s in enumerate(rig.legs):
            leg = core.add_leg(core.add_socket(s.fileno()), rig.sink_addr, PROFILE, _key(3), _key(4))
            core.add_out(leg, in_id, 0x5000 + i, 100, mid_id=4, mid="1", abs_send_time_id=3, initial_seq=i)
        cpu = 0.0
        wall = time.perf_counter()
        for start in range(0, len(packets), burst):
            for data in packets[start : start + burst]:
                rig.feeder.send(data)
            t = time.thread_time()
            while core.run_once(0):
                pass
            cpu += time.thread_time() - t
        wall = time.perf_counter() - wall
        stats = core.stats()
    finally:
        core.close()
        delivered = rig.close()
    forwarded = stats["forwarded"]
    return {
        "forwarded": forwarded,
        "cpu_s": round(cpu, 3),
        "pps_per_core": round(forwarded / cpu) if cpu else None,
        "us_per_packet": round(cpu / forwarded * 1e6, 2) if forwarded else None,
        "delivered": delivered,
        "sendmmsg_calls": stats["sendmmsg_calls"],
        "recvmmsg_calls": stats["recvmmsg_calls"],
        "srtp_errors": stats["srtp_errors"],
        "send_errors": stats["send_errors"],
        "wall_s": round(wall, 3),
    }


class _Upstream:
    uplink_bitrate: int | None = None
    connection = object()

    def codec_of(self, payload_type: int) -> tuple[str, int] | None:
        return ("VP8", 90000)

    async def request_keyframe(self, media_ssrc: int) -> None:
        pass

    async def request_retransmission(self, media_ssrc: int, seqs: list[int]) -> None:
        pass

    async def send_remb(self, bitrate: int, ssrcs: list[int]) -> None:
        pass

    def sender_report(self, ssrc: int | None) -> tuple[int, int] | None:
        return None


class _PythonLeg:
    """``OutboundLeg.prepare`` + ``serialize`` + pylibsrtp protect + ``sendto``."""

    kind = "video"
    ready = True

    def __init__(self, sock: socket.socket, ssrc: int, remote: tuple[str, int]) -> None:
        self.sock = sock
        self.ssrc = ssrc
        self.remote = remote
        self.srtp = _session(_key(4), inbound=False)

    def payload_type(self, codec_name: str) -> int | None:
        return 100

    async def write(self, packet: RtpPacket) -> bool:
        now = time.time() + 2_208_988_800
        ntp = (int(now) << 32) | int((now % 1) * (1 << 32))
        packet.ssrc = self.ssrc
        packet.extensions.mid = "1"
        packet.extensions.abs_send_time = (ntp >> 14) & 0x00FFFFFF
        data = serialize(packet, IDS) or packet.serialize()
        self.sock.sendto(self.srtp.protect(data), self.remote)
        return True

    def on_keyframe_request(self, callback: Callable[[], Awaitable[None]]) -> None:
        pass

    def on_remb(self, callback: Callable[[int], None]) -> None:
        pass

    def on_nack_miss(self, callback: Callable[[list[int]], Awaitable[None]]) -> None:
        pass

    def map_clock(self, ntp: int, rtp: int) -> None:
        pass


async def _python(rig: Rig, packets: list[bytes], subscribers: int, burst: int) -> tuple[int, float]:
    source = Source("pub", "cam", "video")
    encoding: Encoding = source.add_encoding("single", _Upstream())
    legs = [_PythonLeg(s, 0x5000 + i, rig.sink_addr) for i, s in enumerate(rig.legs)]
    for i, leg in enumerate(legs):
        await source.subscribe(f"s{i}", leg, "single", initial_seq=i, initial_ts=0)
    rx = _session(_key(1), inbound=True)
    rig.inbound.setblocking(False)
    cpu = 0.0
    for start in range(0, len(packets), burst):
        for data in packets[start : start + burst]:
            rig.feeder.send(data)
        t = time.thread_time()
        while True:
            try:
                data = rig.inbound.recv(2048)
            except BlockingIOError:
                break
            packet = RtpPacket.parse(rx.unprotect(data))
            await encoding.push(packet)
        cpu += time.thread_time() - t
    return source.packets_forwarded, cpu


def run_python(packets: list[bytes], subscribers: int, burst: int) -> dict[str, Any]:
    rig = Rig(subscribers)
    try:
        wall = time.perf_counter()
        forwarded, cpu = asyncio.run(_python(rig, packets, subscribers, burst))
        wall = time.perf_counter() - wall
    finally:
        delivered = rig.close()
    return {
        "forwarded": forwarded,
        "cpu_s": round(cpu, 3),
        "pps_per_core": round(forwarded / cpu) if cpu else None,
        "us_per_packet": round(cpu / forwarded * 1e6, 2) if forwarded else None,
        "delivered": delivered,
        "wall_s": round(wall, 3),
    }


def _feed(target: tuple[str, int], packets: list[bytes], rate: float, sent: Any) -> None:
    """Send ``packets`` to ``target`` at ``rate`` per second (paced in 5 ms slices)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    start = time.perf_counter()
    i = 0
    while i < len(packets):
        due = min(len(packets), int((time.perf_counter() - start) * rate) + 1)
        while i < due:
            sock.sendto(packets[i], target)
            i += 1
        time.sleep(0.005)
    sent.value = i
    sock.close()


def run_sustained(subscribers: int, in_pps: int, seconds: float) -> dict[str, Any]:
    """The core on its own thread (``run_once(50)``) under a paced publisher for ``seconds``:
    forwarded packets/s (wall), the thread's CPU, and what the sink received (loss)."""
    rig = Rig(subscribers)
    core = native.Core()
    packets = publisher_packets(int(in_pps * seconds), 1000)
    ctx = multiprocessing.get_context("fork")
    sent = ctx.Value("q", 0)
    try:
        sock_in = core.add_socket(rig.inbound.fileno())
        pub_leg = core.add_leg(sock_in, None, PROFILE, _key(1), _key(2))  # any sender (the feeder)
        in_id = core.add_in(pub_leg, IN_SSRC, "VP8", 90000)
        for i, s in enumerate(rig.legs):
            leg = core.add_leg(core.add_socket(s.fileno()), rig.sink_addr, PROFILE, _key(3), _key(4))
            core.add_out(leg, in_id, 0x5000 + i, 100, mid_id=4, mid="1", abs_send_time_id=3, initial_seq=i)
        stop = threading.Event()
        cpu: list[float] = []

        def loop() -> None:
            _nice(-10)
            t = time.thread_time()
            while not stop.is_set():
                core.run_once(50)
            cpu.append(time.thread_time() - t)

        thread = threading.Thread(target=loop)
        thread.start()
        feeder = ctx.Process(target=_feed, args=(rig.inbound.getsockname(), packets, in_pps, sent), daemon=True)
        wall = time.perf_counter()
        feeder.start()
        feeder.join(seconds * 3 + 30)
        wall = time.perf_counter() - wall
        drained = time.perf_counter()
        while core.stats()["rtp_in"] < sent.value and time.perf_counter() - drained < 10:
            time.sleep(0.01)  # a starved core thread may still have packets in its socket
        lag = time.perf_counter() - drained
        stop.set()
        thread.join()
        stats = core.stats()
    finally:
        core.close()
        delivered = rig.close()
    offered = int(sent.value) * subscribers
    return {
        "subscribers": subscribers,
        "offered_pps": round(offered / seconds),
        "forwarded_pps": round(stats["forwarded"] / wall),
        "core_cpu_pct": round(100 * cpu[0] / wall, 1),
        "pps_per_core_cpu": round(stats["forwarded"] / cpu[0]) if cpu and cpu[0] else None,
        "loss_pct": round(100 * (1 - delivered / offered), 3) if offered else None,
        "node_loss_pct": round(100 * (1 - stats["forwarded"] / offered), 3) if offered else None,
        "sink_gaps": int(rig.lost.value),
        "drain_lag_s": round(lag, 2),
        "publisher_sent": int(sent.value),
        "node_received": stats["rtp_in"],
        "send_errors": stats["send_errors"],
        "srtp_errors": stats["srtp_errors"],
        "seconds": round(wall, 2),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0] if __doc__ else None)
    parser.add_argument("--json", action="store_true", help="print one JSON object (the default output anyway)")
    parser.add_argument("--subscribers", type=int, default=50)
    parser.add_argument("--packets", type=int, default=4000, help="publisher packets per path")
    parser.add_argument("--python-packets", type=int, default=800, help="publisher packets for the Python path")
    parser.add_argument("--burst", type=int, default=32, help="publisher packets written before each node pass")
    parser.add_argument("--repeat", type=int, default=3, help="runs per path; the best CPU figure is kept")
    parser.add_argument("--srtp-profile", choices=sorted(PROFILES), default="AEAD_AES_128_GCM")
    parser.add_argument(
        "--sustained",
        default="",
        help="also run the core on its own thread under a paced publisher: comma-separated subscriber counts",
    )
    parser.add_argument("--in-pps", type=int, default=1000, help="publisher packets/s for --sustained")
    parser.add_argument("--seconds", type=float, default=8.0, help="length of each --sustained step")
    args = parser.parse_args(argv)
    global PROFILE, KEY_LENGTH
    PROFILE, KEY_LENGTH = PROFILES[args.srtp_profile]
    if not native.available():
        print("native core not built: run `make native`", file=sys.stderr)
        return 2
    native_runs = [
        run_native(publisher_packets(args.packets, 1000), args.subscribers, args.burst) for _ in range(args.repeat)
    ]
    python_runs = [
        run_python(publisher_packets(args.python_packets, 1000), args.subscribers, args.burst)
        for _ in range(args.repeat)
    ]
    best_native = max(native_runs, key=lambda r: r["pps_per_core"] or 0)
    best_python = max(python_runs, key=lambda r: r["pps_per_core"] or 0)
    sustained = [run_sustained(int(n), args.in_pps, args.seconds) for n in args.sustained.split(",") if n]
    uptime = subprocess.run(["uptime"], capture_output=True, text=True, check=False).stdout.strip()
    result = {
        "native_pps_per_core": best_native["pps_per_core"],
        "python_pps_per_core": best_python["pps_per_core"],
        "native_to_python": round(best_native["pps_per_core"] / best_python["pps_per_core"], 1),
        "native_us_per_packet": best_native["us_per_packet"],
        "python_us_per_packet": best_python["us_per_packet"],
        "subscribers": args.subscribers,
        "profile": args.srtp_profile,
        "payload_bytes": PAYLOAD,
        "burst": args.burst,
        "sustained": sustained,
        "native_runs": native_runs,
        "python_runs": python_runs,
        "uptime": uptime,
        "cpus": os.cpu_count(),
    }
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
