"""The load generator's media side: one publisher, lean counting subscribers, decoding canaries.

* :class:`SendLog` hooks the publisher's DTLS transport: for every RTP packet it keeps the
  send time by (kind, sequence number) and, for a recent window, the payload's tail, so a
  subscriber can learn how the node renumbered the stream.
* A counting subscriber is a real aiortc ``RTCPeerConnection`` (ICE, DTLS, RTCP reports,
  consent) whose RTP never enters aiortc: :func:`count_rtp` replaces ``datagram_received`` of
  its ICE sockets so an RTP datagram is only counted from its clear-text header (SRTP
  encrypts the payload, not the header): sequence number → loss, arrival time → latency.
  STUN, DTLS and RTCP still take aiortc's path; the receivers never start a decoder.
  The first packets of each stream are decrypted (the connection's own SRTP session) to
  match their payload against the publisher's, which gives the node's sequence offset.
* A canary is an ordinary aiortc subscriber that decodes; every decoded frame is read back
  with ``client.synthetic.decode_pattern`` (publisher code, loop frame index).
"""

from __future__ import annotations

import asyncio
import logging
import socket
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from aiortc import RTCPeerConnection
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack
from aiortc.sdp import SessionDescription

from bench.sfu_media import SOURCE_CODE
from client.synthetic import BITS, BLOCK

perf = time.perf_counter
TAILS_KEPT = 4000
RCVBUF = 4 * 1024 * 1024  # the instrument's sockets must not be the ones that drop


def _payload_offset(data: bytes) -> int:
    offset = 12 + 4 * (data[0] & 0x0F)
    if data[0] & 0x10 and len(data) >= offset + 4:
        offset += 4 + 4 * int.from_bytes(data[offset + 2 : offset + 4], "big")
    return offset


def _tail(payload: bytes) -> bytes:
    return payload[-24:]


class SendLog:
    """Send times of the publisher's RTP packets, by kind and sequence number."""

    def __init__(self) -> None:
        self.kinds: dict[int, str] = {}  # ssrc -> kind
        self.sent: dict[str, list[float]] = {"video": [0.0] * 65536, "audio": [0.0] * 65536}
        self.count: dict[str, int] = {"video": 0, "audio": 0}
        self.tails: dict[str, OrderedDict[bytes, int]] = {"video": OrderedDict(), "audio": OrderedDict()}
        self.frame_sent: list[float] = []  # video loop index -> last time it was handed to the sender

    def hook(self, pc: RTCPeerConnection) -> None:
        for sender in pc.getSenders():
            if sender.track is not None:
                self.kinds[sender._ssrc] = sender.track.kind  # noqa: SLF001 - bench instrumentation
        dtls = pc.getSenders()[0].transport
        original = dtls._send_rtp

        async def send_rtp(data: bytes) -> None:
            if not 192 <= data[1] <= 223:
                self.record(data)
            await original(data)

        dtls._send_rtp = send_rtp  # type: ignore[method-assign]

    def record(self, data: bytes) -> None:
        kind = self.kinds.get(int.from_bytes(data[8:12], "big"))
        if kind is None:  # RTX
            return
        seq = (data[2] << 8) | data[3]
        self.sent[kind][seq] = perf()
        self.count[kind] += 1
        tails = self.tails[kind]
        tails[_tail(data[_payload_offset(data) :])] = seq
        if len(tails) > TAILS_KEPT:
            tails.popitem(last=False)

    def on_frame(self, index: int, _at: float) -> None:
        if index >= len(self.frame_sent):
            self.frame_sent.extend([0.0] * (index + 1 - len(self.frame_sent)))
        self.frame_sent[index] = perf()


class Stream:
    """One RTP stream as a counting subscriber receives it."""

    __slots__ = ("ssrc", "kind", "received", "max_ext", "offset", "sent", "tries", "first_at", "last_at")

    def __init__(self, ssrc: int, seq: int, now: float) -> None:
        self.ssrc = ssrc
        self.kind = ""
        self.received = 0
        self.max_ext = seq
        self.offset: int | None = None
        self.sent: list[float] | None = None
        self.tries = 0
        self.first_at = now
        self.last_at = now


@dataclass
class Recorder:
    """Everything the counting subscribers measure, shared by all of them."""

    log: SendLog
    recording: bool = False
    latencies: list[float] = field(default_factory=list)
    audio_latencies: list[float] = field(default_factory=list)
    streams: list[Stream] = field(default_factory=list)
    unmatched: int = 0


