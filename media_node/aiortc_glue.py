"""Every reach into aiortc's private names, in one place (written against aiortc 1.16.0).

aiortc decodes what it receives and encodes what it sends; an SFU must do neither. This
module bends its public objects into an RTP-level forwarder:

* :func:`tap_receiver` hands each media packet an ``RTCRtpReceiver`` gets (after RTX
  unwrap) to a callback and never starts its decoder, depayloader or jitter buffer, while
  the receiver keeps its receiver reports, statistics and NACKs toward the publisher.
* :class:`OutboundLeg` writes ready RTP packets through a subscriber-side
  ``RTCRtpSender`` whose track is a :class:`SilentTrack` (so its own loop never encodes):
  its SSRC, mid and header extension ids, its retransmission history (aiortc answers the
  subscriber's NACKs from it), its sender-report counters and its DTLS/SRTP transport.
* Sender reports: an :class:`InboundTap` keeps each sender's latest NTP↔RTP mapping
  (``sender_report``); an :class:`OutboundLeg` given a mapping (``map_clock``: the
  publisher's, translated to the leg's timestamps) sends it in its own sender reports
  instead of the node's forwarding time, so subscribers (and the recorder) can place
  every track on the publisher's capture clock (lip sync).
* :func:`request_keyframe` and :func:`send_remb` speak RTCP upstream from a receiver;
  :meth:`InboundTap.request_retransmission` NACKs again what is still missing, and an
  ``OutboundLeg`` reports the NACKed packets its history cannot answer (``on_nack_miss``).

Nothing else in roomlog may use an aiortc name that starts with an underscore. When aiortc
is upgraded, :func:`check_internals` (run by this module's tests) names what moved.
"""

from __future__ import annotations

import asyncio
import datetime
import time
from collections.abc import Awaitable, Callable
from struct import pack
from typing import Any, NamedTuple, cast

from aiortc import RTCRtpReceiver, RTCRtpSender, RTCRtpTransceiver, clock
from aiortc.codecs import CODECS, is_rtx
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack
from aiortc.rate import RemoteBitrateEstimator
from aiortc.rtcrtpparameters import (
    RTCRtcpFeedback,
    RTCRtpCodecParameters,
    RTCRtpHeaderExtensionParameters,
    RTCRtpReceiveParameters,
    RTCRtpSendParameters,
)
from aiortc.rtcrtpreceiver import NackGenerator, StreamStatistics
from aiortc.rtp import (
    RTCP_PSFB_APP,
    RTCP_PSFB_FIR,
    RTCP_PSFB_PLI,
    RTCP_RTPFB_NACK,
    RTP_HISTORY_SIZE,
    RtcpPsfbPacket,
    RtcpRtpfbPacket,
    RtcpSrPacket,
    RtpPacket,
    pack_remb_fci,
    unpack_remb_fci,
    unwrap_rtx,
)

PacketHandler = Callable[[RtpPacket, int], Awaitable[None]]
KeyframeHandler = Callable[[], Awaitable[None]]
RembHandler = Callable[[int], None]
#: How many recently NACKed seqs a leg remembers to count each lost packet once.
NACK_MEMORY = 2048
NackMissHandler = Callable[[list[int]], Awaitable[None]]

_R = "_RTCRtpReceiver__"
_S = "_RTCRtpSender__"
RECEIVER_INTERNALS = (
    "codecs",
    "rtx_ssrc",
    "started",
    "transport",
    "rtcp_task",
    "decoder_thread",
    "remote_streams",
    "active_ssrc",
    "nack_generator",
    "remote_bitrate_estimator",
    "rtcp_ssrc",
    "stop_decoder",
    "kind",
)
SENDER_INTERNALS = (
    "started",
    "transport",
    "rtp_history",
    "rtp_header_extensions_map",
    "packet_count",
    "octet_count",
    "ntp_timestamp",
    "rtp_timestamp",
)
NTP_UNIX_OFFSET_S = 2_208_988_800
URI_MID = "urn:ietf:params:rtp-hdrext:sdes:mid"
URI_ABS_SEND_TIME = "http://www.webrtc.org/experiments/rtp-hdrext/abs-send-time"
URI_AUDIO_LEVEL = "urn:ietf:params:rtp-hdrext:ssrc-audio-level"


