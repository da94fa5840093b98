"""Dynacast in the Python SDK with real aiortc peers over loopback (run inside
``scripts/netns.sh``): an ``encodings`` message stops the RTP of the encodings it leaves out
(the sender's own getStats stops counting, the viewer stops receiving) and starts them
again with a keyframe as the first packet."""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pytest
from aiortc import RTCConfiguration, RTCPeerConnection, RTCRtpReceiver, RTCRtpSender
from aiortc.rtp import RtpPacket

from client.aiortc_glue import check_sender_internals, is_sending
from client.room import LocalTrack, apply_encodings
from client.synthetic import PatternVideoTrack, ToneAudioTrack
from media_node.keyframes import vp8_keyframe_start

CONFIG = RTCConfiguration(iceServers=[])

pytestmark = pytest.mark.skipif(
    [name for _, name in socket.if_nameindex()] != ["lo"],
    reason="connects real peers: run inside scripts/netns.sh (make test does)",
)


@dataclass
class Arrivals:
    """RTP packets one viewer receiver got: (monotonic time, starts a VP8 keyframe?)."""

    packets: list[tuple[float, bool]] = field(default_factory=list)

    def since(self, t: float) -> list[tuple[float, bool]]:
        return [p for p in self.packets if p[0] >= t]


def spy(receiver: RTCRtpReceiver) -> Arrivals:
    arrivals = Arrivals()
    real = receiver._handle_rtp_packet

    async def handle(packet: RtpPacket, arrival_time_ms: int) -> None:
        arrivals.packets.append((time.monotonic(), vp8_keyframe_start(packet.payload)))
        await real(packet, arrival_time_ms=arrival_time_ms)

    receiver._handle_rtp_packet = handle  # type: ignore[method-assign]
    return arrivals


async def sent(sender: RTCRtpSender) -> int:
    stats = [s for s in (await sender.getStats()).values() if getattr(s, "type", None) == "outbound-rtp"]
    return int(stats[0].packetsSent)


async def eventually(check: Callable[[], Any], timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.02)


async def test_encodings_stop_and_restart_rtp_with_a_keyframe() -> None:
    publisher, viewer = RTCPeerConnection(CONFIG), RTCPeerConnection(CONFIG)
    published = [
        LocalTrack(PatternVideoTrack(1, 320, 180, fps=15), "cam-1", "camera", "high"),
        LocalTrack(PatternVideoTrack(1, 160, 90, fps=15), "cam-1", "camera", "low"),
        LocalTrack(ToneAudioTrack(), "mic-1", "microphone"),
    ]
    senders = [(t, publisher.addTransceiver(t.track, direction="sendonly")) for t in published]
    try:
        await publisher.setLocalDescription(await publisher.createOffer())
        await viewer.setRemoteDescription(publisher.localDescription)
        arrivals = {t.mid: spy(t.receiver) for t in viewer.getTransceivers()}
        await viewer.setLocalDescription(await viewer.createAnswer())
        await publisher.setRemoteDescription(viewer.localDescription)
        high, low, mic = (tr for _, tr in senders)
        for transceiver in (high, low, mic):
            check_sender_internals(transceiver.sender)
        await eventually(lambda: all(len(arrivals[t.mid].packets) > 20 for t in (high, low, mic)))

        # only low is needed: high stops, low and the microphone go on
        assert apply_encodings(senders, {"type": "encodings", "source_id": "cam-1", "active": ["low"]}) == ["low"]
        assert (is_sending(high.sender), is_sending(low.sender), is_sending(mic.sender)) == (False, True, True)
        await asyncio.sleep(0.5)  # a frame being encoded when it stopped may still go out
        high_sent, low_sent, stopped = await sent(high.sender), await sent(low.sender), time.monotonic()
        await asyncio.sleep(1.5)
        assert await sent(high.sender) == high_sent, "high still sends RTP"
        assert arrivals[high.mid].since(stopped) == [], "the viewer still receives high"
        assert await sent(low.sender) > low_sent + 10
        assert len(arrivals[mic.mid].since(stopped)) > 20

        # nobody needs any video of the source: low stops too; the microphone is never stopped
        apply_encodings(senders, {"type": "encodings", "source_id": "cam-1", "active": []})
        apply_encodings(senders, {"type": "encodings", "source_id": "mic-1", "active": []})
        await asyncio.sleep(0.5)
        low_sent, stopped = await sent(low.sender), time.monotonic()
        await asyncio.sleep(1.0)
        assert await sent(low.sender) == low_sent and arrivals[low.mid].since(stopped) == []
        assert len(arrivals[mic.mid].since(stopped)) > 20

        # high is needed again: RTP within a second, and its first packet starts a keyframe
        resumed = time.monotonic()
        apply_encodings(senders, {"type": "encodings", "source_id": "cam-1", "active": ["high"]})
        await eventually(lambda: len(arrivals[high.mid].since(resumed)) > 0, timeout=1.0)
        first_at, first_is_keyframe = arrivals[high.mid].since(resumed)[0]
        assert first_is_keyframe, "the first packet after resuming is not a keyframe"
        assert first_at - resumed < 1.0
        assert arrivals[low.mid].since(resumed) == []
        # a source with one encoding is addressed as "single"; a malformed message changes nothing
        assert apply_encodings(senders, {"type": "encodings", "source_id": "cam-1"}) is None
        assert is_sending(high.sender) and not is_sending(low.sender)
    finally:
        await publisher.close()
        await viewer.close()
