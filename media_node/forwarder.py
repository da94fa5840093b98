"""RTP forwarding without decoding: sources, their encodings, and one downstream per subscriber.

A :class:`Source` is one publisher's camera, microphone or screen. It has up to three
encodings (``high``/``mid``/``low``, or ``single``), each an incoming stream (an
:class:`Upstream`, in practice an ``aiortc_glue.InboundTap``). A subscriber of the source
gets a :class:`Downstream`: packets of its current encoding, rewritten to its own SSRC,
sequence numbers and timestamps, written to its :class:`Downlink` (an ``OutboundLeg``).

* Video starts, and moves to another encoding, only at a keyframe of that encoding and
  once the subscriber's leg is connected; the forwarder asks the publisher for one (PLI, at
  most one per ``pli_interval_s`` per encoding) and keeps asking while a subscriber waits.
* A switch happens between frames: if the current frame is still open (no marker bit yet),
  the target's keyframe packets wait (at most ``MAX_HELD_PACKETS`` / ``MAX_HOLD_S``).
* Across a switch, sequence numbers continue at +1 and timestamps advance by the wall time
  elapsed, so the subscriber sees one continuous stream; VP8 picture ids are renumbered too.
* Sender reports: each leg's carry the publisher's latest NTP↔RTP mapping of the
  encoding it reads, translated to the leg's timestamps (lip sync at the subscriber).
* A subscriber's PLI/FIR is relayed to its encoding's publisher (same throttle); the
  subscribers' REMB estimates, with the node's own uplink estimate, are folded into one REMB
  per encoding (the minimum), sent upstream by :meth:`Source.tick`.
* Losses on a publisher leg (``repair.LossRepair``): a missing packet is NACKed upstream
  again every ``nack_retry_s``; one still missing after ``repair_give_up_s`` cannot reach any
  subscriber, so the node asks the publisher for a keyframe (unless one already started after
  the hole). A subscriber's NACK the node cannot answer (never received, or no longer in the
  leg's history), that no retransmission is on its way for and that no later keyframe has
  made moot asks for one at once.
* From the start (recorders): each encoding keeps its first ``START_BUFFER_S`` of packets.
  A subscriber marked with :meth:`Source.from_start_for` (streams set ``from_start`` on a
  recorder's ``AddSubscription``) whose leg comes up while that buffer still reaches back to
  the encoding's first packet gets the buffer replayed from its first keyframe, then the
  live packets: a track published during a recording is recorded from its first frame.

No aiortc private name is used here (see ``aiortc_glue``); the clock is injected.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Awaitable, Callable, Iterable, Sequence
from typing import Protocol

from aiortc.rtp import RtpPacket

from media_node.gop_cache import GopCache
from media_node.keyframes import keyframe_detector, vp8_picture_id, vp8_with_picture_id
from media_node.repair import LossRepair, seq_newer
from observability import metrics
from producers.fields import Layer

Clock = Callable[[], float]
LAYER_ORDER: tuple[Layer, ...] = ("high", "mid", "low")
PictureId = tuple[int, int] | None
MAX_HELD_PACKETS = 64
MAX_HOLD_S = 0.1
#: How much of an encoding's beginning is kept for subscribers that record from the start.
START_BUFFER_S = 5.0
START_BUFFER_PACKETS = 4000
log = logging.getLogger(__name__)


class Upstream(Protocol):
    """An incoming encoding as the forwarder drives it (``aiortc_glue.InboundTap``)."""

    @property
    def uplink_bitrate(self) -> int | None: ...
    @property
    def connection(self) -> object:
        """What identifies the publisher connection this encoding arrives on."""

    def codec_of(self, payload_type: int) -> tuple[str, int] | None: ...
    async def request_keyframe(self, media_ssrc: int) -> None: ...
    async def request_retransmission(self, media_ssrc: int, seqs: list[int]) -> None: ...
    async def send_remb(self, bitrate: int, ssrcs: list[int]) -> None: ...
    def sender_report(self, ssrc: int | None) -> tuple[int, int] | None: ...


class Downlink(Protocol):
    """A subscriber's outgoing stream (``aiortc_glue.OutboundLeg``)."""

    @property
    def kind(self) -> str: ...
    @property
    def ready(self) -> bool: ...
    def payload_type(self, codec_name: str) -> int | None: ...
    async def write(self, packet: RtpPacket) -> bool: ...
    def on_keyframe_request(self, callback: Callable[[], Awaitable[None]]) -> None: ...
    def on_remb(self, callback: Callable[[int], None]) -> None: ...
    def on_nack_miss(self, callback: Callable[[list[int]], Awaitable[None]]) -> None: ...
    def map_clock(self, ntp: int, rtp: int) -> None: ...


