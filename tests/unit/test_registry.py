"""Node liveness and placement decisions."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from producers.fields import NodeLoad
from producers.media import NodeHeartbeat, NodeMarkedAlive, NodeMarkedDead, PlacementRequested
from producers.rtc import RoomPlaced, Tick
from streams.registry import RegistryConfig, RegistryState, handle

T0 = datetime(2026, 1, 1, tzinfo=UTC)
CFG = RegistryConfig(node_timeout_s=5)


def beat(node: str, at: datetime, pps: float = 0.0) -> NodeHeartbeat:
    return NodeHeartbeat.new(node_id=node, started_at=T0, occurred_at=at, load=NodeLoad(packets_per_s=pps))


def feed(state: RegistryState | None, *events: object) -> tuple[RegistryState, list[object]]:
    out: list[object] = []
    assert events
    for event in events:
        state, o = handle(state, event, CFG)  # type: ignore[arg-type]
        out += [x.event for x in o.items]
    assert state is not None
    return state, out


def test_first_heartbeat_marks_alive() -> None:
    state, out = feed(None, beat("n1", T0))
    assert state.nodes["n1"].alive
    assert [type(o) for o in out] == [NodeMarkedAlive]


def test_placement_picks_least_loaded_then_node_id() -> None:
    state, _ = feed(None, beat("n2", T0, pps=100), beat("n1", T0, pps=500), beat("n3", T0, 100))
    state, out = feed(state, PlacementRequested.new(room_id="r1"))
    assert [(o.room_id, o.node_id) for o in out if isinstance(o, RoomPlaced)] == [("r1", "n2")]
    # the next room goes to n3: same packets/s, fewer rooms
    state, out = feed(state, PlacementRequested.new(room_id="r2"))
    assert [o.node_id for o in out if isinstance(o, RoomPlaced)] == ["n3"]


def test_silent_node_is_declared_dead_and_rooms_move() -> None:
    state, _ = feed(None, beat("n1", T0), beat("n2", T0))
    state, _ = feed(state, PlacementRequested.new(room_id="r1"))
    assert state.rooms["r1"] == "n1"
    state, out = feed(state, beat("n2", T0 + timedelta(seconds=4)), Tick.new(now=T0 + timedelta(seconds=6)))
    dead = [o for o in out if isinstance(o, NodeMarkedDead)]
    assert [d.node_id for d in dead] == ["n1"]
    moved = [o for o in out if isinstance(o, RoomPlaced)]
    assert [(m.room_id, m.node_id, m.previous_node_id) for m in moved] == [("r1", "n2", "n1")]


def test_rooms_wait_for_a_node_and_are_placed_when_one_appears() -> None:
    state, out = feed(None, PlacementRequested.new(room_id="r1"))
    assert out == [] and state.rooms == {"r1": None}
    state, out = feed(state, beat("n1", T0))
    assert [o.node_id for o in out if isinstance(o, RoomPlaced)] == ["n1"]
