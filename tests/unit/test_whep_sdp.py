"""api.whep_sdp: the two spliced answers, on offers aiortc writes (no ICE gathering, no network)."""

from __future__ import annotations

import pytest
from aiortc import RTCPeerConnection
from aiortc.sdp import SessionDescription

from api.whep_sdp import SdpRefused, answer_for_node, answer_for_player, candidates_of, parse_offer, player_codecs
from client.synthetic import PatternVideoTrack


async def _offers() -> tuple[str, str]:
    player, node = RTCPeerConnection(), RTCPeerConnection()
    try:
        player.addTransceiver("audio", direction="recvonly")
        player.addTransceiver("video", direction="recvonly")
        node.addTransceiver(PatternVideoTrack(1), direction="sendonly")
        node.addTransceiver(PatternVideoTrack(2), direction="sendonly")
        return (await player.createOffer()).sdp, (await node.createOffer()).sdp
    finally:
        await player.close()
        await node.close()


async def test_each_side_gets_the_others_parameters() -> None:
    player_sdp, node_sdp = await _offers()
    player = parse_offer(player_sdp)
    node = SessionDescription.parse(node_sdp)
    wanted = node.media[1].rtp.muxId
    player_video = player.media[1]
    player_pts = {c.name: c.payloadType for c in player_codecs(player_video)}

    for_node = SessionDescription.parse(answer_for_node(node_sdp, player, wanted))
    assert [m.rtp.muxId for m in for_node.media] == [m.rtp.muxId for m in node.media]
    assert [m.direction for m in for_node.media] == ["inactive", "recvonly"]
    chosen = for_node.media[1]
    assert {c.name: c.payloadType for c in chosen.rtp.codecs} == player_pts
    assert chosen.ice.usernameFragment == player_video.ice.usernameFragment
    assert chosen.dtls.role == "client" and chosen.dtls.fingerprints == player_video.dtls.fingerprints
    assert not chosen.rtp.headerExtensions

    for_player = SessionDescription.parse(answer_for_player(player, node_sdp, wanted))
    assert [m.rtp.muxId for m in for_player.media] == [m.rtp.muxId for m in player.media]
    assert [m.direction for m in for_player.media] == ["inactive", "sendonly"]
    video = for_player.media[1]
    assert {c.name: c.payloadType for c in video.rtp.codecs} == player_pts
    assert video.ice.usernameFragment == node.media[1].ice.usernameFragment
    assert video.dtls.role == "server"
    assert [s.ssrc for s in video.ssrc] == [node.media[1].ssrc[0].ssrc]


async def test_an_offer_without_candidates_is_refused() -> None:
    player_sdp, _ = await _offers()
    with pytest.raises(SdpRefused) as refused:
        candidates_of(parse_offer(player_sdp))
    assert refused.value.code == "invalid_sdp"
