"""``api.whep_sdp`` with two real aiortc stacks: a "player" and a "node" both offer, the
spliced answers connect them directly and the player decodes the node's frames (VP8 and,
passed through untouched, H.264). Loopback only: run it inside scripts/netns.sh."""

from __future__ import annotations

import asyncio
import contextlib

import pytest
from aiortc import RTCConfiguration, RTCPeerConnection, RTCSessionDescription
from aiortc.sdp import SessionDescription

from api.whep_sdp import SdpRefused, answer_for_node, answer_for_player, parse_offer, player_codecs, video_media
from client.synthetic import PatternVideoTrack, decode_pattern


async def _offer(pc: RTCPeerConnection) -> str:
    await pc.setLocalDescription(await pc.createOffer())
    return str(pc.localDescription.sdp)


@pytest.mark.parametrize("codec", ["VP8", "H264"])
async def test_spliced_answers_connect_player_and_node(codec: str) -> None:
    config = RTCConfiguration(iceServers=[])
    player, node = RTCPeerConnection(config), RTCPeerConnection(config)
    try:
        player.addTransceiver("video", direction="recvonly")
        transceiver = node.addTransceiver(PatternVideoTrack(7), direction="sendonly")
        caps = [c for c in transceiver.sender.getCapabilities("video").codecs if c.mimeType == f"video/{codec}"]
        transceiver.setCodecPreferences(caps[-1:])
        player_offer, node_offer = await _offer(player), await _offer(node)
        parsed = parse_offer(player_offer)
        mid = SessionDescription.parse(node_offer).media[0].rtp.muxId

        for_node = answer_for_node(node_offer, parsed, mid)
        for_player = answer_for_player(parsed, node_offer, mid)
        await node.setRemoteDescription(RTCSessionDescription(sdp=for_node, type="answer"))
        await player.setRemoteDescription(RTCSessionDescription(sdp=for_player, type="answer"))
        sent_pt = node.getTransceivers()[0]._codecs[0].payloadType  # what the node sends with
        assert sent_pt in [c.payloadType for c in player_codecs(video_media(parsed))]

        track = player.getTransceivers()[0].receiver.track
        counters: list[int] = []
        async with asyncio.timeout(30):
            while len(counters) < 10:
                frame = await track.recv()
                code, counter = decode_pattern(frame)  # type: ignore[arg-type]
                assert code == 7
                counters.append(counter)
        assert counters == sorted(counters) and counters[-1] > counters[0]
    finally:
        with contextlib.suppress(Exception):
            await player.close()
            await node.close()


def test_refusals() -> None:
    with pytest.raises(SdpRefused) as garbage:
        parse_offer("hello")
    assert garbage.value.code == "invalid_sdp"
    audio_only = (
        "v=0\r\no=- 1 1 IN IP4 0.0.0.0\r\ns=-\r\nt=0 0\r\nm=audio 9 UDP/TLS/RTP/SAVPF 111\r\nc=IN IP4 0.0.0.0\r\n"
        "a=mid:0\r\na=recvonly\r\na=rtpmap:111 opus/48000/2\r\n"
        "a=ice-ufrag:abcd\r\na=ice-pwd:abcdefghijklmnopqrstuvwx\r\n"
        "a=fingerprint:sha-256 " + ":".join(["AB"] * 32) + "\r\na=setup:actpass\r\n"
    )
    with pytest.raises(SdpRefused) as no_video:
        video_media(parse_offer(audio_only))
    assert no_video.value.code == "no_video"
