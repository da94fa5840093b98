"""``python -m bench.sfu_node_direct``: the media node with an experimental send path.

An experiment of ``bench.sfu_forwarding --experiment direct-send``, not the product: it
measures what a proposed change to ``media_node.aiortc_glue.OutboundLeg.transmit`` (the
last hop of ``write``, its public seam) would buy before anyone makes it. Same node, same
commands, same ``OutboundLeg.prepare``; only the last hop of every forwarded packet differs:

* stock ``transmit``: ``RTCDtlsTransport._send_rtp`` (is_rtcp, ``Session.protect``) →
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
from pylibsrtp._binding import ffi, lib

from media_node import aiortc_glue
from media_node.aiortc_glue import OutboundLeg


async def transmit(self: OutboundLeg, data: bytes) -> bool:
    """``OutboundLeg.transmit`` without aiortc's coroutine chain: the leg's ``prepare`` and
    ``write`` are the node's own, unchanged."""
    dtls = self.dtls_transport
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
    aiortc_glue.OutboundLeg.transmit = transmit  # type: ignore[method-assign]


if __name__ == "__main__":
    install()
    from media_node.__main__ import main

    sys.exit(main())
