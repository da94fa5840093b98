"""The quality decision (streams/quality.py) and dynacast (streams/quality_agent.py), on plain data."""

from __future__ import annotations

import random
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

from producers.fields import TrackInfo
from producers.media import EncodingsChanged, QualityDecided, QualitySample, SetLayer, SetPaused
from producers.rtc import PeerJoined, RoomCreated, RoomPlaced, SubscriptionAdded, TrackPublished
from streams.outputs import Outputs
from streams.quality import QualityConfig, decide, new_state
from streams.quality_agent import act, capped, decision_outputs, dynacast, replay
from streams.room_state import RoomState, fold

T0 = datetime(2026, 12, 3, 10, 0, tzinfo=UTC)
LAYERS = ["high", "low", "mid"]
CONFIG = QualityConfig()


def sample(
    t: float,
    loss: float,
    peer: str = "s1",
    kind: str = "video",
    source: str = "cam",
    bandwidth: float | None = None,
    leg: str | None = None,
    layer: str | None = "high",
) -> QualitySample:
    return QualitySample(
        event_id=uuid.uuid5(uuid.NAMESPACE_URL, f"{peer}{source}{kind}{t}"),
        room_id="r1",
        occurred_at=T0 + timedelta(seconds=t),
        peer_id=peer,
        leg=leg or f"sub/{source}",
        source="node",
        loss_pct=loss,
        source_id=source,
        publisher_peer_id="pub",
        kind=kind,
        layer=layer,
        layers=LAYERS if kind == "video" else ["single"],
        bandwidth_kbps=bandwidth,
    )


class Run:
    """Feeds samples every 2 s (video and audio of one publisher) and keeps the decisions."""

    def __init__(self) -> None:
        self.state = new_state()
        self.t = 0.0
        self.decisions: list[tuple[float, str, str]] = []

    def step(self, loss: float, peer: str = "s1", audio_loss: float | None = None) -> None:
        self.t += 2.0
        for s in (
            sample(self.t, loss, peer),
            sample(self.t, loss if audio_loss is None else audio_loss, peer, kind="audio", source="mic"),
        ):
            for c in decide(self.state, s, CONFIG):
                self.decisions.append((self.t, c.layer, c.reason))

    def layer(self, peer: str = "s1") -> str:
        layer: str = self.state["w"][f"{peer}|cam"]["layer"]
        return layer

    def steps(self, seconds: float, loss: float, **kw: Any) -> None:
        for _ in range(int(seconds / 2)):
            self.step(loss, **kw)


def test_loss_steps_down_at_once_and_climbs_back_after_a_pause() -> None:
    run = Run()
    run.steps(10, 0)
    assert run.decisions == []
    run.step(8)  # first sample with loss: 1.5 x mean(0, 8) = 6 -> mid
    assert run.decisions == [(12.0, "mid", "loss")]
    run.steps(10, 15)
    assert run.layer() == "low"
    run.steps(4, 25)
    assert run.layer() == "paused"
    paused_at = run.t
    run.steps(30, 0)  # the video leg is silent while paused: the audio leg tells the loss is gone
    layers = [layer for _, layer, _ in run.decisions]
    assert layers == ["mid", "low", "paused", "high"]
    resumed_at = run.decisions[-1][0]
    assert resumed_at - paused_at <= 14, "resumed at the layer the loss supports, 10 s after it is good"


def test_a_lone_spike_is_damped_and_a_clean_subscriber_is_left_alone() -> None:
    run = Run()
    run.steps(10, 0)
    run.step(9)  # min(9, 1.5 x 4.5) = 6.75 -> mid (a real rise counts within one sample)
    run.steps(4, 0, peer="s2")
    run.step(0)
    assert [layer for _, layer, _ in run.decisions] == ["mid"]
    assert "s2|cam" in run.state["w"] and run.layer("s2") == "high"
    spike = Run()
    spike.steps(10, 0)
    spike.step(12)  # min(12, 9) -> mid, not low
    assert [layer for _, layer, _ in spike.decisions] == ["mid"]


