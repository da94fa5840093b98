"""Handing an established aiortc leg to the native core (prototype of the wiring).

After aiortc's ICE and DTLS handshakes, a leg is three things the core needs:

* the **SRTP keys**: exported again from the DTLS session (``export_keying_material`` with
  the ``EXTRACTOR-dtls_srtp`` label and the negotiated profile, split by DTLS role exactly
  as ``RTCDtlsTransport._setup_srtp`` does);
* the **socket** of the nominated ICE pair (aioice's ``StunProtocol`` transport) and the
  remote address; asyncio stops reading it (``pause_reading``), the core reads it;
* the **streams**: SSRCs, payload types, extension ids, and the rewrite state.

What the core does not handle comes back as events and is put where aiortc would have
received it: STUN and DTLS into the pair's ``StunProtocol.datagram_received`` (ICE consent
keeps working), decrypted RTCP into ``RTCDtlsTransport._handle_rtcp_data`` (receiver
reports, PLI, REMB reach aiortc's senders/receivers and the forwarder's hooks), RTP of an
unknown SSRC into ``_handle_rtp_data``. RTCP *to* the peers stays aiortc's (its SRTCP
session is then the leg's only RTCP sender: two senders under one key would reuse SRTCP
indexes).

This module reaches into aiortc/aioice private names; at wiring time it moves into
``media_node/aiortc_glue.py``, the one module allowed to (being edited by others while
this was written), with its names added to ``check_internals``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from aiortc import clock

from native import core as native

#: openssl profile name -> (libsrtp profile, key length, salt length): aiortc's SRTP_PROFILES
PROFILES = {
    b"SRTP_AES128_CM_SHA1_80": (native.PROFILE_AES128_CM_SHA1_80, 16, 14),
    b"SRTP_AEAD_AES_128_GCM": (native.PROFILE_AEAD_AES_128_GCM, 16, 12),
    b"SRTP_AEAD_AES_256_GCM": (native.PROFILE_AEAD_AES_256_GCM, 32, 12),
}
log = logging.getLogger(__name__)


class HandoverError(RuntimeError):
    """The leg cannot be handed over (not connected, no nominated pair, unknown profile)."""


def srtp_keys(dtls: Any) -> tuple[int, bytes, bytes]:
    """(libsrtp profile, rx master key+salt, tx master key+salt) of a connected ``RTCDtlsTransport``."""
    if dtls.state != "connected":
        raise HandoverError(f"DTLS transport is {dtls.state}")
    name = dtls._ssl.get_selected_srtp_profile()
    if name not in PROFILES:
        raise HandoverError(f"unknown SRTP profile {name!r}")
    profile, key_length, salt_length = PROFILES[name]
    view = dtls._ssl.export_keying_material(b"EXTRACTOR-dtls_srtp", 2 * (key_length + salt_length))

    def part(i: int) -> bytes:
        salt = 2 * key_length + i * salt_length
        return bytes(view[i * key_length : (i + 1) * key_length] + view[salt : salt + salt_length])

    if dtls._role == "server":
        return profile, part(0), part(1)
    return profile, part(1), part(0)


def ice_endpoint(dtls: Any) -> tuple[Any, int, tuple[str, int]]:
    """(StunProtocol, socket fd, remote address) of the leg's nominated ICE pair (RTP component)."""
    pair = dtls.transport._connection._nominated.get(1)
    if pair is None:
        raise HandoverError("no nominated ICE pair")
    sock = pair.protocol.transport.get_extra_info("socket")
    return pair.protocol, sock.fileno(), (pair.remote_addr[0], pair.remote_addr[1])


@dataclass
class _Leg:
    dtls: Any
    protocol: Any
    remote: tuple[str, int]