class AiortcInternalsChanged(RuntimeError):
    """The installed aiortc no longer has a private name this module relies on."""


def check_internals(receiver: RTCRtpReceiver | None = None, sender: RTCRtpSender | None = None) -> None:
    """Raise :class:`AiortcInternalsChanged` naming every private name that is missing."""
    missing: list[str] = []
    if receiver is not None:
        missing += [f"RTCRtpReceiver.__{n}" for n in RECEIVER_INTERNALS if not hasattr(receiver, _R + n)]
        missing += [
            f"RTCRtpReceiver.{n}"
            for n in ("_send_rtcp_pli", "_send_rtcp_nack", "_send_rtcp", "_run_rtcp", "_enabled")
            if not hasattr(receiver, n)
        ]
    if sender is not None:
        missing += [f"RTCRtpSender.__{n}" for n in SENDER_INTERNALS if not hasattr(sender, _S + n)]
        missing += [
            f"RTCRtpSender.{n}" for n in ("_ssrc", "_retransmit", "_handle_rtcp_packet") if not hasattr(sender, n)
        ]
    if missing:
        raise AiortcInternalsChanged("aiortc internals missing: " + ", ".join(missing))


def ntp_to_unix(ntp: int) -> float:
    """A 64-bit NTP timestamp as Unix seconds."""
    return (ntp >> 32) - NTP_UNIX_OFFSET_S + (ntp & 0xFFFFFFFF) / (1 << 32)


def _ntp_now() -> int:
    """Wall clock as 64-bit NTP, the same value aiortc's ``clock.current_ntp_time`` gives."""
    now = time.time() + NTP_UNIX_OFFSET_S
    return (int(now) << 32) | int((now % 1) * (1 << 32))


class ExtensionIds(NamedTuple):
    """Header extension ids a leg negotiated, for the extensions a forwarded packet carries."""

    mid: int = 0
    abs_send_time: int = 0
    audio_level: int = 0

    @classmethod
    def of(cls, extensions: list[RTCRtpHeaderExtensionParameters]) -> ExtensionIds:
        ids = {x.uri: x.id for x in extensions}
        return cls(ids.get(URI_MID, 0), ids.get(URI_ABS_SEND_TIME, 0), ids.get(URI_AUDIO_LEVEL, 0))


def serialize(packet: RtpPacket, ids: ExtensionIds) -> bytes | None:
    """``packet.serialize(extensions_map)`` for the common case, about four times faster.

    Handles packets with at most mid, abs-send-time and audio-level, no CSRC and no padding,
    with one-byte extension headers; returns None otherwise (use aiortc's serializer).
    """
    x = packet.extensions
    if (
        packet.csrc
        or packet.padding_size
        or ids.mid > 14
        or ids.abs_send_time > 14
        or ids.audio_level > 14
        or x.rtp_stream_id is not None
        or x.repaired_rtp_stream_id is not None
        or x.transmission_offset is not None
        or x.transport_sequence_number is not None
    ):
        return None
    ext = b""
    if ids.mid and x.mid is not None:
        mid = x.mid.encode("utf8")
        if not 0 < len(mid) <= 16:
            return None
        ext += bytes(((ids.mid << 4) | (len(mid) - 1),)) + mid
    if ids.abs_send_time and x.abs_send_time is not None:
        ext += bytes(((ids.abs_send_time << 4) | 2,)) + (x.abs_send_time & 0xFFFFFF).to_bytes(3, "big")
    if ids.audio_level and x.audio_level is not None:
        ext += bytes((ids.audio_level << 4, (0x80 if x.audio_level[0] else 0) | (x.audio_level[1] & 0x7F)))
    if not ext:
        return (
            pack(
                "!BBHLL",
                0x80,
                (packet.marker << 7) | packet.payload_type,
                packet.sequence_number,
                packet.timestamp,
                packet.ssrc,
            )
            + packet.payload
        )
    ext += b"\x00" * (-len(ext) % 4)
    return (
        pack(
            "!BBHLLHH",
            0x90,
            (packet.marker << 7) | packet.payload_type,
            packet.sequence_number,
            packet.timestamp,
            packet.ssrc,
            0xBEDE,
            len(ext) >> 2,
        )
        + ext
        + packet.payload
    )


