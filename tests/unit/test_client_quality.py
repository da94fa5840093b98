"""The Python SDK's network-quality level: the one mapping (the same cases as the browser
SDK's test in tests/e2e/test_browser_sdk.py), window figures from cumulative counters,
level 6 after 5 s without packets, and a participant's level combining its legs with
streams' pushed decision."""

from __future__ import annotations

import pytest

from client.quality import (
    DOWN_AFTER_S,
    Counters,
    Leg,
    QualityMeter,
    combine,
    participant_level,
    quality_level,
)
from client.quality_tracker import QualityTracker

#: (loss %, RTT ms or None, silent s) -> level; the JS test has the same table.
CASES = [
    ((0, 20, 0), 1),
    ((0.99, 99, 0), 1),
    ((1, 20, 0), 2),
    ((0, 250, 0), 2),
    ((5, 20, 0), 3),
    ((0, 450, 0), 3),
    ((12, 20, 0), 4),
    ((0, 999, 0), 4),
    ((20, 20, 0), 5),
    ((0, 1500, 0), 5),
    ((12, 450, 0), 4),  # the worse band wins
    ((0, None, 0), 1),  # no RTT measured yet
    ((0, 20, 4.999), 1),
    ((0, 20, 5.0), 6),  # down after 5 s without packets
    ((35, 2000, 6), 6),
]


@pytest.mark.parametrize(("args", "level"), CASES)
def test_the_mapping_follows_the_documented_bands(args: tuple[float, float | None, float], level: int) -> None:
    loss, rtt, silent = args
    assert quality_level(loss, rtt, silent) == level


def test_a_participant_is_the_worse_of_its_legs_and_the_pushed_level() -> None:
    assert participant_level([(0.0, 0.0), (12.0, 0.0)], 20.0, None) == 4  # worst leg
    assert participant_level([(0.0, 0.0)], 20.0, 5) == 5  # streams say worse
    assert participant_level([(12.0, 0.0)], 20.0, 2) == 4  # our own stats say worse
    # down only when every counted leg is silent: paused video with audio flowing is not down
    assert participant_level([(0.0, 9.0), (0.0, 0.0)], 20.0, None) == 1
    assert participant_level([(0.0, 9.0), (0.0, DOWN_AFTER_S)], 20.0, None) == 6
    assert participant_level([], None, None) == 1


def test_the_meter_turns_counters_into_windows() -> None:
    meter = QualityMeter()

    def leg(packets: int, lost: int, nbytes: int) -> Leg:
        return Leg("Pa", "cam", "video", Counters(packets=packets, lost=lost, bytes=nbytes, jitter_ms=3.0, rtt_ms=40.0))

    first = meter.leg(leg(100, 0, 10_000), now=10.0)
    assert (first.level, first.loss_pct, first.bitrate_kbps, first.silent_s) == (1, 0.0, 0.0, 0.0)
    # 2 s later: 170 more received, 30 lost -> 15 % loss, 250 kB -> 1000 kbit/s
    second = meter.leg(leg(270, 30, 260_000), now=12.0)
    assert second.loss_pct == pytest.approx(15.0)
    assert second.bitrate_kbps == pytest.approx(1000.0)
    assert (second.level, second.packets, second.jitter_ms, second.rtt_ms) == (4, 170, 3.0, 40.0)
    # nothing more arrives: silent since t=12, down from t=17
    assert meter.leg(leg(270, 30, 260_000), now=16.9).level == 1
    down = meter.leg(leg(270, 30, 260_000), now=17.0)
    assert (down.level, down.silent_s, down.loss_pct) == (6, 5.0, 0.0)
    assert meter.leg(leg(271, 30, 260_100), now=18.0).level == 1  # one packet: back


def test_the_uplink_is_down_when_the_node_goes_quiet_not_when_our_sending_stops() -> None:
    meter = QualityMeter()
    meter.uplink(Counters(packets=100, lost=0, bytes=1000, rtt_ms=30.0, heard=500), now=0.0)
    # we stopped sending (dynacast) but the node's RTCP keeps arriving: fine
    assert meter.uplink(Counters(packets=100, lost=0, bytes=1000, rtt_ms=30.0, heard=900), now=6.0).level == 1
    # the node is silent for 5 s: down
    assert meter.uplink(Counters(packets=100, lost=0, bytes=1000, rtt_ms=30.0, heard=900), now=11.0).level == 6
    lossy = meter.uplink(Counters(packets=190, lost=10, bytes=1000, rtt_ms=30.0, heard=950), now=13.0)
    assert lossy.loss_pct == pytest.approx(10.0)
    assert lossy.level == 4


def test_combine_leaves_muted_kinds_out_of_the_silence_rule() -> None:
    meter = QualityMeter()
    audio = Leg("Pa", "mic", "audio", Counters(packets=50))
    video = Leg("Pa", "cam", "video", Counters(packets=80))
    meter.leg(audio, 0.0)
    meter.leg(video, 0.0)
    legs = [(audio, meter.leg(audio, 6.0)), (video, meter.leg(video, 6.0))]  # both silent 6 s
    assert combine("Pa", legs, 20.0, set(), {}).level == 6
    assert combine("Pa", legs, 20.0, {"audio", "video"}, {}).level == 1  # muted: nothing expected
    pushed = combine("Pa", legs, 20.0, {"audio", "video"}, {"cam": ("low", 4)})
    assert (pushed.level, pushed.own_level, pushed.pushed_level, pushed.layers) == (4, 1, 4, {"cam": "low"})


def test_the_tracker_combines_pushed_decisions_and_forgets_them() -> None:
    tracker = QualityTracker()
    peers = {"Pa": {"peer_id": "Pa"}, "Pb": {"peer_id": "Pb"}}
    tracker.on_decision(
        {
            "type": "quality",
            "peer_id": "Pa",
            "source_id": "cam-a",
            "layer": "low",
            "previous": "high",
            "level": 4,
            "reason": "loss",
            "loss_pct": 14.0,
        },
        peers,
    )
    assert tracker.quality.levels() == (None, {"Pa": 4})
    tracker.on_decision(
        {
            "type": "quality",
            "peer_id": "Pa",
            "source_id": "cam-a",
            "layer": "high",
            "previous": "mid",
            "level": 1,
            "reason": "recovered",
            "loss_pct": 0.0,
        },
        peers,
    )
    assert tracker.quality.downlink["Pa"].level == 1
    tracker.on_decision(
        {
            "type": "quality",
            "peer_id": "Pb",
            "source_id": "cam-b",
            "layer": "paused",
            "level": 5,
            "reason": "loss",
            "loss_pct": 30.0,
        },
        peers,
    )
    assert tracker.quality.levels() == (None, {"Pa": 1, "Pb": 5})
    assert tracker.quality.downlink["Pb"].layers == {"cam-b": "paused"}
    tracker.on_decision({"type": "quality", "peer_id": "Pz", "level": "bad"}, peers)  # malformed: ignored
    tracker.forget("Pb")
    tracker.on_decision(
        {
            "type": "quality",
            "peer_id": "Pa",
            "source_id": "cam-a",
            "layer": "high",
            "level": 1,
            "reason": "recovered",
            "loss_pct": 0.0,
        },
        {"Pa": {"peer_id": "Pa"}},
    )
    assert tracker.quality.levels() == (None, {"Pa": 1})
