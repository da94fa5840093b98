"""The one process helper of the benchmarks and the tests: ``Child`` runs ``python -m
<module>`` as a child process; plus CPU meters read from /proc.

A child runs in its own session (stopped by process group: SIGTERM, then SIGKILL), with
its output in a log file, optionally dying with its parent (``PR_SET_PDEATHSIG``), pinned
to one core, re-niced, or under cProfile. ``tests/harness.py: Service`` is a ``Child``
that also registers its metrics port with the run's Prometheus; ``bench/sfu_forwarding.py``
runs the node under test as a pinned ``Child``.
"""

from __future__ import annotations

import ctypes
import os
import platform
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

REPO = Path(__file__).resolve().parents[1]

_CLK_TCK = os.sysconf("SC_CLK_TCK")
_PR_SET_PDEATHSIG = 1


def set_nice(nice: int) -> bool:
    """Set this process's (this thread's, and its future threads') nice value; False if not allowed."""
    try:
        os.setpriority(os.PRIO_PROCESS, 0, nice)
    except OSError:
        return False
    return True


def preexec(die_with_parent: bool = True, core: int | None = None, nice: int | None = None) -> Callable[[], None]:
    """What runs in the child between fork and exec."""

    def run() -> None:
        if die_with_parent:
            try:
                ctypes.CDLL("libc.so.6", use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
            except OSError:
                pass
        if core is not None and core >= 0:
            os.sched_setaffinity(0, {core})
        if nice is not None:
            set_nice(nice)

    return run


@dataclass
class Child:
    """A Python module run as a child process: ``python -m <module> <args>`` in ``workdir``
    (Faust writes ``<app id>-data/`` into its cwd), logging to ``log_file`` (default
    ``<workdir>/<name>.log``)."""

    name: str
    module: str
    env: dict[str, str]
    workdir: Path
    args: list[str] = field(default_factory=list)
    extra_pythonpath: list[str] = field(default_factory=list)
    log_file: Path | None = None
    die_with_parent: bool = True
    core: int | None = None
    nice: int | None = None
    #: Run under cProfile, writing the profile here.
    profile_path: Path | None = None
    proc: subprocess.Popen[bytes] | None = None
    _log: IO[bytes] | None = None

    @property
    def log_path(self) -> Path:
        return self.log_file or self.workdir / f"{self.name}.log"

    def start(self) -> Child:
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        path = os.pathsep.join([str(REPO), *self.extra_pythonpath])
        env = {**os.environ, **self.env, "PYTHONPATH": path}
        profile = ["-m", "cProfile", "-o", str(self.profile_path)] if self.profile_path else []
        self._log = self.log_path.open("ab")
        self.proc = subprocess.Popen(
            [sys.executable, *profile, "-m", self.module, *self.args],
            env=env,
            cwd=self.workdir,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
            preexec_fn=preexec(self.die_with_parent, self.core, self.nice),
        )
        return self

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self, timeout: float = 20.0) -> None:
        """SIGTERM to the process group, SIGKILL after ``timeout``."""
        if self.proc is not None and self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signal.SIGTERM)
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(10)
            except ProcessLookupError:
                pass
        self._reap_group()

    def kill(self) -> None:
        """SIGKILL to the process group: no shutdown hooks run."""
        if self.proc is not None and self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            self.proc.wait(10)
        self._reap_group()

    def _reap_group(self) -> None:
        if self.proc is not None:
            try:  # anything left in the group (there should be nothing)
                os.killpg(self.proc.pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
        if self._log is not None:
            self._log.close()
            self._log = None

    def tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def cpu_seconds(self) -> float:
        return process_cpu_seconds(self.pid)

    def remove_workdir(self) -> None:
        shutil.rmtree(self.workdir, ignore_errors=True)


def process_cpu_seconds(pid: int) -> float:
    """utime + stime of a process (all its threads), from /proc/<pid>/stat."""
    raw = Path(f"/proc/{pid}/stat").read_text()
    fields = raw[raw.rindex(")") + 2 :].split()  # after "pid (comm) "
    return (int(fields[11]) + int(fields[12])) / _CLK_TCK


def system_cpu() -> tuple[float, float]:
    """(busy seconds, total seconds) summed over all cores, from /proc/stat."""
    with open("/proc/stat") as f:
        parts = [int(x) for x in f.readline().split()[1:]]
    idle = parts[3] + (parts[4] if len(parts) > 4 else 0)
    total = sum(parts[:8])
    return (total - idle) / _CLK_TCK, total / _CLK_TCK


def _cpu_by_process() -> dict[int, tuple[str, float]]:
    """pid -> (command name, CPU seconds) for every process in /proc."""
    out: dict[int, tuple[str, float]] = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            raw = Path(entry.path, "stat").read_text()
        except OSError:
            continue
        comm = raw[raw.index("(") + 1 : raw.rindex(")")]
        fields = raw[raw.rindex(")") + 2 :].split()
        out[int(entry.name)] = (comm, (int(fields[11]) + int(fields[12])) / _CLK_TCK)
    return out


def _group(pid: int, comm: str, named: dict[int, str]) -> str:
    if pid in named:
        return named[pid]
    if comm == "java":
        try:
            if b"kafka.Kafka" in Path(f"/proc/{pid}/cmdline").read_bytes():
                return "kafka"
        except OSError:
            pass
    if comm.startswith("postgres") or comm.startswith("postmaster"):
        return "postgres"
    return "other"


@dataclass
class CpuMeter:
    """CPU use between ``start`` and ``stop``, in % of one core: of the named processes,
    of the Kafka broker, of Postgres, of everything else on the machine (``other``:
    e.g. someone else's build) and of the whole machine (``machine``: % of all cores)."""

    pids: dict[str, int]
    _t0: float = 0.0
    _p0: dict[int, tuple[str, float]] = field(default_factory=dict)
    _s0: tuple[float, float] = (0.0, 0.0)

    def start(self) -> None:
        self._t0 = time.perf_counter()
        self._p0 = _cpu_by_process()
        self._s0 = system_cpu()

    def stop(self) -> dict[str, float]:
        wall = max(time.perf_counter() - self._t0, 1e-9)
        now = _cpu_by_process()
        named = {pid: name for name, pid in self.pids.items()}
        used: dict[str, float] = {name: 0.0 for name in [*self.pids, "kafka", "postgres", "other"]}
        for pid, (comm, cpu) in now.items():
            before = self._p0.get(pid)
            delta = cpu - before[1] if before is not None and before[0] == comm else cpu
            used[_group(pid, comm, named)] += max(delta, 0.0)
        result = {f"{name}_cpu_pct": round(100.0 * sec / wall, 1) for name, sec in used.items()}
        busy, total = system_cpu()
        if total > self._s0[1]:
            result["machine_cpu_pct"] = round(100.0 * (busy - self._s0[0]) / (total - self._s0[1]), 1)
        return result


class CpuSampler:
    """Samples one process's CPU seconds every ``interval`` s (a cheap /proc read), so its
    CPU use between two instants known only afterwards can be computed."""

    def __init__(self, pid: int, interval: float = 0.1) -> None:
        self.pid = pid
        self.interval = interval
        self.samples: list[tuple[float, float]] = []

    def sample(self) -> None:
        try:
            self.samples.append((time.perf_counter(), process_cpu_seconds(self.pid)))
        except OSError:
            pass

    def pct_between(self, start: float, end: float) -> float | None:
        """% of one core used between the samples nearest to ``start`` and ``end``."""
        if len(self.samples) < 2:
            return None
        a = min(self.samples, key=lambda s: abs(s[0] - start))
        b = min(self.samples, key=lambda s: abs(s[0] - end))
        if b[0] <= a[0]:
            return None
        return round(100.0 * (b[1] - a[1]) / (b[0] - a[0]), 1)


def machine() -> dict[str, Any]:
    model = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "cpu_model": model or platform.processor(),
        "cores": os.cpu_count(),
        "python": platform.python_version(),
        "implementation": platform.python_implementation(),
        "kernel": platform.release(),
    }
