"""``python -m bench.sfu_node_direct``: the media node with an experimental send path.

An experiment of ``bench.sfu_forwarding --experiment direct-send``, not the product: it
measures what a proposed change to ``media_node.aiortc_glue.OutboundLeg.write`` would buy
before anyone makes it. Same node, same commands; only the last hop of every forwarded
packet differs:

* stock ``write``: ``RTCDtlsTransport._send_rtp`` (is_rtcp, ``Session.protect``) →
  ``RTCIceTransport._send`` → ``aioice.Connection.send`` → ``sendto`` → ``StunProtocol.send_data``
  → ``DatagramTransport.sendto``: five coroutines and two property lookups per packet;
* here: SRTP protect through libsrtp directly (one preallocated length cell per leg, no
  per-call ``ffi.new``), then ``DatagramTransport.sendto`` of the nominated ICE pair.

The DTLS transport's byte/packet statistics are not updated on this path.
"""

from __future__ import annotations

import sys
from typing import Any

from aiortc.rtcdtlstransport import State
from aiortc.rtp import RTP_HISTORY_SIZE, RtpPacket
from pylibsrtp._binding import ffi, lib

from media_node import aiortc_glue
from media_node.aiortc_glue import _S, OutboundLeg, _ntp_now, serialize


async def write(self: OutboundLeg, packet: RtpPacket) -> bool:
    if self.mid is None:
        return False
    state = self._state
    ntp = _ntp_now()
    packet.ssrc = self._ssrc
    packet.extensions.mid = self.mid
    packet.extensions.abs_send_time = (ntp >> 14) & 0x00FFFFFF
    self._history[packet.sequence_number % RTP_HISTORY_SIZE] = packet
    data = serialize(packet, self._extension_ids) or packet.serialize(self._extensions_map)
    state[_S + "ntp_timestamp"] = ntp
    state[_S + "rtp_timestamp"] = packet.timestamp
    state[_S + "octet_count"] += len(packet.payload)
    state[_S + "packet_count"] += 1
    self.packets_sent += 1
    self.bytes_sent += len(data)
    if self.drop is not None and self.drop(packet):
        return True
    dtls = state[_S + "transport"]
    if dtls._state is not State.CONNECTED:
        return False
    pair = dtls.transport._connection._nominated.get(1)
    if pair is None:
        return False
    srtp = dtls._tx_srtp
    cell: Any = getattr(self, "_len_cell", None)
    if cell is None:
        cell = self._len_cell = ffi.new("int *")  # type: ignore[attr-defined]
    size = len(data)
    if size > len(srtp._buffer) - 16:  # no room for the auth tag: let aiortc's path refuse it
        return False
    cell[0] = size
    srtp._buffer[0:size] = data
    if lib.srtp_protect(srtp._srtp[0], srtp._cdata, cell) != 0:
        return False
    pair.protocol.transport.sendto(srtp._buffer[0 : cell[0]], pair.remote_addr)
    return True


def install() -> None:
    aiortc_glue.OutboundLeg.write = write  # type: ignore[method-assign]


if __name__ == "__main__":
    install()
    from media_node.__main__ import main

    sys.exit(main())
