"""WHEP's two answers: pure functions on SDP text, no network, no clock.

A WHEP player offers (recvonly video); the room's media node offers too (the subscriber
connection of the protocol: the node always offers it). The gateway holds the WHEP session
as a peer of the room and answers each side with the other's parameters, so the player and
the node meet directly (ICE, DTLS, RTP) and the node forwards as it does to any subscriber:

* :func:`answer_for_node` answers the node's offer as if it were the player: the player's
  ICE credentials, candidates and DTLS fingerprints, ``setup:active``; the m-line of the
  wanted source ``recvonly`` with the player's payload types for VP8 and H.264 (aiortc
  sends with the payload types an answer names); every other m-line ``inactive``. No header
  extensions (the node's mids need not be the player's: the player routes by SSRC) and no
  RTX (retransmissions come on the media SSRC).
* :func:`answer_for_player` answers the player's offer as if it were the node: the node's
  ICE credentials, candidates, fingerprints, ``setup:passive`` and the wanted m-line's SSRC;
  the first video m-line ``sendonly`` with those codecs; other m-lines ``inactive``.

Both peers offered, so both start ICE controlling: RFC 8445 role-conflict repair (aioice and
libwebrtc both do it) settles it. The player's offer must carry its candidates (no trickle).
"""

from __future__ import annotations

import copy
import random

from aiortc.rtcdtlstransport import RTCDtlsParameters
from aiortc.rtcicetransport import RTCIceCandidate
from aiortc.rtcrtpparameters import RTCRtcpFeedback, RTCRtpCodecParameters
from aiortc.sdp import GroupDescription, MediaDescription, SessionDescription

FEEDBACK = {("nack", None), ("nack", "pli"), ("goog-remb", None)}


class SdpRefused(ValueError):
    """The offer cannot be served; ``code`` is the error code the api answers with."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


def parse_offer(sdp: str) -> SessionDescription:
    """The player's offer, checked: SDP with a video m-line, ICE credentials, a fingerprint
    and at least one candidate."""
    lines = [line for line in sdp.replace("\r\n", "\n").split("\n") if line]
    if not lines or lines[0] != "v=0" or any(len(line) < 2 or line[1] != "=" for line in lines):
        raise SdpRefused("invalid_sdp", "the body is not an SDP offer")
    try:
        offer = SessionDescription.parse(sdp)
    except Exception as exc:  # noqa: BLE001 - any parser failure means invalid
        raise SdpRefused("invalid_sdp", f"the offer does not parse: {exc}") from None
    if not offer.media:
        raise SdpRefused("invalid_sdp", "the offer has no media sections")
    for media in offer.media:
        if media.ice is None or not media.ice.usernameFragment or media.dtls is None or not media.dtls.fingerprints:
            raise SdpRefused("invalid_sdp", "the offer lacks ICE credentials or a DTLS fingerprint")
    return offer


def video_media(offer: SessionDescription) -> MediaDescription:
    for media in offer.media:
        if media.kind == "video" and media.port != 0:
            return media
    raise SdpRefused("no_video", "the offer has no video m-line")


def candidates_of(offer: SessionDescription) -> list[RTCIceCandidate]:
    found = [c for m in offer.media for c in m.ice_candidates]
    if not found:
        raise SdpRefused("invalid_sdp", "the offer has no ICE candidates: gather them before posting (no trickle)")
    return found


def _feedback(codec: RTCRtpCodecParameters) -> list[RTCRtcpFeedback]:
    return [f for f in codec.rtcpFeedback if (f.type, f.parameter) in FEEDBACK]


def player_codecs(video: MediaDescription) -> list[RTCRtpCodecParameters]:
    """The player's VP8 and its best H.264 (packetization-mode 1, constrained baseline
    ``42e0..`` before baseline ``4200..``), with the player's payload types."""
    out: list[RTCRtpCodecParameters] = []
    vp8 = [c for c in video.rtp.codecs if c.name.lower() == "vp8"]
    if vp8:
        out.append(vp8[0])
    h264 = [
        c
        for c in video.rtp.codecs
        if c.name.lower() == "h264" and str(c.parameters.get("packetization-mode", "0")) == "1"
    ]
    for prefix in ("42e0", "4200"):
        match = [c for c in h264 if str(c.parameters.get("profile-level-id", "")).lower().startswith(prefix)]
        if match:
            out.append(match[0])
            break
    if not out:
        raise SdpRefused("unsupported_codec", "the offer has neither VP8 nor H.264 with packetization-mode 1")
    return out


def _origin() -> str:
    return f"- {random.randint(1, 2**62)} 1 IN IP4 0.0.0.0"


