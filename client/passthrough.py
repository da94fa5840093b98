"""Publish video that is already encoded (a camera's H.264) without encoding it again.

:class:`EncodedVideoTrack` takes H.264 access units (Annex B, as an RTSP demuxer gives them)
and hands them to aiortc's sender as packets; :class:`H264Packetizer` is the sender's
"encoder": it only splits access units into RTP payloads (single NAL, STAP-A, FU-A, RFC 6184
packetization-mode 1) with aiortc's own payloader, and refuses to encode a picture.
:func:`h264_track` is the :class:`~client.room.LocalTrack` to publish: its ``prepare`` hook
gives the sender the packetizer and offers only the H.264 variant of the camera's profile,
and :func:`offer_with_profile` writes the camera's ``profile-level-id`` into the offer.

SPS and PPS stay in-band: a keyframe without them gets the stream's parameter sets
(``extradata``) in front, so every IDR a subscriber starts at is decodable on its own.
Nothing here creates a codec context: the publishing process may forbid codec factories
(``media_node.guard.forbid_codecs``) and still send.
"""

from __future__ import annotations

import asyncio
import fractions
import logging
import re
from typing import TYPE_CHECKING, Any

import av
from aiortc import MediaStreamTrack, RTCRtpSender, RTCRtpTransceiver
from aiortc.codecs.base import Encoder
from aiortc.codecs.h264 import H264Encoder
from aiortc.mediastreams import MediaStreamError
from aiortc.rtcrtpparameters import RTCRtpCodecCapability

from client.aiortc_glue import use_encoder
from client.room import LocalTrack

log = logging.getLogger(__name__)

VIDEO_CLOCK = 90_000
if TYPE_CHECKING:
    Packet = av.Packet[Any]
else:
    Packet = av.Packet
NAL_IDR, NAL_SPS, NAL_PPS = 5, 7, 8
#: Access units waiting for the sender; past this the oldest are dropped up to the next keyframe.
QUEUE_FRAMES = 90


class PassthroughOnly(RuntimeError):
    """Something asked the passthrough sender to encode a picture."""


def nal_units(access_unit: bytes) -> list[bytes]:
    """The NAL units of an Annex B access unit (start codes removed)."""
    return list(H264Encoder._split_bitstream(access_unit))


def nal_types(access_unit: bytes) -> set[int]:
    return {nal[0] & 0x1F for nal in nal_units(access_unit) if nal}


def parameter_sets(extradata: bytes | None) -> bytes:
    """SPS and PPS of ``extradata`` as Annex B (empty when it has none or is avcC)."""
    if not extradata or extradata[:1] == b"\x01":
        return b""
    return b"".join(b"\x00\x00\x00\x01" + n for n in nal_units(extradata) if n and n[0] & 0x1F in (NAL_SPS, NAL_PPS))


def profile_level_id(access_unit: bytes) -> str | None:
    """``profile-level-id`` (6 hex digits: profile_idc, constraint flags, level_idc) of the
    first SPS in ``access_unit`` (or in parameter sets), None without an SPS."""
    for nal in nal_units(access_unit):
        if nal and nal[0] & 0x1F == NAL_SPS and len(nal) >= 4:
            return nal[1:4].hex()
    return None


class H264Packetizer(Encoder):
    """aiortc's H.264 payloader without its encoder."""

    def encode(self, frame: Any, force_keyframe: bool = False) -> tuple[list[bytes], int]:
        raise PassthroughOnly("this sender forwards encoded H.264; it never encodes")

    def pack(self, packet: Any) -> tuple[list[bytes], int]:
        assert isinstance(packet, av.Packet) and packet.pts is not None and packet.time_base is not None
        payloads = H264Encoder._packetize(H264Encoder._split_bitstream(bytes(packet)))
        return payloads, int(packet.pts * packet.time_base * VIDEO_CLOCK)