class SilentTrack(MediaStreamTrack):
    """A track whose ``recv`` never yields: the sender's own RTP loop idles forever."""

    def __init__(self, kind: str) -> None:
        super().__init__()
        self.kind = kind
        self._ended = asyncio.Event()

    async def recv(self) -> Any:
        await self._ended.wait()
        raise MediaStreamError

    def stop(self) -> None:
        super().stop()
        self._ended.set()


class InboundTap:
    """A publisher's stream as received by the node, without any codec work.

    Built by :func:`tap_receiver`. ``on_packet(packet, arrival_ms)`` receives every media
    packet; ``uplink_bitrate`` is the node's own estimate of the publisher's uplink (aiortc's
    REMB estimator), which the forwarder folds into the REMB it sends upstream.
    """

    def __init__(self, receiver: RTCRtpReceiver, on_packet: PacketHandler | None = None) -> None:
        self.receiver = receiver
        self.on_packet = on_packet
        self.uplink_bitrate: int | None = None
        self.media_ssrc: int | None = None
        self.packets = 0
        #: NACK packets sent upstream: aiortc's one per new gap, plus retries
        self.nacks_sent = 0
        #: Test hook: packets (after RTX unwrap) for which it returns True are discarded, as if
        #: lost on the wire (they are still counted in the receiver's statistics).
        self.drop: Callable[[RtpPacket], bool] | None = None
        # aiortc creates these once per receiver and never rebinds them: look them up once
        self._codecs: dict[int, RTCRtpCodecParameters] = getattr(receiver, _R + "codecs")
        self._rtx_ssrc: dict[int, int] = getattr(receiver, _R + "rtx_ssrc")
        self._streams: dict[int, StreamStatistics] = getattr(receiver, _R + "remote_streams")
        self._active_ssrc: dict[int, datetime.datetime] = getattr(receiver, _R + "active_ssrc")
        self._nack_generator: NackGenerator | None = getattr(receiver, _R + "nack_generator")
        self._estimator: RemoteBitrateEstimator | None = getattr(receiver, _R + "remote_bitrate_estimator")
        #: per sender SSRC, its latest RTCP sender report: (NTP timestamp, RTP timestamp)
        self.sender_reports: dict[int, tuple[int, int]] = {}
        self._original_rtcp = receiver._handle_rtcp_packet

    def sender_report(self, ssrc: int | None) -> tuple[int, int] | None:
        """The latest (NTP, RTP) mapping ``ssrc``'s sender reported, if any yet."""
        return None if ssrc is None else self.sender_reports.get(ssrc)

    async def _handle_rtcp_packet(self, packet: Any) -> None:
        if isinstance(packet, RtcpSrPacket):
            info = packet.sender_info
            self.sender_reports[packet.ssrc] = (info.ntp_timestamp, info.rtp_timestamp)
        await self._original_rtcp(packet)

    @property
    def kind(self) -> str:
        return cast(str, getattr(self.receiver, _R + "kind"))

    @property
    def decoding(self) -> bool:
        """Whether aiortc's decoder thread runs for this receiver (never, once tapped)."""
        return getattr(self.receiver, _R + "decoder_thread") is not None

    def codec_of(self, payload_type: int) -> tuple[str, int] | None:
        """Codec name as aiortc spells it (``VP8``, ``H264``, ``opus``) and clock rate."""
        codec = self._codecs.get(payload_type)
        return None if codec is None else (codec.name, codec.clockRate)

    async def request_keyframe(self, media_ssrc: int) -> None:
        await request_keyframe(self.receiver, media_ssrc)

    async def request_retransmission(self, media_ssrc: int, seqs: list[int]) -> None:
        """NACK ``seqs`` of ``media_ssrc`` (again): a generic NACK on the receiver's transport."""
        self.nacks_sent += 1
        await self.receiver._send_rtcp_nack(media_ssrc, sorted(seqs))

    async def send_remb(self, bitrate: int, ssrcs: list[int]) -> None:
        await send_remb(self.receiver, bitrate, ssrcs)

    @property
    def connection(self) -> object:
        """The receiver's DTLS transport: one per publisher connection (max-bundle)."""
        return self.receiver.transport

    async def _receive(self, parameters: RTCRtpReceiveParameters) -> None:
        """``RTCRtpReceiver.receive`` minus the decoder thread."""
        r = self.receiver
        if getattr(r, _R + "started"):
            return
        for codec in parameters.codecs:
            if codec.payloadType is not None:
                self._codecs[codec.payloadType] = codec
        for encoding in parameters.encodings:
            if encoding.rtx:
                self._rtx_ssrc[encoding.rtx.ssrc] = encoding.ssrc
            if self.media_ssrc is None and encoding.ssrc:
                self.media_ssrc = encoding.ssrc
        getattr(r, _R + "transport")._register_rtp_receiver(r, parameters)
        setattr(r, _R + "rtcp_task", asyncio.ensure_future(r._run_rtcp()))
        setattr(r, _R + "started", True)

    async def _handle_rtp_packet(self, packet: RtpPacket, arrival_time_ms: int) -> None:
        """``RTCRtpReceiver._handle_rtp_packet`` up to the NACK generator, then the callback."""
        r = self.receiver
        if not r._enabled:
            return
        if self._estimator is not None and packet.extensions.abs_send_time is not None:
            remb = self._estimator.add(
                abs_send_time=packet.extensions.abs_send_time,
                arrival_time_ms=arrival_time_ms,
                payload_size=len(packet.payload) + packet.padding_size,
                ssrc=packet.ssrc,
            )
            if remb is not None:
                self.uplink_bitrate = remb[0]
        self._active_ssrc[packet.ssrc] = clock.current_datetime()
        codec = self._codecs.get(packet.payload_type)
        if codec is None:
            return
        stream = self._streams.get(packet.ssrc)
        if stream is None:
            stream = self._streams[packet.ssrc] = StreamStatistics(codec.clockRate)
        stream.add(packet)
        if is_rtx(codec):
            original_ssrc = self._rtx_ssrc.get(packet.ssrc)
            apt = codec.parameters.get("apt")
            if original_ssrc is None or len(packet.payload) < 2 or not isinstance(apt, int) or apt not in self._codecs:
                return
            packet = unwrap_rtx(packet, payload_type=apt, ssrc=original_ssrc)
        if self.drop is not None and self.drop(packet):
            return
        if self._nack_generator is not None and self._nack_generator.add(packet):
            self.nacks_sent += 1
            await r._send_rtcp_nack(packet.ssrc, sorted(self._nack_generator.missing))
        self.media_ssrc = packet.ssrc
        self.packets += 1
        if self.on_packet is not None:
            await self.on_packet(packet, arrival_time_ms)