def _media(kind: str, profile: str, mid: str | None) -> MediaDescription:
    media = MediaDescription(kind=kind, port=9, profile=profile, fmt=[])
    media.host = "0.0.0.0"
    media.rtcp_port, media.rtcp_host, media.rtcp_mux = 9, "0.0.0.0", True
    media.rtp.muxId = mid or ""
    return media


def _codecs(media: MediaDescription, codecs: list[RTCRtpCodecParameters]) -> None:
    media.rtp.codecs = codecs
    media.fmt = [c.payloadType for c in codecs]


def answer_for_node(node_offer: str, player: SessionDescription, wanted_mid: str) -> str:
    """The answer to the node's subscriber offer on behalf of the player (see the module)."""
    offer = SessionDescription.parse(node_offer)
    video = video_media(player)
    chosen = player_codecs(video)
    answer = SessionDescription()
    answer.origin = _origin()
    answer.group = copy.deepcopy(offer.group)
    for m in offer.media:
        a = _media(m.kind, m.profile, m.rtp.muxId)
        a.ice = copy.deepcopy(video.ice)
        a.ice_candidates = [c for pm in player.media for c in pm.ice_candidates]
        a.ice_candidates_complete = True
        a.dtls = RTCDtlsParameters(fingerprints=list(video.dtls.fingerprints), role="client")  # type: ignore[union-attr]
        if m.rtp.muxId == wanted_mid:
            a.direction = "recvonly"
            codecs = []
            for c in chosen:
                own = next((o for o in m.rtp.codecs if _same_codec(o, c)), None)
                if own is not None:
                    spliced = copy.deepcopy(own)
                    spliced.payloadType = c.payloadType
                    spliced.rtcpFeedback = _feedback(own)
                    codecs.append(spliced)
            if not codecs:
                raise SdpRefused("unsupported_codec", "the player and the media node share no video codec")
            _codecs(a, codecs)
        else:
            a.direction = "inactive"
            _codecs(a, [m.rtp.codecs[0]] if m.rtp.codecs else [])
        answer.media.append(a)
    return str(answer)


def _same_codec(node: RTCRtpCodecParameters, player: RTCRtpCodecParameters) -> bool:
    if node.name.lower() != player.name.lower() or node.clockRate != player.clockRate:
        return False
    if node.name.lower() != "h264":
        return True
    node_profile = str(node.parameters.get("profile-level-id", "")).lower()[:4]
    return node_profile == str(player.parameters.get("profile-level-id", "")).lower()[:4]


def answer_for_player(player: SessionDescription, node_offer: str, wanted_mid: str) -> str:
    """The answer to the player's offer on behalf of the node (see the module)."""
    offer = SessionDescription.parse(node_offer)
    node_media = next((m for m in offer.media if m.rtp.muxId == wanted_mid), None)
    if node_media is None:
        raise SdpRefused("source_not_found", f"the media node offered no m-line {wanted_mid}")
    video = video_media(player)
    chosen = [c for c in player_codecs(video) if any(_same_codec(o, c) for o in node_media.rtp.codecs)]
    answer = SessionDescription()
    answer.origin = _origin()
    answer.group = [GroupDescription(semantic="BUNDLE", items=[m.rtp.muxId for m in player.media])]
    answer.msid_semantic = [GroupDescription(semantic="WMS", items=["*"])]
    for m in player.media:
        a = _media(m.kind, m.profile, m.rtp.muxId)
        a.ice = copy.deepcopy(node_media.ice)
        a.ice_candidates = list(node_media.ice_candidates)
        a.ice_candidates_complete = True
        a.dtls = RTCDtlsParameters(fingerprints=list(node_media.dtls.fingerprints), role="server")  # type: ignore[union-attr]
        if m is video:
            a.direction = "sendonly"
            _codecs(a, [_with_feedback(c) for c in chosen])
            media_ssrc = node_media.ssrc[0].ssrc if node_media.ssrc else None
            for group in node_media.ssrc_group:
                if group.semantic == "FID" and group.items:
                    media_ssrc = int(group.items[0])
            a.ssrc = [s for s in node_media.ssrc if s.ssrc == media_ssrc]
            a.msid = node_media.msid
        else:
            a.direction = "inactive"
            _codecs(a, [m.rtp.codecs[0]] if m.rtp.codecs else [])
        answer.media.append(a)
    return str(answer)


def _with_feedback(codec: RTCRtpCodecParameters) -> RTCRtpCodecParameters:
    out = copy.deepcopy(codec)
    out.rtcpFeedback = _feedback(codec)
    return out
