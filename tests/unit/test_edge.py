"""The edge agent's parts without a network: the sqlite command store survives a restart
and never lets an id run twice, backoff with full jitter, camera streams one per camera
(a fake stands in for edge/rtsp.py's CameraStream, which the RTSP work provides)."""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from edge.agent import backoff
from edge.cameras import Cameras, StreamFailed
from edge.config import CameraSection, load
from edge.errors import ConfigError
from edge.gates import SimulatedGate
from edge.store import INTERRUPTED, CommandStore


def test_store_runs_an_id_once_and_survives_a_restart(tmp_path: Path) -> None:
    path = tmp_path / "c.sqlite"
    store = CommandStore(path)
    assert store.begin("c1", "open-gate") is True
    assert store.begin("c1", "open-gate") is False
    store.finish("c1", True, None, {"gate_id": "g1"})
    assert store.begin("c2", "open-gate") is True  # killed while running
    store.close()

    again = CommandStore(path)
    assert again.begin("c1", "open-gate") is False
    interrupted = again.interrupted()
    assert [(o.command_id, o.ok, o.error) for o in interrupted] == [("c2", False, INTERRUPTED)]
    assert [(o.command_id, o.ok, o.result) for o in again.unreported()] == [
        ("c1", True, {"gate_id": "g1"}),
        ("c2", False, {}),
    ]
    again.mark_reported("c1")
    assert [o.command_id for o in again.unreported()] == ["c2"]
    outcome = again.get("c1")
    assert outcome is not None and outcome.reported and outcome.status == "done"


async def test_simulated_gate_appends_one_line_per_opening(tmp_path: Path) -> None:
    gate = SimulatedGate("g1", tmp_path / "g1.state")
    assert await gate.open("c1") == {"gate_id": "g1", "state": "open"}
    await gate.open("c2")
    assert [o["command_id"] for o in gate.openings()] == ["c1", "c2"]


def test_backoff_is_jittered_and_capped() -> None:
    rng = random.Random(7)
    delays = [backoff(n, 0.5, 10.0, rng) for n in range(12)]
    assert all(0.05 <= d <= 10.0 for d in delays)
    assert max(delays[:2]) <= 1.0
    assert len({round(d, 6) for d in delays}) == len(delays)


class FakeStream:
    """Stands in for edge.rtsp.CameraStream: start/stop and the failure callback."""

    made: list[FakeStream] = []

    def __init__(self, rtsp_url: str, api_url: str, token: str, room: str, source_id: str, *, on_failure) -> None:  # type: ignore[no-untyped-def]
        self.args = (rtsp_url, api_url, token, room, source_id)
        self.on_failure = on_failure
        self.started = self.stopped = False
        FakeStream.made.append(self)

    async def start(self) -> None:
        if "bad" in self.args[0]:
            raise RuntimeError("connection refused")
        self.started = True

    async def stop(self) -> None:
        self.stopped = True


async def test_one_stream_per_camera_and_failures_reported() -> None:
    FakeStream.made.clear()
    ended: list[tuple[str, str]] = []

    async def on_ended(camera: str, reason: str) -> None:
        ended.append((camera, reason))

    cams = [CameraSection(id="cam1", rtsp_url="rtsp://cam/1"), CameraSection(id="cam2", rtsp_url="rtsp://bad/2")]
    cameras = Cameras(cams, "http://api", FakeStream, on_ended)
    r1 = await cameras.start("cam1", "station:s:cam1", "camera", "tok")
    r2 = await cameras.start("cam1", "station:s:cam1", "camera", "tok")
    assert r1 == r2 and len(FakeStream.made) == 1 and cameras.live() == ["cam1"]
    with pytest.raises(StreamFailed, match="connection refused"):
        await cameras.start("cam2", "station:s:cam2", "camera", "tok")
    await FakeStream.made[0].on_failure("rtsp dropped")
    assert ended == [("cam1", "rtsp dropped")] and cameras.live() == []
    await cameras.start("cam1", "station:s:cam1", "camera", "tok")
    assert (await cameras.stop("cam1"))["stopped"] is True and FakeStream.made[-1].stopped


def test_config_errors_are_clear(tmp_path: Path) -> None:
    path = tmp_path / "bad.toml"
    path.write_text('[station]\nid = "bad id!"\n')
    with pytest.raises(ConfigError, match="station.id"):
        load(path)
    path.write_text(
        '[station]\nid = "ok"\n[[gates]]\nid = "g"\nstate_file = "a"\n[[gates]]\nid = "g"\nstate_file = "b"\n'
    )
    with pytest.raises(ConfigError, match="unique"):
        load(path)
