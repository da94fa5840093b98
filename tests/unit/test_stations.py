"""The station decision (streams/stations.py) and the viewer count (streams/stations_viewers.py),
with plain data: registry, commands at most once, timeouts, one stream per camera, idle stop."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

from producers.envelope import Event
from producers.rtc import Notification, PeerJoined, PeerLeft, Tick
from producers.sessions import (
    StationCamera,
    StationCommand,
    StationCommandAcked,
    StationCommandCompleted,
    StationCommandTimedOut,
    StationHeartbeat,
    StationRegistered,
    StationWentOffline,
    StreamReady,
    StreamRequested,
)
from producers.stations import (
    StationCommandOutcome,
    StationCommandRejected,
    StationCommandRequested,
    StationStreamEnded,
    StationViewersChanged,
    StationWentOnline,
    StreamFailed,
    StreamStopped,
)
from streams import stations_viewers
from streams.stations import StationConfig, StationState, handle, next_deadline

T0 = datetime(2026, 12, 3, 12, 0, tzinfo=UTC)
CONFIG = StationConfig(command_timeout_s=10, stream_start_timeout_s=20, idle_stop_s=30)


def at(s: float) -> datetime:
    return T0 + timedelta(seconds=s)


class Run:
    def __init__(self) -> None:
        self.state: StationState | None = None
        self.out: list[Event] = []

    def __call__(self, event: Event) -> list[Event]:
        self.state, outputs = handle(self.state, event, CONFIG, station_id="bj_01")
        got = [o.event for o in outputs.items]
        self.out += got
        return got


def register(run: Run, s: float = 0, session: str = "Sst1", **extra: Any) -> list[Event]:
    return run(
        StationRegistered.new(
            occurred_at=at(s),
            station_id="bj_01",
            gateway_id="gw1",
            session_id=session,
            name="Beijing 1",
            site="Beijing",
            camera_info=[StationCamera(camera_id="cam1", name="Gate cam")],
            gates=["g1"],
            heartbeat_s=2.0,
            **extra,
        )
    )


def tick(s: float) -> Tick:
    return Tick.new(occurred_at=at(s), now=at(s))


def messages(events: list[Event], session: str | None = None) -> list[dict[str, Any]]:
    return [e.message for e in events if isinstance(e, Notification) and (session is None or session in e.sessions())]


def test_register_online_offline_after_three_missed_heartbeats_and_back() -> None:
    run = Run()
    out = register(run)
    online = [e for e in out if isinstance(e, StationWentOnline)]
    assert len(online) == 1 and online[0].site == "Beijing" and online[0].cameras[0].camera_id == "cam1"
    run(StationHeartbeat.new(occurred_at=at(2), station_id="bj_01", gateway_id="gw1", session_id="Sst1"))
    assert run.state is not None and next_deadline(run.state, CONFIG) == at(8)
    assert not [e for e in run(tick(7.9)) if isinstance(e, StationWentOffline)]
    out = run(tick(8))
    assert [e.reason for e in out if isinstance(e, StationWentOffline)] == ["heartbeats-missed"]
    assert run.state.status == "offline" and next_deadline(run.state, CONFIG) is None
    out = run(StationHeartbeat.new(occurred_at=at(9), station_id="bj_01", gateway_id="gw1", session_id="Sst1"))
    assert [type(e) for e in out] == [StationWentOnline] and run.state.status == "online"


def test_heartbeat_of_an_unregistered_station_is_ignored() -> None:
    run = Run()
    assert run(StationHeartbeat.new(station_id="bj_01", gateway_id="gw1", session_id="S1")) == []
    assert run.state is not None and not run.state.registered


def gate(run: Run, command_id: str, s: float, session: str = "Sop", gate_id: str = "g1") -> list[Event]:
    return run(
        StationCommandRequested.new(
            occurred_at=at(s),
            station_id="bj_01",
            command_id=command_id,
            kind="open-gate",
            payload={"gate_id": gate_id},
            requested_by="op",
            gateway_id="gw2",
            session_id=session,
        )
    )


def test_open_gate_is_sent_once_acked_and_completed_with_one_outcome() -> None:
    run = Run()
    register(run)
    out = gate(run, "c1", 1)
    commands = [e for e in out if isinstance(e, StationCommand)]
    assert len(commands) == 1 and commands[0].deadline == at(11) and commands[0].session_id == "Sst1"
    assert [m["kind"] for m in messages(out, "Sst1")] == ["open-gate"]
    assert [m["status"] for m in messages(out, "Sop")] == ["sent"]
    # a retry with the same id sends nothing to the station
    out = gate(run, "c1", 2, session="Sop2")
    assert not [e for e in out if isinstance(e, StationCommand)] and not messages(out, "Sst1")
    assert [m["status"] for m in messages(out, "Sop2")] == ["sent"]
    out = run(StationCommandAcked.new(occurred_at=at(3), station_id="bj_01", command_id="c1"))
    assert [m["status"] for m in messages(out, "Sop")] == ["acked"]
    out = run(StationCommandCompleted.new(occurred_at=at(4), station_id="bj_01", command_id="c1", ok=True))
    assert [m["status"] for m in messages(out, "Sop")] == ["succeeded"]
    assert [e.status for e in run.out if isinstance(e, StationCommandOutcome)] == ["acked", "succeeded"]
    # a duplicate completion and a late retry change nothing; the retry hears the outcome
    assert run(StationCommandCompleted.new(occurred_at=at(5), station_id="bj_01", command_id="c1", ok=True)) == []
    out = gate(run, "c1", 6)
    assert [m["status"] for m in messages(out)] == ["succeeded"] and not [
        e for e in out if isinstance(e, StationCommand)
    ]
    assert not [e for e in run(tick(30)) if isinstance(e, StationCommandTimedOut)]


def test_a_command_nobody_answers_times_out_and_a_late_completion_is_ignored() -> None:
    run = Run()
    register(run)
    gate(run, "c1", 1)
    run(StationHeartbeat.new(occurred_at=at(6), station_id="bj_01"))
    assert not [e for e in run(tick(10.9)) if isinstance(e, StationCommandTimedOut)]
    out = run(tick(11))
    assert [e.command_id for e in out if isinstance(e, StationCommandTimedOut)] == ["c1"]
    assert [m["status"] for m in messages(out, "Sop")] == ["timed-out"]
    out = run(StationCommandCompleted.new(occurred_at=at(12), station_id="bj_01", command_id="c1", ok=True))
    assert out == []


def test_pending_commands_are_redelivered_to_the_new_socket() -> None:
    run = Run()
    register(run)
    gate(run, "c1", 1)
    out = register(run, 3, session="Sst2")
    assert [m["command_id"] for m in messages(out, "Sst2") if m["type"] == "command"] == ["c1"]


def test_bad_requests_are_rejected_with_codes() -> None:
    run = Run()
    out = gate(run, "c0", 0)
    assert [e.code for e in out if isinstance(e, StationCommandRejected)] == ["station_not_found"]
    register(run)
    out = gate(run, "c1", 1, gate_id="g9")
    assert [e.code for e in out if isinstance(e, StationCommandRejected)] == ["gate_not_found"]
    assert [m["code"] for m in messages(out, "Sop")] == ["gate_not_found"]
    out = run(stream_request("cam9", "r1", 1))
    assert [e.code for e in out if isinstance(e, StationCommandRejected)] == ["camera_not_found"]
    assert [m["type"] for m in messages(out, "Sop")] == ["stream-failed"]
    run(tick(7))
    out = gate(run, "c2", 8)
    assert [e.code for e in out if isinstance(e, StationCommandRejected)] == ["station_offline"]
    assert not [e for e in run.out if isinstance(e, StationCommand)]


def stream_request(camera: str, command_id: str, s: float, session: str = "Sop") -> StreamRequested:
    return StreamRequested.new(
        occurred_at=at(s),
        station_id="bj_01",
        camera_id=camera,
        viewer_id="op",
        command_id=command_id,
        gateway_id="gw2",
        session_id=session,
    )


def beat(run: Run, until: float) -> None:
    s = 0.0
    while s <= until:
        run(StationHeartbeat.new(occurred_at=at(s), station_id="bj_01"))
        s += 2


def test_one_stream_per_camera_ready_for_every_viewer_then_idle_stop() -> None:
    run = Run()
    register(run)
    out = run(stream_request("cam1", "r1", 1))
    starts = [e for e in out if isinstance(e, StationCommand)]
    assert [(c.kind, c.payload["room_id"]) for c in starts] == [("start-stream", "station:bj_01:cam1")]
    out = run(stream_request("cam1", "r2", 1.5, session="Sop2"))
    assert not [e for e in out if isinstance(e, StationCommand)] and not messages(out)
    out = run(StationCommandCompleted.new(occurred_at=at(2), station_id="bj_01", command_id="r1", ok=True))
    ready = [e for e in out if isinstance(e, StreamReady)]
    assert len(ready) == 1 and ready[0].whep_url == "/v1/whep/station:bj_01:cam1/camera"
    assert sorted(m["type"] for m in messages(out)) == ["stream-ready", "stream-ready"]
    out = run(stream_request("cam1", "r3", 2.5, session="Sop3"))
    assert [m["room"] for m in messages(out, "Sop3")] == ["station:bj_01:cam1"]
    assert not [e for e in out if isinstance(e, StationCommand)]
    viewers = StationViewersChanged.new(
        occurred_at=at(3), station_id="bj_01", camera_id="cam1", room_id="station:bj_01:cam1", viewers=2
    )
    run(viewers)
    beat(run, 92)
    assert not [e for e in run(tick(50)) if isinstance(e, StationCommand)]
    run(viewers.model_copy(update={"viewers": 0, "occurred_at": at(60), "event_id": uuid.uuid4()}))
    assert not [e for e in run(tick(89)) if isinstance(e, StationCommand)]
    out = run(tick(90))
    assert [(c.kind, c.payload) for c in out if isinstance(c, StationCommand)] == [
        ("stop-stream", {"camera_id": "cam1"})
    ]
    assert [e.reason for e in out if isinstance(e, StreamStopped)] == ["idle"]
    assert run.state is not None and run.state.streams == {} and run.state.pending == {}


def test_a_stream_that_fails_or_ends_is_reported() -> None:
    run = Run()
    register(run)
    run(stream_request("cam1", "r1", 1))
    out = run(
        StationCommandCompleted.new(
            occurred_at=at(2), station_id="bj_01", command_id="r1", ok=False, error="rtsp: connection refused"
        )
    )
    assert [e.reason for e in out if isinstance(e, StreamFailed)] == ["rtsp: connection refused"]
    assert [m["type"] for m in messages(out, "Sop")] == ["stream-failed"]
    run(stream_request("cam1", "r2", 3))
    run(StationCommandCompleted.new(occurred_at=at(4), station_id="bj_01", command_id="r2", ok=True))
    out = run(StationStreamEnded.new(occurred_at=at(5), station_id="bj_01", camera_id="cam1", reason="eof"))
    assert [e.reason for e in out if isinstance(e, StreamFailed)] == ["eof"]


def test_viewers_count_excludes_the_station_publisher_and_hidden_peers() -> None:
    room = "station:bj_01:cam1"
    state = None
    counts = []
    joins = [("Ppub", "station:bj_01", False), ("Pa", "op", False), ("Prec", "rec", True), ("Pb", "op2", False)]
    for peer, identity, hidden in joins:
        event = PeerJoined.new(
            room_id=room, peer_id=peer, identity=identity, session_id="S", gateway_id="gw", hidden=hidden
        )
        state, out = stations_viewers.handle(state, event, room)
        counts += [o.event.viewers for o in out.items if isinstance(o.event, StationViewersChanged)]
    for peer in ("Pa", "Pb"):
        state, out = stations_viewers.handle(state, PeerLeft.new(room_id=room, peer_id=peer, reason="left"), room)
        counts += [o.event.viewers for o in out.items if isinstance(o.event, StationViewersChanged)]
    assert counts == [1, 2, 1, 0]
    assert stations_viewers.parse_room("room-1") is None
    assert stations_viewers.parse_room(room) == ("bj_01", "cam1")


def test_projection_runs_keep_order_and_never_hold_a_row_twice() -> None:
    from streams.stations_projection import ACKED, ONLINE, SENT, runs

    rows = [
        (ONLINE, {"station_id": "a"}),
        (ONLINE, {"station_id": "b"}),
        (ONLINE, {"station_id": "a"}),
        (SENT, {"command_id": "c1"}),
        (ACKED, {"k_command_id": "c1"}),
        (SENT, {"command_id": "c2"}),
    ]
    assert [(stmt, [next(iter(p.values())) for p in many]) for stmt, many in runs(rows)] == [
        (ONLINE, ["a", "b"]),
        (ONLINE, ["a"]),
        (SENT, ["c1"]),
        (ACKED, ["c1"]),
        (SENT, ["c2"]),
    ]