class EncodedVideoTrack(MediaStreamTrack):
    """A video track of encoded H.264 access units (``put``), read by the sender as packets.

    Timestamps are rebased so they only go forward: a source that restarts (an RTSP session
    that dropped and came back) continues one frame after the last one sent. Until the first
    keyframe (and again after a ``restart``), other access units are dropped.
    """

    kind = "video"

    def __init__(self, extradata: bytes | None = None) -> None:
        super().__init__()
        self.extradata = parameter_sets(extradata)
        self.sent = 0
        self.first_sent = asyncio.Event()
        #: The SPS/PPS of the last keyframe handed to the sender (Annex B, in order).
        self.last_parameter_sets: list[bytes] = []
        self._queue: asyncio.Queue[Packet | None] = asyncio.Queue()
        self._keyframe_seen = False
        self._offset: int | None = None
        self._last_pts = -3000

    @property
    def keyframe_seen(self) -> bool:
        """An IDR went in since the start (or the last ``restart``)."""
        return self._keyframe_seen

    def restart(self, extradata: bytes | None = None) -> None:
        """The source starts over (new timestamps, wait for a keyframe)."""
        if extradata:
            self.extradata = parameter_sets(extradata)
        self._keyframe_seen = False
        self._offset = None

    def put(self, access_unit: bytes, pts: int | None, frame_ticks: int = 3000) -> None:
        """One access unit with its 90 kHz ``pts`` (None: one frame after the previous)."""
        types = nal_types(access_unit)
        keyframe = NAL_IDR in types
        if not self._keyframe_seen and not keyframe:
            return
        if keyframe:
            self._keyframe_seen = True
            if NAL_SPS not in types and self.extradata:
                access_unit = self.extradata + access_unit
        if pts is None:
            out = self._last_pts + frame_ticks
        else:
            if self._offset is None:
                self._offset = self._last_pts + frame_ticks - pts
            out = max(pts + self._offset, self._last_pts + 1)
        self._last_pts = out
        if self._queue.qsize() >= QUEUE_FRAMES:
            self._drop_to_keyframe()
        packet = av.Packet(access_unit)
        packet.pts = out
        packet.time_base = fractions.Fraction(1, VIDEO_CLOCK)
        self._queue.put_nowait(packet)

    def _drop_to_keyframe(self) -> None:
        """The sender fell behind: drop queued access units up to the newest keyframe."""
        items: list[Packet | None] = []
        while not self._queue.empty():
            items.append(self._queue.get_nowait())
        keep = max(
            (i for i, p in enumerate(items) if p is not None and NAL_IDR in nal_types(bytes(p))), default=len(items)
        )
        if keep:
            log.info("passthrough: %d queued access units dropped up to a keyframe", keep)
        for p in items[keep:]:
            self._queue.put_nowait(p)

    async def recv(self) -> Packet:
        # not checking readyState: aiortc's sender stops its track when its connection
        # closes, and a Room that republishes (a new publisher connection) reads on
        if self.sent == 0 and self._queue.qsize() > 1:
            self._drop_to_keyframe()  # what queued while the connection was set up is stale
        packet = await self._queue.get()
        if packet is None:
            raise MediaStreamError
        data = bytes(packet)
        if NAL_IDR in nal_types(data):
            self.last_parameter_sets = [n for n in nal_units(data) if n and n[0] & 0x1F in (NAL_SPS, NAL_PPS)]
        self.sent += 1
        self.first_sent.set()
        return packet

    def close(self) -> None:
        """No more access units: the sender reading this track ends."""
        self.stop()
        self._queue.put_nowait(None)


def _capability(profile: str) -> RTCRtpCodecCapability:
    """aiortc's H.264 capability of the camera's profile (aiortc has baseline and
    constrained baseline; the node, an aiortc too, accepts only those)."""
    wanted = "42e01f" if _constrained_baseline(profile) else "42001f"
    for codec in RTCRtpSender.getCapabilities("video").codecs:
        if codec.mimeType.lower() == "video/h264" and codec.parameters.get("profile-level-id") == wanted:
            return codec
    raise ValueError(f"aiortc has no H.264 {wanted}")


def _constrained_baseline(profile: str) -> bool:
    idc, flags = int(profile[0:2], 16), int(profile[2:4], 16)
    return (
        (idc == 0x42 and flags & 0x40 != 0)
        or (idc == 0x4D and flags & 0x80 != 0)
        or (idc == 0x58 and flags & 0xC0 == 0xC0)
    )


def supported_profile(profile: str) -> bool:
    """Whether the SFU can take this ``profile-level-id`` (baseline or constrained baseline)."""
    return bool(re.fullmatch(r"[0-9a-fA-F]{6}", profile)) and (
        profile[:2].lower() == "42" or _constrained_baseline(profile)
    )


def offer_with_profile(sdp: str, profile: str) -> str:
    """``sdp`` with every H.264 ``profile-level-id`` set to the camera's."""
    return re.sub(r"profile-level-id=[0-9a-fA-F]{6}", f"profile-level-id={profile}", sdp)


def h264_track(track: EncodedVideoTrack, source_id: str, profile: str, kind: str = "camera") -> LocalTrack:
    """The :class:`LocalTrack` that publishes ``track`` as it is: H.264 only, packetized, not encoded."""
    if not supported_profile(profile):
        raise ValueError(f"H.264 profile-level-id {profile} is not baseline or constrained baseline")
    capability = _capability(profile)
    rtx = [c for c in RTCRtpSender.getCapabilities("video").codecs if c.mimeType.lower() == "video/rtx"]

    def prepare(transceiver: RTCRtpTransceiver) -> None:
        transceiver.setCodecPreferences([capability, *rtx])
        use_encoder(transceiver.sender, H264Packetizer())

    return LocalTrack(track=track, source_id=source_id, kind=kind, prepare=prepare)