def seq_newer_or_equal(a: int, b: int) -> bool:
    return (a - b) & 0xFFFF < 0x8000


class Encoding:
    """One incoming stream of a source, and the downstreams that read (or wait for) it."""

    def __init__(self, source: Source, layer: Layer, upstream: Upstream) -> None:
        self.source = source
        self.layer = layer
        self.upstream = upstream
        self.ssrc: int | None = None
        self.codec_name = ""
        self.clock_rate = 90000
        self.readers: list[Downstream] = []
        self.packets_in = 0
        self.bytes_in = 0
        self.keyframe_requests_sent = 0
        #: keyframe requests sent upstream by reason: start, layer, relay, loss, nack_miss
        self.keyframe_requests_by_reason: dict[str, int] = {}
        #: packets missing from this publisher leg (video only: audio is not retransmitted)
        self.repair = LossRepair(source.nack_retry_s, source.repair_give_up_s) if source.kind == "video" else None
        #: (incoming seq, packets_in) of the last keyframe start (video)
        self._last_keyframe: tuple[int, int] | None = None
        self._payload_type = -1
        self._is_keyframe: Callable[[bytes], bool] = keyframe_detector("")
        self._is_vp8 = False
        self._last_request_at = float("-inf")
        self._request_wanted = False
        #: a PLI went upstream and no keyframe has arrived since: only then are
        #: further requests held back (a new subscriber right after a keyframe asks again)
        self._request_outstanding = False
        #: every packet since the first, while the encoding is younger than START_BUFFER_S
        self.start_buffer: list[RtpPacket] | None = []
        self._first_at: float | None = None
        #: packets since the latest keyframe, for subscribers that join late (video)
        self.gop = GopCache(self.is_keyframe) if source.kind == "video" else None

    def _keep_start(self, packet: RtpPacket, now: float) -> None:
        buffer = self.start_buffer
        if buffer is None:
            return
        if self._first_at is None:
            self._first_at = now
        if now - self._first_at > START_BUFFER_S or len(buffer) >= START_BUFFER_PACKETS:
            self.start_buffer = None  # no longer reaches back to the first packet
        else:
            buffer.append(packet)

    async def push(self, packet: RtpPacket, arrival_ms: int = 0) -> None:
        """Forward one incoming packet to every downstream of this encoding."""
        self.ssrc = packet.ssrc
        self.packets_in += 1
        self.bytes_in += len(packet.payload)
        if packet.payload_type != self._payload_type:
            self._learn_codec(packet.payload_type)
        if self._request_outstanding and self._is_keyframe(packet.payload):
            self._request_outstanding = False
        source = self.source
        now = source.clock()
        self._keep_start(packet, now)
        if self.gop is not None:
            self.gop.add(packet, now)
        repair = self.repair
        if repair is not None:
            if self._is_keyframe(packet.payload):
                self._last_keyframe = (packet.sequence_number, self.packets_in)
            repair.received(packet.sequence_number, now)
            if repair.missing:
                await self.check_repair(now)
        if not self.readers:
            return
        if self._request_wanted:
            await self.request_keyframe(now)
        keyframe: bool | None = None
        picture_id = vp8_picture_id(packet.payload) if self._is_vp8 else None
        for reader in tuple(self.readers):
            if reader.replay_tail is not None:
                reader.replay_tail.append(packet)  # after the replayed beginning, in order
            elif reader.current is self:
                await reader.forward(packet, picture_id, now)
            elif not reader.leg.ready:
                continue
            elif reader.holding:
                await reader.hold(packet, picture_id, now)
            else:
                if keyframe is None:
                    keyframe = self._is_keyframe(packet.payload)
                if keyframe:
                    await reader.start(packet, picture_id, now)
                elif reader.current is None and not reader.packets and await reader.replay_gop():
                    continue  # a first start (not a resume): this packet was the cached GOP's last
                else:
                    await self.request_keyframe(now)

    def is_keyframe(self, payload: bytes) -> bool:
        return self._is_keyframe(payload)

    def picture_id(self, packet: RtpPacket) -> PictureId:
        return vp8_picture_id(packet.payload) if self._is_vp8 else None

    def keyframe_after(self, seq: int) -> bool:
        """Whether a keyframe started after incoming packet ``seq`` (decoders resume there)."""
        last = self._last_keyframe
        return last is not None and self.packets_in - last[1] < 0x4000 and seq_newer(last[0], seq)

    async def check_repair(self, now: float) -> None:
        """NACK again what is due; ask for a keyframe for what was given up."""
        if self.repair is None or not self.repair.missing or self.ssrc is None:
            return
        retry, lost = self.repair.due(now)
        if retry:
            metrics.MEDIA_UPSTREAM_NACKS.inc()
            await self.upstream.request_retransmission(self.ssrc, retry)
        if not lost:
            return
        metrics.MEDIA_UNREPAIRED_PACKETS.inc(len(lost))
        recovered = all(self.keyframe_after(s) for s in lost)
        if not recovered and any(r.current is self for r in self.readers):
            log.info(
                "%d packets lost upstream and not retransmitted: asking for a keyframe",
                len(lost),
                extra={"peer_id": self.source.publisher_id, "source_id": self.source.source_id},
            )
            await self.request_keyframe(now, reason="loss")

    async def subscriber_missed(self, seqs: list[int]) -> None:
        """A subscriber NACKed these incoming seqs and the node could not answer."""
        # holes before a keyframe the subscriber got do not matter (aiortc NACKs them for a while)
        seqs = [s for s in seqs if not self.keyframe_after(s)]
        if not seqs or (self.repair is not None and all(self.repair.pending(s) for s in seqs)):
            return  # a retransmission may still come; check_repair asks for a keyframe if not
        if await self.request_keyframe(reason="nack_miss"):
            log.info(
                "a subscriber NACKed %d packets the node does not have: asked for a keyframe",
                len(seqs),
                extra={"peer_id": self.source.publisher_id, "source_id": self.source.source_id},
            )

    async def request_keyframe(self, now: float | None = None, reason: str = "start") -> bool:
        """Ask the publisher for a keyframe (PLI) unless one was asked for too recently."""
        if self.source.kind != "video":
            return False
        now = self.source.clock() if now is None else now
        if self.ssrc is None:
            self._request_wanted = True
            return False
        if self._request_outstanding and now - self._last_request_at < self.source.pli_interval_s:
            return False
        self._request_wanted = False
        self._request_outstanding = True
        self._last_request_at = now
        self.keyframe_requests_sent += 1
        self.keyframe_requests_by_reason[reason] = self.keyframe_requests_by_reason.get(reason, 0) + 1
        metrics.MEDIA_KEYFRAME_REQUESTS.labels(reason=reason).inc()
        await self.upstream.request_keyframe(self.ssrc)
        return True

    def bitrate_limit(self, now: float) -> int | None:
        """The smallest fresh estimate among this encoding's subscribers and its uplink."""
        estimates = [
            r.remb
            for r in self.readers
            if r.current is self and r.remb is not None and now - r.remb_at <= self.source.remb_timeout_s
        ]
        if self.upstream.uplink_bitrate is not None:
            estimates.append(self.upstream.uplink_bitrate)
        return min(estimates) if estimates else None

    def _learn_codec(self, payload_type: int) -> None:
        self._payload_type = payload_type
        codec = self.upstream.codec_of(payload_type)
        self.codec_name, self.clock_rate = codec if codec is not None else ("", 90000)
        self._is_keyframe = keyframe_detector(self.codec_name)
        self._is_vp8 = self.codec_name.lower() == "vp8"


