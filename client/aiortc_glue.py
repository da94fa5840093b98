"""Every reach into aiortc's private names on the client side, in one place (aiortc 1.16.0).

aiortc's video receiver reassembles frames in a 512-packet jitter buffer that waits for a
missing packet until the buffer overflows, and only then asks for a keyframe. At a
browser's low-motion rate of about one packet per frame that is over half a minute of
frozen video after one packet that neither the media node nor the publisher could
retransmit, and a keyframe arriving in the meantime does not help: it waits behind the
hole too. :class:`RecoveringJitterBuffer` behaves as libwebrtc's receiver does:

* a hole still open after ``renack_s`` is NACKed again (every ``renack_s``, at most
  ``MAX_RENACKS`` times per packet and ``MAX_RENACK_SEQS`` packets per NACK, so that a burst
  of losses does not turn into a storm of retransmissions);
* a hole still open after ``pli_after_s`` asks for a keyframe (PLI, at most one per
  ``pli_interval_s`` while it stays open);
* a keyframe (VP8, H.264) arriving behind a hole starts afresh: the packets before it are
  dropped, so the decoder resumes at once.

:func:`recover_losses` puts one into a video ``RTCRtpReceiver``.

Dynacast (:func:`set_sending`): an ``RTCRtpSender`` stops sending (it keeps reading its
track and drops the frames unencoded, aiortc's own behaviour for a disabled sender, so a
paced track does not burst when it resumes) and starts again with a keyframe (aiortc's
answer to a PLI). A passthrough sender (:func:`use_encoder`) gets its packetizer before it
starts. Nothing else in the client
may use an aiortc name that starts with an underscore; :func:`check_internals` (run by
the tests) names what moved when aiortc is upgraded.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Any

from aiortc import RTCRtpReceiver, RTCRtpSender
from aiortc.codecs.base import Encoder
from aiortc.jitterbuffer import JitterBuffer
from aiortc.rtcrtpparameters import RTCRtpCodecParameters
from aiortc.rtp import RtpPacket

from media_node.keyframes import h264_keyframe_start, vp8_keyframe_start

log = logging.getLogger(__name__)

_R = "_RTCRtpReceiver__"
RECEIVER_INTERNALS = ("jitter_buffer", "codecs", "kind")
BUFFER_INTERNALS = ("_origin", "_packets", "_capacity")
VIDEO_CAPACITY = 512  # aiortc's own size for video
MAX_RENACKS = 3
MAX_RENACK_SEQS = 32
#: Keyframe tests by codec name (as aiortc spells it, lower-cased); other codecs never skip.
KEYFRAME_START: dict[str, Callable[[bytes], bool]] = {"vp8": vp8_keyframe_start, "h264": h264_keyframe_start}

Clock = Callable[[], float]
NackSender = Callable[[int, list[int]], None]
KeyframeTest = Callable[[RtpPacket], bool]


class AiortcInternalsChanged(RuntimeError):
    """The installed aiortc no longer has a private name this module relies on."""


def check_internals(receiver: RTCRtpReceiver) -> None:
    """Raise :class:`AiortcInternalsChanged` naming every private name that is missing."""
    missing = [f"RTCRtpReceiver.__{n}" for n in RECEIVER_INTERNALS if not hasattr(receiver, _R + n)]
    if not hasattr(receiver, "_send_rtcp_nack"):
        missing.append("RTCRtpReceiver._send_rtcp_nack")
    buffer = getattr(receiver, _R + "jitter_buffer", None)
    missing += [f"JitterBuffer.{n}" for n in BUFFER_INTERNALS if buffer is not None and not hasattr(buffer, n)]
    if missing:
        raise AiortcInternalsChanged("aiortc internals missing: " + ", ".join(missing))


SENDER_INTERNALS = ("_enabled", "_send_keyframe")


def check_sender_internals(sender: RTCRtpSender) -> None:
    """Raise :class:`AiortcInternalsChanged` if the sender lacks what :func:`set_sending` uses."""
    missing = [f"RTCRtpSender.{n}" for n in SENDER_INTERNALS if not hasattr(sender, n)]
    if missing:
        raise AiortcInternalsChanged("aiortc internals missing: " + ", ".join(missing))


def set_sending(sender: RTCRtpSender, on: bool) -> None:
    """Stop sending RTP on ``sender`` (frames are read and dropped before the encoder), or start
    again with the next frame encoded as a keyframe. A renegotiation of the sender's connection
    resets it to sending (aiortc sets it from the negotiated direction)."""
    check_sender_internals(sender)
    if on and not sender._enabled:
        sender._send_keyframe()  # before enabling: the next frame encoded sees both
    sender._enabled = on


_ENCODER = "_RTCRtpSender__encoder"


def use_encoder(sender: RTCRtpSender, encoder: Encoder) -> None:
    """Make ``sender`` use ``encoder`` instead of the one aiortc's ``get_encoder`` would build
    (``client.passthrough``: a packetizer for already-encoded H.264). Before the sender starts:
    aiortc builds its encoder only when it has none."""
    if not hasattr(sender, _ENCODER):
        raise AiortcInternalsChanged("aiortc internals missing: RTCRtpSender.__encoder")
    if getattr(sender, _ENCODER) is not None:
        raise RuntimeError("the sender has built its encoder already")
    setattr(sender, _ENCODER, encoder)


def is_sending(sender: RTCRtpSender) -> bool:
    check_sender_internals(sender)
    return bool(sender._enabled)


def _newer(a: int, b: int) -> bool:
    return a != b and (a - b) & 0xFFFF < 0x8000


class RecoveringJitterBuffer(JitterBuffer):
    """aiortc's video jitter buffer that re-NACKs, asks for keyframes and skips to them."""

    def __init__(
        self,
        is_keyframe: KeyframeTest,
        send_nack: NackSender,
        *,
        capacity: int = VIDEO_CAPACITY,
        clock: Clock = time.monotonic,
        renack_s: float = 0.1,
        pli_after_s: float = 0.3,
        pli_interval_s: float = 1.0,
    ) -> None:
        super().__init__(capacity=capacity, is_video=True)
        self.is_keyframe = is_keyframe
        self.send_nack = send_nack
        self.clock = clock
        self.renack_s = renack_s
        self.pli_after_s = pli_after_s
        self.pli_interval_s = pli_interval_s
        #: counters, for tests and logs
        self.renacks = 0
        self.plis = 0
        self.skips = 0
        self._max_seq: int | None = None
        self._renacked: dict[int, int] = {}  # seq -> NACKs sent again for it
        self._hole: int | None = None
        self._hole_since = 0.0
        self._nacked_at = 0.0
        self._pli_at = float("-inf")

    def add(self, packet: RtpPacket) -> tuple[bool, Any]:
        """aiortc's ``add`` (returns (send a PLI?, a complete frame or None)) plus recovery."""
        seq = packet.sequence_number
        if self._origin is not None and self.is_keyframe(packet):
            self._skip_to(seq)
        pli, frame = super().add(packet)
        if self._max_seq is None or _newer(seq, self._max_seq):
            self._max_seq = seq
        return self._recover(packet.ssrc) or pli, frame

    def _skip_to(self, seq: int) -> None:
        """A keyframe starts at ``seq``: if a packet before it is missing, drop all before it."""
        assert self._origin is not None
        delta = (seq - self._origin) & 0xFFFF
        if not 0 < delta < self._capacity:
            return
        if all(self._packets[(self._origin + i) % self._capacity] is not None for i in range(delta)):
            return
        self.remove(delta)
        self._renacked.clear()
        self.skips += 1
        log.info("video resumes at the keyframe at seq %d, past a hole (%d packets dropped)", seq, delta)

    def _recover(self, ssrc: int) -> bool:
        """Track the first hole; NACK it again or ask for a keyframe when it stays open."""
        hole = self._first_hole()
        now = self.clock()
        if hole is None:
            self._hole = None
            self._renacked.clear()
            return False
        if hole != self._hole:
            # aiortc's NACK generator NACKed it when the gap appeared: that was the first try
            self._hole, self._hole_since, self._nacked_at = hole, now, now
            return False
        if now - self._nacked_at >= self.renack_s:
            self._nacked_at = now
            seqs = [s for s in self._holes() if self._renacked.get(s, 0) < MAX_RENACKS][:MAX_RENACK_SEQS]
            if seqs:
                for s in seqs:
                    self._renacked[s] = self._renacked.get(s, 0) + 1
                self.renacks += 1
                self.send_nack(ssrc, seqs)
        if now - self._hole_since >= self.pli_after_s and now - self._pli_at >= self.pli_interval_s:
            self._pli_at = now
            self.plis += 1
            log.info(
                "video stuck %d ms behind lost packet %d: asking for a keyframe",
                round(1000 * (now - self._hole_since)),
                hole,
            )
            return True
        return False

    def _first_hole(self) -> int | None:
        """The oldest missing seq with a newer packet already buffered, if any."""
        if self._origin is None or self._max_seq is None:
            return None
        span = (self._max_seq - self._origin) & 0xFFFF
        if span >= self._capacity:
            return None
        for i in range(span):
            if self._packets[(self._origin + i) % self._capacity] is None:
                return (self._origin + i) & 0xFFFF
        return None

    def _holes(self) -> list[int]:
        assert self._origin is not None and self._max_seq is not None
        span = (self._max_seq - self._origin) & 0xFFFF
        return [
            (self._origin + i) & 0xFFFF
            for i in range(min(span, self._capacity))
            if self._packets[(self._origin + i) % self._capacity] is None
        ]