def count_rtp(pc: RTCPeerConnection, recorder: Recorder) -> dict[int, Stream]:
    """Make ``pc``'s ICE sockets count RTP by header instead of handing it to aiortc.

    Call after ``setLocalDescription`` (the sockets exist once candidates are gathered).
    """
    dtls = pc.getTransceivers()[0].receiver.transport
    connection = dtls.transport._connection  # noqa: SLF001 - aioice Connection
    streams: dict[int, Stream] = {}
    kinds: dict[int, str] = {}  # payload type -> kind, from the node's offer
    log = recorder.log
    latencies = recorder.latencies
    audio_latencies = recorder.audio_latencies

    def learn(stream: Stream, data: bytes) -> None:
        stream.tries += 1
        srtp = dtls._rx_srtp  # noqa: SLF001
        if srtp is None:
            return
        try:
            plain = srtp.unprotect(data)
        except Exception:  # noqa: BLE001 - a replayed or broken packet: try the next one
            return
        tail = _tail(plain[_payload_offset(plain) :])
        seq = (data[2] << 8) | data[3]
        for kind, tails in log.tails.items():
            published = tails.get(tail)
            if published is not None:
                stream.kind, stream.offset, stream.sent = kind, (seq - published) & 0xFFFF, log.sent[kind]
                return
        recorder.unmatched += 1

    def on_rtp(data: bytes) -> None:
        now = perf()
        ssrc = int.from_bytes(data[8:12], "big")
        seq = (data[2] << 8) | data[3]
        stream = streams.get(ssrc)
        if stream is None:
            stream = streams[ssrc] = Stream(ssrc, seq, now)
            if not kinds and pc.remoteDescription is not None:
                for media in SessionDescription.parse(pc.remoteDescription.sdp).media:
                    kinds.update({c.payloadType: media.kind for c in media.rtp.codecs if c.payloadType is not None})
            stream.kind = kinds.get(data[1] & 0x7F, "")
            recorder.streams.append(stream)
        else:
            ahead = (seq - stream.max_ext) & 0xFFFF
            if ahead < 0x8000:
                stream.max_ext += ahead
        stream.received += 1
        stream.last_at = now
        if stream.offset is None:
            if stream.tries < 100:
                learn(stream, data)
        elif recorder.recording:
            sent_at = stream.sent[(seq - stream.offset) & 0xFFFF]  # type: ignore[index]
            if 0.0 <= now - sent_at < 5.0:
                latencies.append(now - sent_at)
                if stream.kind == "audio":
                    audio_latencies.append(now - sent_at)

    for protocol in connection._protocols:  # noqa: SLF001
        sock = protocol.transport.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, RCVBUF)
        original = protocol.datagram_received

        def datagram_received(data: bytes, addr: Any, original: Callable[..., None] = original) -> None:
            if 127 < data[0] < 192 and not 192 <= data[1] <= 223:
                on_rtp(data)
            else:
                original(data, addr)

        protocol.datagram_received = datagram_received  # type: ignore[method-assign,assignment]
    return streams


def read_pattern(frame: Any) -> tuple[int, int]:
    """``client.synthetic.decode_pattern`` reading only the luma rows that hold the bits."""
    plane = frame.planes[0]
    rows = (BITS // (frame.width // BLOCK) + 1) * BLOCK
    y = np.frombuffer(plane, np.uint8, count=plane.line_size * rows).reshape(rows, plane.line_size)
    per_row = frame.width // BLOCK
    value = 0
    for bit in range(BITS):
        row, col = divmod(bit, per_row)
        cy, cx = row * BLOCK + BLOCK // 2, col * BLOCK + BLOCK // 2
        value = (value << 1) | int(y[cy - 2 : cy + 3, cx - 2 : cx + 3].mean() > 128)
    return value >> 24, value & 0xFFFFFF


def never_decode(transceivers: list[Any]) -> None:
    """Keep a counting subscriber's receivers from starting aiortc's decoder threads."""
    from media_node.aiortc_glue import tap_receiver

    for transceiver in transceivers:
        tap_receiver(transceiver.receiver)


@dataclass
class Canary:
    """A decoding subscriber: decoded frames, their pattern, their age."""

    name: str
    frames: list[tuple[float, int]] = field(default_factory=list)  # (decoded at, loop index)
    wrong: int = 0  # frames whose pattern is not the publisher's
    audio_frames: int = 0
    tasks: list[asyncio.Task[None]] = field(default_factory=list)

    def attach(self, pc: RTCPeerConnection) -> None:
        @pc.on("track")
        def on_track(track: MediaStreamTrack) -> None:
            consume = self._video if track.kind == "video" else self._audio
            self.tasks.append(asyncio.ensure_future(consume(track)))

    async def _video(self, track: MediaStreamTrack) -> None:
        try:
            while True:
                frame = await track.recv()
                at = perf()
                code, index = read_pattern(frame)
                if code != SOURCE_CODE:
                    self.wrong += 1
                    continue
                self.frames.append((at, index))
        except MediaStreamError:
            return

    async def _audio(self, track: MediaStreamTrack) -> None:
        try:
            while True:
                await track.recv()
                self.audio_frames += 1
        except MediaStreamError:
            return

    def stop(self) -> None:
        for task in self.tasks:
            task.cancel()


def percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))]


def canary_report(canary: Canary, log: SendLog, start: float, end: float) -> dict[str, Any]:
    """Frame rate, longest gap between decoded frames, frame age (publisher → decoded)."""
    times = [at for at, _ in canary.frames if start <= at <= end]
    gaps = [b - a for a, b in zip([start, *times], [*times, end], strict=True)]
    ages = []
    for at, index in canary.frames:
        if start <= at <= end and index < len(log.frame_sent) and 0 < at - log.frame_sent[index] < 5:
            ages.append(at - log.frame_sent[index])
    p50, p99 = percentile(ages, 50), percentile(ages, 99)
    return {
        "fps": round(len(times) / (end - start), 1),
        "max_gap_s": round(max(gaps), 3),
        "wrong_frames": canary.wrong,
        "frame_p50_ms": None if p50 is None else round(p50 * 1000, 1),
        "frame_p99_ms": None if p99 is None else round(p99 * 1000, 1),
    }


class LoopLag:
    """How late the generator's event loop runs a 10 ms timer: its own saturation signal."""

    def __init__(self) -> None:
        self.lags: list[float] = []
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.ensure_future(self._run())

    async def _run(self) -> None:
        while True:
            due = perf() + 0.01
            await asyncio.sleep(0.01)
            self.lags.append(max(0.0, perf() - due))

    def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()


class ConsentWatch(logging.Handler):
    """Counts aioice's "Consent to send expired" (a peer stopped answering ICE consent checks)."""

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.expired = 0
        logger = logging.getLogger("aioice.ice")
        logger.setLevel(logging.INFO)
        logger.propagate = False
        logger.addHandler(self)

    def emit(self, record: logging.LogRecord) -> None:
        if "Consent to send expired" in record.getMessage():
            self.expired += 1