def tap_receiver(receiver: RTCRtpReceiver, on_packet: PacketHandler | None = None) -> InboundTap:
    """Turn ``receiver`` into a packet source: no decoder, depayloader or jitter buffer.

    Call it before the connection is established (e.g. right after
    ``setRemoteDescription``); if the receiver already started, its decoder thread is
    stopped (it never built a decoder unless a frame had been completed).
    """
    check_internals(receiver=receiver)
    tap = InboundTap(receiver, on_packet)
    receiver._handle_rtcp_packet = tap._handle_rtcp_packet  # type: ignore[method-assign]
    receiver.receive = tap._receive  # type: ignore[method-assign]
    receiver._handle_rtp_packet = tap._handle_rtp_packet  # type: ignore[method-assign]
    if getattr(receiver, _R + "decoder_thread") is not None:
        getattr(receiver, _R + "stop_decoder")()
    return tap


async def request_keyframe(receiver: RTCRtpReceiver, media_ssrc: int) -> None:
    """Send a PLI for ``media_ssrc`` on the receiver's transport."""
    await receiver._send_rtcp_pli(media_ssrc)


async def send_remb(receiver: RTCRtpReceiver, bitrate: int, ssrcs: list[int]) -> None:
    """Send a REMB (receiver estimated maximum bitrate) for ``ssrcs`` upstream."""
    rtcp_ssrc = getattr(receiver, _R + "rtcp_ssrc")
    if rtcp_ssrc is None:
        return
    await receiver._send_rtcp(
        RtcpPsfbPacket(fmt=RTCP_PSFB_APP, ssrc=rtcp_ssrc, media_ssrc=0, fci=pack_remb_fci(bitrate, ssrcs))
    )