def keyframe_test(codecs: dict[int, RTCRtpCodecParameters]) -> KeyframeTest:
    """Whether a packet starts a keyframe, by its payload type in ``codecs`` (looked up late:
    aiortc fills the receiver's codec table when it starts receiving)."""

    def is_keyframe(packet: RtpPacket) -> bool:
        codec = codecs.get(packet.payload_type)
        test = KEYFRAME_START.get(codec.name.lower()) if codec is not None else None
        return test is not None and test(packet.payload)

    return is_keyframe


def recover_losses(
    receiver: RTCRtpReceiver, *, renack_s: float = 0.1, pli_after_s: float = 0.3, pli_interval_s: float = 1.0
) -> RecoveringJitterBuffer | None:
    """Give a video receiver a :class:`RecoveringJitterBuffer` (before media arrives).

    Returns it (or the one already installed); None for audio, and for a receiver that
    already got packets (its buffer is not swapped under it).
    """
    check_internals(receiver)
    current = getattr(receiver, _R + "jitter_buffer")
    if isinstance(current, RecoveringJitterBuffer):
        return current
    if getattr(receiver, _R + "kind") != "video":
        return None
    if current._origin is not None:
        log.warning("video receiver already gets packets: aiortc's own jitter buffer stays")
        return None
    tasks: set[asyncio.Future[None]] = set()

    def send_nack(ssrc: int, seqs: list[int]) -> None:
        task = asyncio.ensure_future(receiver._send_rtcp_nack(ssrc, seqs))
        tasks.add(task)
        task.add_done_callback(tasks.discard)

    buffer = RecoveringJitterBuffer(
        keyframe_test(getattr(receiver, _R + "codecs")),
        send_nack,
        capacity=current.capacity,
        renack_s=renack_s,
        pli_after_s=pli_after_s,
        pli_interval_s=pli_interval_s,
    )
    setattr(receiver, _R + "jitter_buffer", buffer)
    return buffer