class Downstream:
    """One subscriber of a source: its layer choice and its continuous outgoing numbering."""

    def __init__(
        self,
        source: Source,
        subscriber_id: str,
        leg: Downlink,
        target: Encoding,
        initial_seq: int | None = None,
        initial_ts: int | None = None,
    ) -> None:
        self.source = source
        self.subscriber_id = subscriber_id
        self.leg = leg
        self.current: Encoding | None = None
        self.target = target
        self.closed = False
        #: Video paused by the quality loop: nothing is forwarded until resumed, and then
        #: only from a keyframe (numbering continues as across a layer switch).
        self.paused = False
        self.unsupported_codec = False
        #: a recorder (subscribed ``from_start``): replays keep the publisher's frame times
        self.keeps_time = False
        self.packets = 0
        self.bytes = 0
        self.keyframe_requests_relayed = 0
        self.remb: int | None = None
        self.remb_at = float("-inf")
        #: (layer, incoming seq, outgoing seq) at each start or switch, for tests and logs
        self.switches: list[tuple[Layer, int, int]] = []
        self._next_seq = random.getrandbits(15) if initial_seq is None else initial_seq
        self._next_ts = random.getrandbits(32) if initial_ts is None else initial_ts
        self._seq_offset = 0
        self._ts_offset = 0
        self._switch_seq = 0
        self._max_seq: int | None = None
        self._last_ts = 0
        self._last_sent_at = 0.0
        self._pic_offset = 0
        self._last_pic: int | None = None
        self._payload_types: dict[str, int | None] = {}
        self._frame_open = False
        self._held: list[tuple[RtpPacket, PictureId]] = []
        self._held_since = 0.0
        self._subscribed_at = source.clock()
        self._clock_mapped: tuple[tuple[int, int], int] | None = None
        #: live packets that arrive while the encoding's beginning is replayed
        self.replay_tail: list[RtpPacket] | None = None
        target.readers.append(self)
        leg.on_keyframe_request(self._relay_keyframe_request)
        leg.on_remb(self._record_remb)
        leg.on_nack_miss(self._nack_missed)

    @property
    def layer(self) -> Layer | None:
        """The encoding the subscriber is receiving now (None before its first keyframe)."""
        return self.current.layer if self.current is not None else None

    @property
    def holding(self) -> bool:
        """Whether the target's keyframe arrived and waits for the current frame to end."""
        return bool(self._held)

    def retarget(self, encoding: Encoding) -> None:
        old = self.target
        self.target = encoding
        self._held = []
        if old is not encoding and old is not self.current and self in old.readers:
            old.readers.remove(self)
        if self not in encoding.readers:
            encoding.readers.append(self)

    async def start(self, packet: RtpPacket, picture_id: PictureId, now: float) -> None:
        """The target's keyframe begins: switch now, or once the current frame is complete."""
        if self.current is None:
            log.info(
                "first %s packet of %s/%s to %s %.2f s after subscribing",
                self.source.kind,
                self.source.publisher_id,
                self.source.source_id,
                self.subscriber_id,
                now - self._subscribed_at,
                extra={"peer_id": self.source.publisher_id, "source_id": self.source.source_id},
            )
        if self.current is not None and self._frame_open:
            self._held = [(packet, picture_id)]
            self._held_since = now
            return
        self.switch(self.target, packet, picture_id, now)
        await self.forward(packet, picture_id, now)

    async def replay_start(self) -> int:
        """Forward the target's beginning (from its first keyframe), then what arrived
        meanwhile; returns the packets replayed (0: the beginning is no longer kept)."""
        encoding = self.target
        buffered = list(encoding.start_buffer or ())
        first = next((i for i, p in enumerate(buffered) if encoding.is_keyframe(p.payload)), None)
        return 0 if first is None else await self._replay(buffered[first:], "from its start")

    async def replay_gop(self) -> int:
        """Start on the target's cached GOP (``media_node/gop_cache.py``): its latest keyframe
        and the frames since (squeezed in time, except for a recorder, which writes each frame
        at its time), then what arrived meanwhile; 0 if none is cached."""
        gop = self.target.gop
        if gop is None or not len(gop):
            return 0
        return await self._replay(gop.packets(squeeze=not self.keeps_time), "from its latest keyframe")

    async def _replay(self, packets: list[RtpPacket], what: str) -> int:
        encoding = self.target
        now = self.source.clock()
        self.replay_tail = []
        try:
            self.switch(encoding, packets[0], encoding.picture_id(packets[0]), now)
            replayed = 0
            while packets:
                for packet in packets:
                    await self.forward(packet, encoding.picture_id(packet), self.source.clock())
                replayed += len(packets)
                packets, self.replay_tail = self.replay_tail, []
        finally:
            self.replay_tail = None
        log.info(
            "%s/%s to %s %s: %d packets replayed",
            self.source.publisher_id,
            self.source.source_id,
            self.subscriber_id,
            what,
            replayed,
            extra={"peer_id": self.subscriber_id, "source_id": self.source.source_id},
        )
        return replayed

    async def hold(self, packet: RtpPacket, picture_id: PictureId, now: float) -> None:
        """Keep a target packet until the current frame ends (or too much time/too many packets)."""
        self._held.append((packet, picture_id))
        if len(self._held) >= MAX_HELD_PACKETS or now - self._held_since > MAX_HOLD_S:
            await self._release(now)

    async def forward(self, packet: RtpPacket, picture_id: PictureId, now: float) -> None:
        """Rewrite and write one packet of the current encoding."""
        if self.paused:
            return
        out = self.rewrite(packet, picture_id, now)
        if out is not None and self.current is not None:
            self._map_clock(self.current)
        if out is not None and await self.leg.write(out):
            size = len(out.payload)
            self.packets += 1
            self.bytes += size
            self.source.packets_forwarded += 1
            self.source.bytes_forwarded += size
        if self._held and not self._frame_open:
            await self._release(now)

    def _map_clock(self, encoding: Encoding) -> None:
        """Give the leg the publisher's NTP↔RTP mapping in this subscriber's timestamps."""
        report = encoding.upstream.sender_report(encoding.ssrc)
        if report is None or (report, self._ts_offset) == self._clock_mapped:
            return
        self._clock_mapped = (report, self._ts_offset)
        self.leg.map_clock(report[0], (report[1] + self._ts_offset) & 0xFFFFFFFF)

    async def _release(self, now: float) -> None:
        held, self._held = self._held, []
        self.switch(self.target, held[0][0], held[0][1], now)
        for packet, picture_id in held:
            await self.forward(packet, picture_id, now)

    def switch(self, encoding: Encoding, packet: RtpPacket, picture_id: PictureId, now: float) -> None:
        """Start reading ``encoding`` at ``packet`` (a keyframe start), continuing the numbering."""
        if self._max_seq is not None:
            self._next_seq = (self._max_seq + 1) & 0xFFFF
            elapsed = max(now - self._last_sent_at, 0.0)
            self._next_ts = (self._last_ts + max(1, round(elapsed * encoding.clock_rate))) & 0xFFFFFFFF
        self._seq_offset = (self._next_seq - packet.sequence_number) & 0xFFFF
        self._ts_offset = (self._next_ts - packet.timestamp) & 0xFFFFFFFF
        self._switch_seq = packet.sequence_number
        if picture_id is not None and self._last_pic is not None:
            self._pic_offset = (self._last_pic + 1 - picture_id[0]) & 0x7FFF
        else:
            self._pic_offset = 0
        old = self.current
        self.current = encoding
        if old is not None and old is not encoding and old is not self.target and self in old.readers:
            old.readers.remove(self)
        self.switches.append((encoding.layer, packet.sequence_number, self._next_seq))
        log.debug(
            "layer %s from seq %d",
            encoding.layer,
            self._next_seq,
            extra={"peer_id": self.subscriber_id, "source_id": self.source.source_id},
        )

    def rewrite(self, packet: RtpPacket, picture_id: PictureId, now: float) -> RtpPacket | None:
        """This subscriber's copy of ``packet``, or None for packets from before the switch."""
        if not seq_newer_or_equal(packet.sequence_number, self._switch_seq):
            return None
        encoding = self.current
        assert encoding is not None
        payload_type = self._payload_types.get(encoding.codec_name, -1)
        if payload_type == -1:
            payload_type = self._payload_types[encoding.codec_name] = self.leg.payload_type(encoding.codec_name)
        if payload_type is None:
            if not self.unsupported_codec:
                self.unsupported_codec = True
                log.warning(
                    "subscriber did not negotiate %s",
                    encoding.codec_name,
                    extra={"peer_id": self.subscriber_id, "source_id": self.source.source_id},
                )
            return None
        seq = (packet.sequence_number + self._seq_offset) & 0xFFFF
        ts = (packet.timestamp + self._ts_offset) & 0xFFFFFFFF
        payload = packet.payload
        pic: int | None = None
        if picture_id is not None:
            pic = (picture_id[0] + self._pic_offset) & 0x7FFF
            if self._pic_offset:
                payload = vp8_with_picture_id(payload, pic)
        if self._max_seq is None or seq_newer_or_equal(seq, self._max_seq):
            self._max_seq = seq
            self._last_ts = ts
            self._last_sent_at = now
            self._frame_open = not packet.marker
            if pic is not None:
                self._last_pic = pic
        out = RtpPacket(
            payload_type=payload_type, marker=packet.marker, sequence_number=seq, timestamp=ts, payload=payload
        )
        out.padding_size = packet.padding_size
        if packet.extensions.audio_level is not None:
            out.extensions.audio_level = packet.extensions.audio_level
        return out

    def resume(self) -> None:
        """After a pause: wait for a keyframe of the target, as a subscriber that just
        joined does; the numbering continues from the last packet sent."""
        current, self.current = self.current, None
        self._held = []
        self._frame_open = False
        if current is not None and current is not self.target and self in current.readers:
            current.readers.remove(self)
        if self not in self.target.readers:
            self.target.readers.append(self)

    def close(self) -> None:
        self.closed = True
        for encoding in {id(e): e for e in (self.current, self.target) if e is not None}.values():
            if self in encoding.readers:
                encoding.readers.remove(self)

    async def _relay_keyframe_request(self) -> None:
        encoding = self.current or self.target
        if self.closed:
            return
        if await encoding.request_keyframe(reason="relay"):
            self.keyframe_requests_relayed += 1

    async def _nack_missed(self, seqs: list[int]) -> None:
        """The leg could not answer a NACK for these outgoing seqs: map them to the publisher's."""
        encoding = self.current
        if encoding is None or self.closed:
            return
        since = self.switches[-1][2]  # holes before the last switch's keyframe do not matter
        seqs = [s for s in seqs if seq_newer_or_equal(s, since)]
        if seqs:
            await encoding.subscriber_missed([(s - self._seq_offset) & 0xFFFF for s in seqs])

    def _record_remb(self, bitrate: int) -> None:
        self.remb = bitrate
        self.remb_at = self.source.clock()