VP9_MIME_TYPE = "video/VP9"


def register_vp9() -> None:
    """Let aiortc negotiate VP9 in this process (it has no VP9 codec, so it never offers or
    accepts it): a VP9 entry and its RTX go after aiortc's own video codecs in
    ``aiortc.codecs.CODECS``, which every offer, answer and capability list reads.

    Only for processes that never encode or decode video (the media node, the recorder):
    aiortc could not build a VP9 encoder or decoder (``get_encoder``/``get_decoder``
    raise), and a forwarder or a tapped receiver needs neither. A publisher preferring
    VP9 (Chromium with VP9 first) is then answered VP9 instead of its next codec, and its
    subscribers are offered VP9 (``peers.codec_capabilities``). Idempotent.
    """
    video = CODECS["video"]
    if any(c.mimeType.lower() == VP9_MIME_TYPE.lower() for c in video):
        return
    payload_type = max(c.payloadType or 0 for c in video) + 1
    video += [
        RTCRtpCodecParameters(
            mimeType=VP9_MIME_TYPE,
            clockRate=90000,
            payloadType=payload_type,
            rtcpFeedback=[
                RTCRtcpFeedback(type="nack"),
                RTCRtcpFeedback(type="nack", parameter="pli"),
                RTCRtcpFeedback(type="goog-remb"),
            ],
        ),
        RTCRtpCodecParameters(
            mimeType="video/rtx", clockRate=90000, payloadType=payload_type + 1, parameters={"apt": payload_type}
        ),
    ]


def negotiated_codecs(transceiver: RTCRtpTransceiver) -> list[RTCRtpCodecParameters]:
    """The codecs a transceiver agreed on (after the remote description was applied)."""
    return list(transceiver._codecs)


def observe_keyframe_requests(sender: RTCRtpSender, callback: KeyframeHandler) -> None:
    """Call ``callback`` on every PLI/FIR reaching ``sender``; aiortc still handles it too."""
    original = sender._handle_rtcp_packet

    async def handle(packet: Any) -> None:
        if isinstance(packet, RtcpPsfbPacket) and packet.fmt in (RTCP_PSFB_PLI, RTCP_PSFB_FIR):
            await callback()
        await original(packet)

    sender._handle_rtcp_packet = handle  # type: ignore[method-assign]


def observe_remb(sender: RTCRtpSender, callback: RembHandler) -> None:
    """Call ``callback(bitrate)`` on every REMB naming ``sender``'s SSRC; aiortc still applies it."""
    original = sender._handle_rtcp_packet

    async def handle(packet: Any) -> None:
        if isinstance(packet, RtcpPsfbPacket) and packet.fmt == RTCP_PSFB_APP:
            try:
                bitrate, ssrcs = unpack_remb_fci(packet.fci)
            except ValueError:
                pass
            else:
                if sender._ssrc in ssrcs:
                    callback(bitrate)
        await original(packet)

    sender._handle_rtcp_packet = handle  # type: ignore[method-assign]