class Bridge:
    """A :class:`native.core.Core` driven by the asyncio loop, its events put back into aiortc.

    ``on_keyframe(in_id)``: an out stream waits for a keyframe of that in stream;
    ``on_nack_miss(out_id, seqs)``: NACKed packets the cache did not have (publisher seqs);
    ``on_gap(in_id, seqs)``: packets missing upstream (NACK them, or let repair decide).
    """

    def __init__(self, core: native.Core) -> None:
        self.core = core
        self.legs: dict[int, _Leg] = {}
        self._sockets: dict[int, int] = {}
        self._protocols: dict[int, Any] = {}
        self.on_keyframe: Callable[[int], Awaitable[None]] | None = None
        self.on_nack_miss: Callable[[int, list[int]], Awaitable[None]] | None = None
        self.on_gap: Callable[[int, list[int]], Awaitable[None]] | None = None
        self._queue: asyncio.Queue[native.Event] = asyncio.Queue()
        self._loop = asyncio.get_running_loop()
        self._loop.add_reader(core.epoll_fd, self._readable)
        self._worker = asyncio.ensure_future(self._dispatch())

    def add_leg(self, dtls: Any) -> int:
        """Take over a connected leg's SRTP and socket; returns the core's leg id."""
        profile, rx, tx = srtp_keys(dtls)
        protocol, fd, remote = ice_endpoint(dtls)
        sock = self._sockets.get(fd)
        if sock is None:
            sock = self._sockets[fd] = self.core.add_socket(fd)
            self._protocols[sock] = protocol
        leg = self.core.add_leg(sock, remote, profile, rx, tx)
        protocol.transport.pause_reading()  # from now on the core reads this socket
        self.legs[leg] = _Leg(dtls, protocol, remote)
        return leg

    def close(self) -> None:
        """Give the sockets back to asyncio and stop."""
        self._loop.remove_reader(self.core.epoll_fd)
        for leg in self.legs.values():
            with contextlib.suppress(Exception):
                leg.protocol.transport.resume_reading()
        self._worker.cancel()
        for sock in self._sockets.values():
            self.core.remove_socket(sock)

    def _readable(self) -> None:
        while self.core.run_once(0):
            pass
        for event in self.core.events():
            self._queue.put_nowait(event)

    async def _dispatch(self) -> None:
        while True:
            event = await self._queue.get()
            try:
                await self._handle(event)
            except Exception:  # one bad packet must not stop the bridge
                log.exception("native bridge: event %d of leg %d not handled", event.kind, event.leg)

    async def _handle(self, event: native.Event) -> None:
        seqs = [int.from_bytes(event.data[i : i + 2], "big") for i in range(0, len(event.data) - 1, 2)]
        if event.kind == native.EV_KEYFRAME and self.on_keyframe is not None:
            await self.on_keyframe(event.id)
        elif event.kind == native.EV_NACK_MISS and self.on_nack_miss is not None:
            await self.on_nack_miss(event.id, seqs)
        elif event.kind == native.EV_GAP and self.on_gap is not None:
            await self.on_gap(event.id, seqs)
        elif event.leg in self.legs:
            leg = self.legs[event.leg]
            if event.kind == native.EV_RAW:
                leg.protocol.datagram_received(event.data, event.addr or leg.remote)
            elif event.kind == native.EV_RTCP:
                await leg.dtls._handle_rtcp_data(event.data)
            elif event.kind == native.EV_RTP:
                await leg.dtls._handle_rtp_data(event.data, arrival_time_ms=clock.current_ms())
        elif event.kind == native.EV_RAW and event.sock in self._protocols and event.addr is not None:
            # from an address no leg has (another candidate pair's checks): the socket's protocol
            self._protocols[event.sock].datagram_received(event.data, event.addr)


def downstream_state(downstream: Any, in_ids: dict[int, int]) -> dict[str, int]:
    """A running ``forwarder.Downstream``'s rewrite state as ``Core.set_out_state`` takes it.

    ``in_ids`` maps ``id(encoding)`` to the core's in stream ids. (Reads the Downstream's
    private fields: at wiring time this becomes a public ``Downstream`` method.)
    """
    current = downstream.current
    return {
        "cur": in_ids[id(current)] if current is not None else -1,
        "tgt": in_ids[id(downstream.target)],
        "next_seq": downstream._next_seq,
        "next_ts": downstream._next_ts,
        "seq_offset": downstream._seq_offset,
        "ts_offset": downstream._ts_offset,
        "switch_seq": downstream._switch_seq,
        "switch_out_seq": downstream.switches[-1][2] if downstream.switches else downstream._next_seq,
        "max_seq": -1 if downstream._max_seq is None else downstream._max_seq,
        "last_ts": downstream._last_ts,
        "last_sent_at_us": round(downstream._last_sent_at * 1e6),
        "pic_offset": downstream._pic_offset,
        "last_pic": -1 if downstream._last_pic is None else downstream._last_pic,
        "frame_open": int(downstream._frame_open),
        "paused": int(downstream.paused),
    }
