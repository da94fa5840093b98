"""client.passthrough: encoded H.264 to aiortc's sender, never encoded again."""

from __future__ import annotations

import asyncio

import av
import pytest
from aiortc.mediastreams import MediaStreamError

from client.passthrough import (
    NAL_IDR,
    NAL_PPS,
    NAL_SPS,
    EncodedVideoTrack,
    H264Packetizer,
    PassthroughOnly,
    nal_types,
    offer_with_profile,
    profile_level_id,
    supported_profile,
)

SPS = bytes.fromhex("6742c00dda05067e7c05a830303528000003000800000300f478a155")
PPS = bytes.fromhex("68ce3c80")
EXTRADATA = b"\x00\x00\x00\x01" + SPS + b"\x00\x00\x00\x01" + PPS
IDR = b"\x00\x00\x00\x01\x65" + bytes(range(1, 200))
P_FRAME = b"\x00\x00\x00\x01\x41" + bytes(range(1, 50))


async def test_a_keyframe_without_parameter_sets_gets_them_in_front() -> None:
    track = EncodedVideoTrack(EXTRADATA)
    track.put(P_FRAME, 0)  # before the first keyframe: dropped
    track.put(IDR, 3000)
    track.put(P_FRAME, 6000)
    first = await asyncio.wait_for(track.recv(), 5)
    assert nal_types(bytes(first)) == {NAL_SPS, NAL_PPS, NAL_IDR}
    assert track.last_parameter_sets == [SPS, PPS]
    second = await asyncio.wait_for(track.recv(), 5)
    assert nal_types(bytes(second)) == {1}
    assert second.pts is not None and first.pts is not None and second.pts - first.pts == 3000


async def test_timestamps_only_go_forward_across_a_restart() -> None:
    track = EncodedVideoTrack(EXTRADATA)
    track.put(IDR, 900_000)
    pts = [(await track.recv()).pts]
    track.put(P_FRAME, 903_000)
    pts.append((await track.recv()).pts)
    track.restart()
    track.put(P_FRAME, 0)  # waits for a keyframe again
    track.put(IDR, 10)
    pts.append((await asyncio.wait_for(track.recv(), 5)).pts)
    assert pts[0] is not None and pts[1] is not None and pts[2] is not None
    assert pts[0] < pts[1] < pts[2] and pts[2] - pts[1] == 3000


def test_the_packetizer_packs_and_never_encodes() -> None:
    packetizer = H264Packetizer()
    packet = av.Packet(EXTRADATA + IDR)
    packet.pts = 90_000
    packet.time_base = __import__("fractions").Fraction(1, 90_000)
    payloads, timestamp = packetizer.pack(packet)
    assert timestamp == 90_000
    assert payloads[0][0] & 0x1F == 24  # SPS and PPS (and the small IDR) in one STAP-A
    with pytest.raises(PassthroughOnly):
        packetizer.encode(av.VideoFrame(16, 16, "yuv420p"))


def test_profile() -> None:
    assert profile_level_id(EXTRADATA) == "42c00d"
    assert supported_profile("42c00d") and supported_profile("42e01f") and supported_profile("42001f")
    assert not supported_profile("640028") and not supported_profile("zz")
    offer = "a=fmtp:99 level-asymmetry-allowed=1;packetization-mode=1;profile-level-id=42e01f"
    assert offer_with_profile(offer, "42c00d").endswith("profile-level-id=42c00d")


async def test_close_ends_the_reader() -> None:
    track = EncodedVideoTrack()
    reader = asyncio.ensure_future(track.recv())
    track.close()
    with pytest.raises(MediaStreamError):
        await asyncio.wait_for(reader, 5)