class OutboundLeg:
    """One subscriber-side ``RTCRtpSender`` turned into an RTP packet writer.

    Wrap the sender before negotiation completes (right after ``addTransceiver``): the leg
    learns the negotiated mid and payload types when aiortc calls ``sender.send``.
    ``write`` drops packets (returns False) until then.
    """

    def __init__(self, sender: RTCRtpSender) -> None:
        check_internals(sender=sender)
        if getattr(sender, _S + "started"):
            raise ValueError("wrap the sender before it starts sending")
        if not isinstance(sender.track, SilentTrack):
            sender.replaceTrack(SilentTrack(sender.kind))
        self.sender = sender
        self.kind = sender.kind
        self.mid: str | None = None
        self.packets_sent = 0
        self.bytes_sent = 0
        self.keyframe_requests = 0
        self.nacked = 0
        #: distinct seqs NACKed that this leg sent (the receiver re-NACKs a missing packet until
        #: it arrives): packets the subscriber did not get the first time, i.e. loss before repair
        self.nacked_distinct = 0
        self._nacked_recent: dict[int, None] = {}
        self.retransmittable = 0
        #: NACKed packets the history could not answer (never written, or overwritten)
        self.nack_misses = 0
        self.remb: int | None = None
        #: Test hook: packets for which it returns True are recorded but not sent.
        self.drop: Callable[[RtpPacket], bool] | None = None
        self._payload_types: dict[str, int] = {}
        self._state: dict[str, Any] = vars(sender)  # the sender's attributes, written per packet
        self._ssrc: int = sender._ssrc
        self._extension_ids = ExtensionIds()
        self._history: dict[int, RtpPacket] = getattr(sender, _S + "rtp_history")
        self._extensions_map = getattr(sender, _S + "rtp_header_extensions_map")
        self._on_keyframe_request: list[KeyframeHandler] = []
        self._on_remb: list[RembHandler] = []
        self._on_nack_miss: list[NackMissHandler] = []
        #: (NTP, RTP) its sender reports carry; None: the forwarding time of the last packet
        self._clock: tuple[int, int] | None = None
        self._original_send = sender.send
        self._original_rtcp = sender._handle_rtcp_packet
        sender.send = self._send  # type: ignore[method-assign]
        sender._handle_rtcp_packet = self._handle_rtcp_packet  # type: ignore[method-assign]

    @property
    def ssrc(self) -> int:
        return self.sender._ssrc

    @property
    def ready(self) -> bool:
        return self.mid is not None and self.sender.transport.state == "connected"

    def payload_type(self, codec_name: str) -> int | None:
        """The payload type this subscriber negotiated for a codec (``VP8``, ``opus``...)."""
        return self._payload_types.get(codec_name.lower())

    def on_keyframe_request(self, callback: KeyframeHandler) -> None:
        self._on_keyframe_request.append(callback)

    def on_remb(self, callback: RembHandler) -> None:
        self._on_remb.append(callback)

    def on_nack_miss(self, callback: NackMissHandler) -> None:
        """Call ``callback(seqs)`` with the NACKed seqs this leg could not retransmit."""
        self._on_nack_miss.append(callback)

    def map_clock(self, ntp: int, rtp: int) -> None:
        """Report ``rtp`` (this leg's timestamps) as sent at ``ntp`` in its sender reports:
        the publisher's own mapping, so the subscriber sees the capture clock."""
        self._clock = (ntp, rtp & 0xFFFFFFFF)

    async def write(self, packet: RtpPacket) -> bool:
        """Send ``packet`` (payload type already mapped) as this leg's stream.

        Sets SSRC, mid and abs-send-time, keeps it for retransmission and sender reports
        (``prepare``), then hands the bytes to ``transmit``.
        """
        data = self.prepare(packet)
        if data is None:
            return False
        if self.drop is not None and self.drop(packet):
            return True
        return await self.transmit(data)

    @property
    def dtls_transport(self) -> Any:
        """The ``RTCDtlsTransport`` this leg's packets leave through."""
        return self._state[_S + "transport"]

    async def transmit(self, data: bytes) -> bool:
        """The last hop of a prepared packet: SRTP-protect and send it on the DTLS
        transport; False if the transport is gone. The one seam a send-path experiment
        replaces (``bench/sfu_node_direct.py``)."""
        try:
            await self._state[_S + "transport"]._send_rtp(data)
        except ConnectionError:
            return False
        return True

    def prepare(self, packet: RtpPacket) -> bytes | None:
        """Stamp ``packet`` as this leg's, remember it, count it; its wire bytes (before
        SRTP), or None before the leg is negotiated."""
        if self.mid is None:
            return None
        state = self._state
        ntp = _ntp_now()
        packet.ssrc = self._ssrc
        packet.extensions.mid = self.mid
        packet.extensions.abs_send_time = (ntp >> 14) & 0x00FFFFFF
        self._history[packet.sequence_number % RTP_HISTORY_SIZE] = packet
        data = serialize(packet, self._extension_ids) or packet.serialize(self._extensions_map)
        clock_map = self._clock
        state[_S + "ntp_timestamp"] = ntp if clock_map is None else clock_map[0]
        state[_S + "rtp_timestamp"] = packet.timestamp if clock_map is None else clock_map[1]
        state[_S + "octet_count"] += len(packet.payload)
        state[_S + "packet_count"] += 1
        self.packets_sent += 1
        self.bytes_sent += len(data)
        return data

    async def _send(self, parameters: RTCRtpSendParameters) -> None:
        self.mid = parameters.muxId
        self._extension_ids = ExtensionIds.of(parameters.headerExtensions)
        for codec in parameters.codecs:
            if not is_rtx(codec) and codec.payloadType is not None:
                self._payload_types.setdefault(codec.name.lower(), codec.payloadType)
        await self._original_send(parameters)

    async def _handle_rtcp_packet(self, packet: Any) -> None:
        if isinstance(packet, RtcpPsfbPacket):
            if packet.fmt in (RTCP_PSFB_PLI, RTCP_PSFB_FIR):
                self.keyframe_requests += 1
                for keyframe_callback in self._on_keyframe_request:
                    await keyframe_callback()
                return
            if packet.fmt == RTCP_PSFB_APP:
                self._handle_remb(packet.fci)
                return
        elif isinstance(packet, RtcpRtpfbPacket) and packet.fmt == RTCP_RTPFB_NACK:
            missed = [
                seq
                for seq in packet.lost
                if (kept := self._history.get(seq % RTP_HISTORY_SIZE)) is None or kept.sequence_number != seq
            ]
            self.nacked += len(packet.lost)
            recent = self._nacked_recent
            for seq in packet.lost:  # only packets this leg really sent count as lost on the way
                if seq not in recent and seq not in missed:
                    recent[seq] = None
                    self.nacked_distinct += 1
            while len(recent) > NACK_MEMORY:
                del recent[next(iter(recent))]
            self.retransmittable += len(packet.lost) - len(missed)
            self.nack_misses += len(missed)
            await self._original_rtcp(packet)  # aiortc retransmits what the history has
            if missed:
                for miss_callback in self._on_nack_miss:
                    await miss_callback(missed)
            return
        await self._original_rtcp(packet)

    def _handle_remb(self, fci: bytes) -> None:
        try:
            bitrate, ssrcs = unpack_remb_fci(fci)
        except ValueError:
            return
        if self.ssrc in ssrcs:
            self.remb = bitrate
            for remb_callback in self._on_remb:
                remb_callback(bitrate)
