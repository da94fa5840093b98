"""Established aiortc legs handed to the native core (run inside ``scripts/netns.sh``).

publisher PC (aiortc encodes VP8: ``client.synthetic.PatternVideoTrack``) → node PC
(receiver tapped: no decoder) ... native core ... node PC (sendonly ``OutboundLeg``) →
viewer PC (decodes, reads the pattern back). Once both node connections are up, their
sockets and DTLS-SRTP keys go to the core (``native.handover.Bridge``): every RTP packet
from then on is read, decrypted, rewritten, encrypted and sent by the core; the node's
Python tap sees none; STUN consent and RTCP still reach aiortc through the bridge. Then
10 % of the packets to the viewer are dropped (iptables): its NACKs are answered by the
core with RTX packets that aiortc unwraps.
"""

from __future__ import annotations

import asyncio
import re
import socket
import subprocess
import time

import pytest
from aiortc import RTCConfiguration, RTCPeerConnection
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack

from client.synthetic import PatternVideoTrack, decode_pattern
from media_node.aiortc_glue import OutboundLeg, request_keyframe, tap_receiver
from native import core as native
from native.handover import Bridge, srtp_keys


def loopback_only() -> bool:
    """True inside ``scripts/netns.sh``: ``lo`` is the only interface, so media stays on it."""
    return [name for _, name in socket.if_nameindex()] == ["lo"]


pytestmark = [
    pytest.mark.skipif(not loopback_only(), reason="connects real peers: run inside scripts/netns.sh"),
    pytest.mark.skipif(not native.available(), reason="native core not built: make native"),
]
CODE = 0x5A


def config() -> RTCConfiguration:
    return RTCConfiguration(iceServers=[])


def rtx_of(sdp: str, ssrc: int) -> tuple[int, int]:
    """(RTX SSRC, RTX payload type) an SDP announces for media SSRC ``ssrc`` (VP8's apt)."""
    group = re.search(rf"a=ssrc-group:FID {ssrc} (\d+)", sdp)
    vp8 = re.search(r"a=rtpmap:(\d+) VP8/90000", sdp)
    assert group and vp8
    apt = re.search(rf"a=fmtp:(\d+) apt={vp8.group(1)}\r?\n", sdp)
    assert apt
    return int(group.group(1)), int(apt.group(1))


def iptables(*args: str) -> None:
    """Loss injection inside the test's network namespace (a short, local command)."""
    subprocess.run(["iptables", *args], check=args[0] != "-D")


async def eventually(check: object, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():  # type: ignore[operator]
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.05)