class Source:
    """One publisher's source (camera, microphone, screen) and everyone subscribed to it."""

    def __init__(
        self,
        publisher_id: str,
        source_id: str,
        kind: str,
        *,
        clock: Clock = time.monotonic,
        pli_interval_s: float = 0.5,
        remb_timeout_s: float = 5.0,
        nack_retry_s: float = 0.05,
        repair_give_up_s: float = 0.2,
    ) -> None:
        self.publisher_id = publisher_id
        self.source_id = source_id
        self.kind = kind
        self.clock = clock
        self.pli_interval_s = pli_interval_s
        self.remb_timeout_s = remb_timeout_s
        self.nack_retry_s = nack_retry_s
        self.repair_give_up_s = repair_give_up_s
        self.encodings: dict[Layer, Encoding] = {}
        self.downstreams: dict[str, Downstream] = {}
        #: subscribers that get the source from its beginning (recorders), see replay_start
        self.from_start: set[str] = set()
        self.packets_forwarded = 0
        self.bytes_forwarded = 0
        self._flushed = (0, 0)

    def add_encoding(self, layer: Layer, upstream: Upstream) -> Encoding:
        if layer in self.encodings:
            raise ValueError(f"source {self.source_id} already has a {layer} encoding")
        encoding = self.encodings[layer] = Encoding(self, layer, upstream)
        return encoding

    def resolve(self, layer: Layer) -> Encoding:
        """The encoding for a requested layer: that one, else the next lower, else the next higher."""
        if not self.encodings:
            raise LookupError(f"source {self.source_id} has no encoding")
        if layer in self.encodings:
            return self.encodings[layer]
        if "single" in self.encodings:
            return self.encodings["single"]
        start = LAYER_ORDER.index(layer) if layer in LAYER_ORDER else 0
        for candidate in LAYER_ORDER[start:] + LAYER_ORDER[:start][::-1]:
            if candidate in self.encodings:
                return self.encodings[candidate]
        raise LookupError(f"source {self.source_id} has no usable encoding")

    async def subscribe(
        self,
        subscriber_id: str,
        leg: Downlink,
        layer: Layer = "high",
        initial_seq: int | None = None,
        initial_ts: int | None = None,
    ) -> Downstream:
        """Start forwarding to ``leg``; video begins at the next keyframe (requested now)."""
        if subscriber_id in self.downstreams:
            raise ValueError(f"{subscriber_id} already subscribes to {self.source_id}")
        target = self.resolve(layer)
        downstream = Downstream(self, subscriber_id, leg, target, initial_seq, initial_ts)
        self.downstreams[subscriber_id] = downstream
        downstream.keeps_time = subscriber_id in self.from_start
        if leg.ready and subscriber_id in self.from_start:
            self.from_start.discard(subscriber_id)
            if await downstream.replay_start():
                return downstream
        if leg.ready:
            await target.request_keyframe()
        return downstream

    def from_start_for(self, subscriber_id: str) -> None:
        """``subscriber_id``'s coming subscription starts at the source's first packet if
        the source is still young enough (``START_BUFFER_S``), else as any other does."""
        self.from_start.add(subscriber_id)

    async def set_layer(self, subscriber_id: str, layer: Layer) -> Downstream:
        """Move a subscriber to another encoding at that encoding's next keyframe."""
        downstream = self.downstreams[subscriber_id]
        target = self.resolve(layer)
        downstream.retarget(target)
        if downstream.current is not target:
            await target.request_keyframe(reason="layer")
        return downstream

    async def set_paused(self, subscriber_id: str, paused: bool) -> Downstream:
        """Stop forwarding to a subscriber, or resume from the target's next keyframe."""
        downstream = self.downstreams[subscriber_id]
        if paused == downstream.paused:
            return downstream
        downstream.paused = paused
        if not paused:
            downstream.resume()
            await downstream.target.request_keyframe(reason="layer")
        return downstream

    def unsubscribe(self, subscriber_id: str) -> None:
        downstream = self.downstreams.pop(subscriber_id, None)
        if downstream is not None:
            downstream.close()

    async def tick(self) -> None:
        """Periodic work: losses given up, metrics flushed. REMB: ``remb_limits`` and
        ``send_rembs``, once per publisher connection."""
        now = self.clock()
        for encoding in self.encodings.values():
            await encoding.check_repair(now)
        self.flush_metrics()

    def remb_limits(self) -> list[tuple[Upstream, int, int]]:
        """(upstream, ssrc, bitrate limit) of every encoding with a fresh estimate."""
        now = self.clock()
        out = []
        for encoding in self.encodings.values():
            limit = encoding.bitrate_limit(now)
            if limit is not None and encoding.ssrc is not None:
                out.append((encoding.upstream, encoding.ssrc, limit))
        return out

    def flush_metrics(self) -> None:
        """Add what was forwarded since the last flush to the node's Prometheus counters."""
        kind = self.kind
        metrics.MEDIA_FORWARDED_PACKETS.labels(kind=kind).inc(self.packets_forwarded - self._flushed[0])
        metrics.MEDIA_FORWARDED_BYTES.labels(kind=kind).inc(self.bytes_forwarded - self._flushed[1])
        self._flushed = (self.packets_forwarded, self.bytes_forwarded)


