"""Meters of the SFU benchmark, read from /proc (the node under test runs as a pinned
``bench.procs.Child``, the one process helper).

* CPU: utime+stime of a process (all threads) from ``/proc/<pid>/stat``; the machine's
  busy time from ``/proc/stat`` (what is left after the node, the generator and Kafka is
  interference from other work on the machine).
* UDP drops per socket from ``/proc/net/udp`` (the network namespace's sockets), split by
  owner (node, generator): who could not keep up.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from pathlib import Path

from bench.procs import REPO, set_nice
from bench.procs import process_cpu_seconds as cpu_seconds

__all__ = ["REPO", "Meter", "cpu_seconds", "machine_busy", "other_cpu_pct", "set_nice", "udp_drops"]

CLK_TCK = os.sysconf("SC_CLK_TCK")


def machine_busy() -> tuple[float, float, float]:
    """(busy, total, steal) CPU seconds over all cores since boot; steal is time the
    hypervisor gave this VM's CPUs to someone else (counted neither busy nor idle here)."""
    with open("/proc/stat") as f:
        parts = [int(x) for x in f.readline().split()[1:]]
    idle, steal = parts[3] + parts[4], parts[7]
    total = sum(parts[:7])
    return (total - idle) / CLK_TCK, total / CLK_TCK, steal / CLK_TCK


def kafka_pids() -> list[int]:
    out = []
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            try:
                if b"kafka.Kafka" in Path(entry.path, "cmdline").read_bytes():
                    out.append(int(entry.name))
            except OSError:
                continue
    return out


def _socket_inodes(pid: int) -> set[int]:
    inodes = set()
    try:
        for fd in os.scandir(f"/proc/{pid}/fd"):
            try:
                target = os.readlink(fd.path)
            except OSError:
                continue
            if target.startswith("socket:["):
                inodes.add(int(target[8:-1]))
    except OSError:
        pass
    return inodes


def udp_drops(owners: dict[str, int]) -> dict[str, int]:
    """Packets dropped so far by the UDP sockets of each owner (name -> pid), per owner."""
    by_inode: dict[int, int] = {}
    for name in ("/proc/net/udp", "/proc/net/udp6"):
        try:
            lines = Path(name).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            cols = line.split()
            by_inode[int(cols[9])] = int(cols[-1])
    out = {}
    for owner, pid in owners.items():
        out[owner] = sum(by_inode.get(inode, 0) for inode in _socket_inodes(pid))
    return out


@dataclass
class Meter:
    """CPU of the node, the generator (this process), Kafka and the rest, over a window."""

    node_pid: int
    t0: float = 0.0
    cpu0: dict[str, float] = field(default_factory=dict)
    machine0: tuple[float, float, float] = (0.0, 0.0, 0.0)
    kafka: list[int] = field(default_factory=list)

    def _read(self) -> dict[str, float]:
        out = {"node": cpu_seconds(self.node_pid), "generator": cpu_seconds(os.getpid()), "kafka": 0.0}
        for pid in self.kafka:
            try:
                out["kafka"] += cpu_seconds(pid)
            except OSError:
                pass
        return out

    def start(self) -> None:
        self.kafka = kafka_pids()
        self.t0, self.cpu0, self.machine0 = time.perf_counter(), self._read(), machine_busy()

    def stop(self) -> dict[str, float]:
        wall = time.perf_counter() - self.t0
        now, machine = self._read(), machine_busy()
        pct = {f"{k}_cpu_pct": round(100 * (now[k] - self.cpu0[k]) / wall, 1) for k in now}
        busy = 100 * (machine[0] - self.machine0[0]) / wall  # % of one core, summed over cores
        pct["machine_cpu_pct_of_one_core"] = round(busy, 1)
        pct["other_cpu_pct"] = round(max(0.0, busy - sum(pct[f"{k}_cpu_pct"] for k in now)), 1)
        pct["steal_cpu_pct"] = round(100 * (machine[2] - self.machine0[2]) / wall, 1)
        return pct


def other_cpu_pct(pids: set[int], seconds: float = 1.0) -> float:
    """% of one core used over ``seconds`` by everything except ``pids`` and Kafka (blocking)."""
    ours = set(pids) | set(kafka_pids())

    def mine() -> float:
        total = 0.0
        for pid in ours:
            try:
                total += cpu_seconds(pid)
            except OSError:
                pass
        return total

    m0, c0, t0 = machine_busy()[0], mine(), time.perf_counter()
    time.sleep(seconds)
    m1, c1, t1 = machine_busy()[0], mine(), time.perf_counter()
    return max(0.0, 100 * ((m1 - m0) - (c1 - c0)) / (t1 - t0))