async def test_a_handed_over_publisher_and_subscriber_leg_forward_real_video() -> None:
    publisher, node_in, node_out, viewer = (RTCPeerConnection(config()) for _ in range(4))
    frames: list[tuple[int, int]] = []

    async def read(track: MediaStreamTrack) -> None:
        try:
            while True:
                frames.append(decode_pattern(await track.recv()))  # type: ignore[arg-type]
        except MediaStreamError:
            pass

    viewer.on("track", lambda track: asyncio.ensure_future(read(track)))
    bridge: Bridge | None = None
    try:
        publisher.addTrack(PatternVideoTrack(CODE, width=320, height=180, fps=15))
        await publisher.setLocalDescription(await publisher.createOffer())
        await node_in.setRemoteDescription(publisher.localDescription)
        receiver = node_in.getTransceivers()[0].receiver
        tap = tap_receiver(receiver)
        await node_in.setLocalDescription(await node_in.createAnswer())
        await publisher.setRemoteDescription(node_in.localDescription)

        transceiver = node_out.addTransceiver("video", direction="sendonly")
        leg = OutboundLeg(transceiver.sender)
        await node_out.setLocalDescription(await node_out.createOffer())
        await viewer.setRemoteDescription(node_out.localDescription)
        await viewer.setLocalDescription(await viewer.createAnswer())
        await node_out.setRemoteDescription(viewer.localDescription)

        await eventually(lambda: tap.packets > 0 and leg.ready)
        assert tap.media_ssrc is not None
        in_ssrc = tap.media_ssrc
        pub_rtx_ssrc, pub_rtx_pt = rtx_of(publisher.localDescription.sdp, in_ssrc)
        out_rtx_ssrc, out_rtx_pt = rtx_of(node_out.localDescription.sdp, leg.ssrc)
        profile, _, _ = srtp_keys(receiver.transport)

        core = native.Core()
        bridge = Bridge(core)
        in_leg = bridge.add_leg(receiver.transport)
        out_leg = bridge.add_leg(transceiver.sender.transport)
        tap_packets = tap.packets
        assert frames == []  # nothing forwarded the publisher's packets before
        in_id = core.add_in(in_leg, in_ssrc, "VP8", 90000, rtx_ssrc=pub_rtx_ssrc, rtx_pt=pub_rtx_pt)
        ids = leg._extension_ids
        payload_type = leg.payload_type("VP8")
        assert payload_type is not None and leg.mid is not None
        out_id = core.add_out(
            out_leg,
            in_id,
            leg.ssrc,
            payload_type,
            rtx_ssrc=out_rtx_ssrc,
            rtx_pt=out_rtx_pt,
            rtx_seq=1,
            mid_id=ids.mid,
            mid=leg.mid,
            abs_send_time_id=ids.abs_send_time,
            initial_seq=1000,
            initial_ts=0,
        )

        async def keyframe(in_id: int) -> None:
            await request_keyframe(receiver, in_ssrc)

        bridge.on_keyframe = keyframe
        await eventually(lambda: len(frames) >= 30, timeout=30)
        counters = [c for code, c in frames]
        assert {code for code, _ in frames} == {CODE}
        assert counters == sorted(counters) and len(set(counters)) == len(counters)

        # longer than aioice's consent interval (5 s): STUN goes through the bridge both ways
        await asyncio.sleep(7)
        seen = len(frames)
        await eventually(lambda: len(frames) >= seen + 15, timeout=10)
        assert node_in.connectionState == "connected" and node_out.connectionState == "connected"
        assert viewer.connectionState == "connected" and publisher.connectionState == "connected"
        assert tap.packets == tap_packets  # Python never saw a packet after the hand-over
        stats = core.stats()
        assert stats["forwarded"] >= 45 and stats["srtp_errors"] == 0 and stats["raw_in"] > 0
        assert core.out_stats(out_id)["packets"] == stats["forwarded"]
        assert core.leg_stats(in_leg)["rtcp_in"] > 0  # the publisher's sender reports, given to aiortc
        assert profile in (native.PROFILE_AEAD_AES_256_GCM, native.PROFILE_AEAD_AES_128_GCM)

        # 10 % of what reaches the viewer's socket is dropped: the viewer (aiortc) NACKs, the
        # core answers from its cache with RTX, aiortc unwraps it and keeps decoding
        port = viewer.getTransceivers()[0].receiver.transport.transport._connection._nominated[1].local_candidate.port
        rule = ["INPUT", "-p", "udp", "--dport", str(port), "-m", "statistic", "--mode", "random"]
        rule += ["--probability", "0.1", "-j", "DROP"]
        iptables("-A", *rule)
        try:
            seen, counter = len(frames), frames[-1][1]
            await eventually(lambda: core.out_stats(out_id)["retransmitted"] >= 5 and len(frames) >= seen + 45, 30)
        finally:
            iptables("-D", *rule)
        lossy = [c for _, c in frames[seen:]]
        assert lossy == sorted(lossy) and lossy[0] > counter
        # decoded frames skipped over (a frame is one packet here): few, thanks to the retransmissions
        skipped = lossy[-1] - lossy[0] + 1 - len(lossy)
        out = core.out_stats(out_id)
        print("native hand-over:", core.stats(), core.in_stats(in_id), out, len(frames), "frames,", skipped, "skipped")
        assert out["nacked"] >= out["retransmitted"] >= 5 and skipped <= len(lossy) // 10
    finally:
        if bridge is not None:
            bridge.close()
            bridge.core.close()
        for pc in (publisher, node_in, node_out, viewer):
            await pc.close()
