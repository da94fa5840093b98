"""`make up` brings the whole platform up; `make down` leaves no process behind."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from pathlib import Path

import httpx

from tests.harness import REPO, free_port

COMPONENT_PATTERNS = (
    "kafka.Kafka",
    "minio server",
    "postgres -D",
    "-m streams",
    "-m api",
    "-m media_node",
    "-m recorder",
    "prometheus --config.file",
)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # a zombie is gone for our purposes
    stat = Path(f"/proc/{pid}/stat")
    return stat.exists() and stat.read_text().split()[2] != "Z"


def _processes_mentioning(text: str) -> list[str]:
    out = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            cmdline = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            environ = (proc / "environ").read_bytes().decode(errors="replace")
        except OSError:
            continue
        if (text in cmdline or text in environ) and any(p in cmdline for p in COMPONENT_PATTERNS):
            out.append(f"{proc.name}: {cmdline[:200]}")
    return out


def _free(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def test_make_up_then_down(tmp_path: Path) -> None:
    run_dir = tmp_path / "up"
    ports = {
        name: str(free_port())
        for name in (
            "KAFKA_PORT",
            "KAFKA_CONTROLLER_PORT",
            "PG_PORT",
            "MINIO_PORT",
            "MINIO_CONSOLE_PORT",
            "PROM_PORT",
            "ROOMLOG_API_PORT",
            "ROOMLOG_STREAMS_METRICS_PORT",
            "ROOMLOG_NODE_METRICS_PORT",
            "ROOMLOG_RECORDER_METRICS_PORT",
        )
    }
    # node 2's metrics port is node 1's + 10 (scripts/up.sh): keep it free
    while not _free(int(ports["ROOMLOG_NODE_METRICS_PORT"]) + 10):
        ports["ROOMLOG_NODE_METRICS_PORT"] = str(free_port())
    env = {
        k: v
        for k, v in os.environ.items()
        if k
        not in (
            "KAFKA_BOOTSTRAP",
            "DATABASE_URL",
            "MINIO_ENDPOINT",
            "ROOMLOG_RUN_DIR",
            "PROMETHEUS_URL",
            "PROMETHEUS_TARGETS_DIR",
        )
    }
    env.update(ports, ROOMLOG_RUN_DIR=str(run_dir), ROOMLOG_MEDIA_NODES="2")
    log = (tmp_path / "make-up.log").open("wb")
    up = subprocess.Popen(
        ["make", "up"], cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
    )
    api = f"http://127.0.0.1:{ports['ROOMLOG_API_PORT']}"
    pids: list[int] = []
    try:
        deadline = time.monotonic() + 240
        ready = None
        while time.monotonic() < deadline:
            assert up.poll() is None, (tmp_path / "make-up.log").read_text()[-3000:]
            try:
                ready = httpx.get(f"{api}/readyz", timeout=2)
                if ready.status_code == 200 and "roomlog is up" in (tmp_path / "make-up.log").read_text():
                    break
            except httpx.HTTPError:
                pass
            time.sleep(0.5)
        assert ready is not None and ready.status_code == 200, (tmp_path / "make-up.log").read_text()[-3000:]
        assert ready.json()["status"] == "ready"
        assert httpx.get(f"{api}/healthz").status_code == 200
        metrics = httpx.get(f"{api}/metrics").text
        assert "roomlog_api_requests_total" in metrics
        node_metrics = httpx.get(f"http://127.0.0.1:{ports['ROOMLOG_NODE_METRICS_PORT']}/metrics").text
        assert "roomlog_media_node_heartbeats_total" in node_metrics
        streams_metrics = httpx.get(f"http://127.0.0.1:{ports['ROOMLOG_STREAMS_METRICS_PORT']}/metrics").text
        assert "roomlog_streams_inputs_total" in streams_metrics
        recorder_metrics = httpx.get(f"http://127.0.0.1:{ports['ROOMLOG_RECORDER_METRICS_PORT']}/metrics").text
        assert "roomlog_recorder_segments_uploaded_total" in recorder_metrics
        # the recorder joined its consumer group on recording.commands
        assert "consuming" in (run_dir / "logs" / "recorder.log").read_text()
        # the platform's own Prometheus scrapes the api, the worker, both nodes (media-nodes.json)
        # and the recorder: every target it has is up
        prometheus = f"http://127.0.0.1:{ports['PROM_PORT']}"
        wanted = {("api", "api"), ("streams", "streams"), ("media_node", "node-1"), ("media_node", "node-2")}
        wanted.add(("recorder", "recorder-1"))
        health: dict[tuple[str, str], str] = {}
        while time.monotonic() < deadline and not (set(health) == wanted and set(health.values()) == {"up"}):
            targets = httpx.get(f"{prometheus}/api/v1/targets", timeout=5).json()["data"]["activeTargets"]
            health = {
                (t["labels"].get("service", ""), t["labels"].get("name", "")): t["health"]
                for t in targets
                if t["labels"].get("job") == "roomlog"
            }
            time.sleep(1)
        assert set(health) == wanted and set(health.values()) == {"up"}, targets
        assert all(t["health"] == "up" for t in targets), targets  # Prometheus itself too
        node_2 = httpx.get(f"http://127.0.0.1:{int(ports['ROOMLOG_NODE_METRICS_PORT']) + 10}/metrics").text
        assert "roomlog_media_node_heartbeats_total" in node_2
        # with the alert rules loaded, and none firing on a healthy platform
        rules = httpx.get(f"{prometheus}/api/v1/rules", timeout=5).json()["data"]["groups"]
        alerts = {r["name"]: r["state"] for g in rules for r in g["rules"]}
        assert set(alerts) >= {"RoomlogMediaNodeDown", "RoomlogApiNotReady", "RoomlogStreamsLagging"}, alerts
        assert "firing" not in alerts.values(), alerts
        pids = [int(p.read_text()) for p in (run_dir / "pids").glob("*.pid")]
        assert len(pids) >= 8, sorted(p.name for p in (run_dir / "pids").glob("*.pid"))
        assert _processes_mentioning(str(run_dir)), "could not find the platform's processes"
    finally:
        down = subprocess.run(["make", "down"], cwd=REPO, env=env, capture_output=True, text=True, timeout=180)
        try:
            up.wait(60)
        except subprocess.TimeoutExpired:
            os.killpg(up.pid, signal.SIGKILL)
            raise
    assert down.returncode == 0, down.stdout + down.stderr
    assert up.returncode == 0, (tmp_path / "make-up.log").read_text()[-3000:]
    time.sleep(1)
    assert [p for p in pids if _alive(p)] == []
    assert _processes_mentioning(str(run_dir)) == []
