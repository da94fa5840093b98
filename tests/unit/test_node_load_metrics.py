"""The media node's room-level Prometheus gauges: subscriber loss per room (the input of
RoomlogSubscriberLoss) is the packet-weighted loss of the room's subscriber legs in the
last sampling round that carried packets (a paused round keeps it), and a room without
subscriber legs loses its series."""

from __future__ import annotations

from typing import Any

from prometheus_client import REGISTRY

from media_node.quality import QualitySampler
from producers.media import QualitySample


def sample(room: str, leg: str, loss_pct: float, packets: int) -> QualitySample:
    return QualitySample.new(
        room_id=room, peer_id="p1", leg=leg, source="node", loss_pct=loss_pct, bitrate_kbps=0.0, packets=packets
    )


def loss(room: str) -> Any:
    return REGISTRY.get_sample_value("roomlog_media_node_subscriber_loss_ratio", {"room": room})


def test_room_loss_is_packet_weighted_over_subscriber_legs_and_forgotten_with_the_room() -> None:
    sampler = QualitySampler(peers=None, producer=None, topic="t")  # type: ignore[arg-type]
    sampler._export_room_loss(
        [
            sample("r-loss-a", "sub/cam", 20.0, 300),  # 60 of 300
            sample("r-loss-a", "sub/mic", 0.0, 100),
            sample("r-loss-a", "pub/cam/high", 50.0, 1000),  # a publisher leg: not a subscriber's loss
            sample("r-loss-b", "sub/cam", 0.0, 0),  # paused: nothing sent
        ]
    )
    assert loss("r-loss-a") == 60 / 400
    assert loss("r-loss-b") == 0.0
    # a's video paused (no packets this round): a keeps its last loss, not 0
    sampler._export_room_loss([sample("r-loss-a", "sub/cam", 0.0, 0), sample("r-loss-b", "sub/cam", 10.0, 50)])
    assert loss("r-loss-a") == 60 / 400
    assert loss("r-loss-b") == 0.1
    sampler._export_room_loss([sample("r-loss-b", "sub/cam", 10.0, 50)])  # a's subscribers left
    assert loss("r-loss-a") is None