def test_one_noisy_sample_moves_one_step_two_in_a_row_move_further() -> None:
    run = Run()
    run.steps(6, 0)
    run.steps(4, 6.5)  # 8 % on 30 packets a sample measures 6-7 %
    assert run.layer() == "mid"
    run.step(43)  # 13 of 30 packets: one sample, far above the others
    assert run.layer() == "low", "a single sample moves one step, not to paused"
    run.step(30)  # confirmed
    assert run.layer() == "paused"


def test_climbs_one_layer_per_ten_good_seconds() -> None:
    run = Run()
    run.steps(4, 0)
    run.steps(4, 15)
    assert run.layer() == "low"
    down_at = run.t
    run.steps(30, 0)
    ups = [(t, layer) for t, layer, reason in run.decisions if reason == "recovered"]
    assert [layer for _, layer in ups] == ["mid", "high"]
    assert ups[0][0] - down_at >= 10 and ups[1][0] - ups[0][0] >= 10


def _noisy(run: Run, seconds: float, mean: float, packets: int, rng: random.Random) -> None:
    for _ in range(int(seconds / 2)):
        lost = sum(rng.random() < mean / 100 for _ in range(packets))
        run.step(100 * lost / packets)


def test_steady_loss_near_the_thresholds_does_not_flap() -> None:
    for mean in (8.0, 4.5, 9.5, 19.0):
        for seed in range(20):
            run = Run()
            _noisy(run, 60, mean, 100, random.Random(seed))
            assert len(run.decisions) <= 6, (mean, seed, run.decisions)
            changes = [t for t, _, reason in run.decisions if reason == "recovered"]
            assert all(b - a >= 10 for a, b in zip(changes, changes[1:], strict=False))


def test_a_bandwidth_estimate_that_does_not_fit_steps_down_and_blocks_the_way_up() -> None:
    state = new_state()
    for layer, rate in (("high", 1200.0), ("mid", 500.0), ("low", 150.0)):
        decide(state, sample(1, 0, leg=f"pub/cam/{layer}", layer=layer), CONFIG)
        state["rates"][f"cam/{layer}"] = rate
    assert decide(state, sample(2, 0, bandwidth=400), CONFIG) == []  # one short sample is not enough
    [change] = decide(state, sample(4, 0, bandwidth=400), CONFIG)
    assert (change.layer, change.reason) == ("mid", "bandwidth")
    assert all(decide(state, sample(t, 0, bandwidth=400), CONFIG) == [] for t in range(6, 40, 2))
    ups = [c for t in range(40, 64, 2) for c in decide(state, sample(t, 0, bandwidth=2000), CONFIG)]
    assert [c.layer for c in ups] == ["high"]


def test_replay_gives_the_same_facts_with_the_same_ids() -> None:
    samples = [sample(2 * i, loss) for i, loss in enumerate([0, 0, 8, 8, 15, 15, 30, 30] + [0] * 15)]
    live = []
    state = new_state()
    for s in samples:
        changes = decide(state, s, CONFIG)
        if changes:
            live += [o.event for o in decision_outputs(s, changes).items]
    assert live and replay(samples) == live
    assert all(isinstance(f, QualityDecided) and f.room_id == "r1" for f in live)


def _room() -> RoomState:
    cause = sample(0, 0)
    out = Outputs(cause, "r1", T0)
    out.add("rtc.facts", RoomCreated, room_id="r1", room_type="sfu", max_participants=50, empty_timeout_s=300)
    out.add("rtc.facts", RoomPlaced, room_id="r1", node_id="n1")
    for peer in ("pub", "s1", "s2"):
        out.add(
            "rtc.facts",
            PeerJoined,
            room_id="r1",
            peer_id=peer,
            identity=peer,
            session_id=f"{peer}-session",
            gateway_id="gw1",
        )
    for layer in ("high", "mid", "low"):
        out.add(
            "rtc.facts",
            TrackPublished,
            room_id="r1",
            peer_id="pub",
            track=TrackInfo(source_id="cam", kind="camera", layer=layer),
        )
    for peer in ("s1", "s2"):
        out.add("rtc.facts", SubscriptionAdded, room_id="r1", peer_id=peer, source_id="cam")
    room = fold(out.facts())
    assert room is not None
    return room