class Forwarder:
    """Every source of one media node process."""

    def __init__(
        self, *, clock: Clock = time.monotonic, pli_interval_s: float = 0.5, remb_timeout_s: float = 5.0
    ) -> None:
        self.clock = clock
        self.pli_interval_s = pli_interval_s
        self.remb_timeout_s = remb_timeout_s
        self.sources: dict[tuple[str, str], Source] = {}

    def source(self, publisher_id: str, source_id: str, kind: str) -> Source:
        """The source, created on first use."""
        key = (publisher_id, source_id)
        if key not in self.sources:
            self.sources[key] = Source(
                publisher_id,
                source_id,
                kind,
                clock=self.clock,
                pli_interval_s=self.pli_interval_s,
                remb_timeout_s=self.remb_timeout_s,
            )
        return self.sources[key]

    def remove_source(self, publisher_id: str, source_id: str) -> Source | None:
        source = self.sources.pop((publisher_id, source_id), None)
        if source is not None:
            for subscriber_id in list(source.downstreams):
                source.unsubscribe(subscriber_id)
            source.flush_metrics()
        return source

    def unsubscribe_all(self, subscriber_id: str) -> None:
        for source in self.sources.values():
            source.unsubscribe(subscriber_id)

    @property
    def packets_forwarded(self) -> int:
        return sum(s.packets_forwarded for s in self.sources.values())

    async def tick(self) -> None:
        await tick_sources(self.sources.values())

    async def run(self, interval_s: float = 1.0) -> None:
        """Tick forever (REMB upstream, metrics); cancel to stop."""
        while True:
            await asyncio.sleep(interval_s)
            await self.tick()


async def send_rembs(limits: Sequence[tuple[Upstream, int, int]]) -> None:
    """One REMB per publisher connection: the sum of its encodings' limits, naming all
    their SSRCs. Chromium applies a REMB as a cap on the whole connection's send rate
    whatever SSRCs it names, so a REMB per encoding capped a camera's three layers and
    its microphone at the low layer's estimate."""
    by_connection: dict[int, list[tuple[Upstream, int, int]]] = {}
    for limit in limits:
        by_connection.setdefault(id(limit[0].connection), []).append(limit)
    for group in by_connection.values():
        await group[0][0].send_remb(sum(bitrate for _, _, bitrate in group), [ssrc for _, ssrc, _ in group])


async def tick_sources(sources: Iterable[Source]) -> None:
    """Periodic work of a node's sources, then one REMB per publisher connection."""
    limits = []
    for source in list(sources):
        await source.tick()
        limits += source.remb_limits()
    await send_rembs(limits)