def test_dynacast_stops_what_nobody_receives_and_starts_it_again() -> None:
    room, state = _room(), new_state()
    decide(state, sample(1, 0, leg="pub/cam/high"), CONFIG)
    out = Outputs(sample(1, 0), "r1", T0)
    assert dynacast(out, room, state)  # everybody on high: mid and low stop
    assert out.items[-1].event.message["active"] == ["high"]  # type: ignore[attr-defined]
    assert not dynacast(out, room, state)
    out = Outputs(sample(1, 0), "r1", T0)
    state["w"]["s1|cam"] = {"layer": "low"}
    state["w"]["s2|cam"] = {"layer": "paused"}
    assert dynacast(out, room, state)
    [fact] = [o.event for o in out.items if isinstance(o.event, EncodingsChanged)]
    assert fact.active == ["low"] and fact.peer_id == "pub"
    [notice] = [o.event.message for o in out.items if o.topic == "gateway.notifications"]  # type: ignore[attr-defined]
    assert notice == {"type": "encodings", "source_id": "cam", "active": ["low"]}
    state["w"]["s2|cam"] = {"layer": "high"}
    assert dynacast(out, room, state)
    assert out.items[-1].event.message["active"] == ["high", "low"]  # type: ignore[attr-defined]
    assert not dynacast(out, room, state)


def test_decisions_command_the_node_and_tell_the_subscriber() -> None:
    room = _room()
    run = Run()
    run.steps(4, 0)
    run.step(30)  # one step at first (high -> mid), the second sample confirms the rest
    s = sample(run.t + 2, 30)
    changes = decide(run.state, s, CONFIG)
    out = decision_outputs(s, changes)
    act(out, room, changes, 10.0)
    kinds = [type(o.event) for o in out.items]
    assert kinds[0] is QualityDecided and SetPaused in kinds
    notice = out.items[-1].event.message  # type: ignore[attr-defined]
    assert notice["type"] == "quality" and notice["layer"] == "paused" and notice["level"] == 5
    resumed = [c for t in range(20, 60, 2) for c in decide(run.state, sample(t, 0, kind="audio", source="mic"), CONFIG)]
    out = decision_outputs(s, resumed)
    act(out, room, resumed, 10.0)
    assert [type(o.event) for o in out.items][:3] == [QualityDecided, SetLayer, SetPaused]
    assert resumed[0].source_id == "cam" and resumed[0].layer == "high"


def test_the_node_forwards_the_lower_of_the_quality_layer_and_the_layer_asked_for() -> None:
    room = _room()
    asked = Outputs(sample(0, 0), "r1", T0)
    asked.add("rtc.facts", SubscriptionAdded, room_id="r1", peer_id="s1", source_id="cam", layer="low")
    room = fold(asked.facts(), room)
    assert room is not None
    assert capped("high", room, "s1", "cam") == "low" and capped("mid", room, "s2", "cam") == "mid"
    run = Run()
    run.steps(4, 0)
    run.steps(4, 15)
    changes = [c for t in range(20, 60, 2) for c in decide(run.state, sample(t, 0), CONFIG)]
    assert [c.layer for c in changes] == ["mid", "high"]  # the quality cap climbs back ...
    out = decision_outputs(sample(60, 0), changes)
    act(out, room, changes, 10.0)
    assert {o.event.layer for o in out.items if isinstance(o.event, SetLayer)} == {"low"}  # ... not the node
