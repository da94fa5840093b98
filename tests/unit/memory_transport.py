"""Real aiortc stacks connected through asyncio queues instead of sockets.

aiortc's own tests (``tests/utils.py``: ``dummy_transport_pair(loss=...)``) connect two
stacks through in-memory queues with an optional loss pattern. This does the same one
layer lower, for whole ``RTCPeerConnection``s: aioice's ``Connection`` (the only part of
aiortc that opens sockets) is replaced by ``MemoryConnection``, so DTLS, SRTP, RTP/RTCP,
the node's taps and legs all run for real, and nothing touches the network.

Two connections find each other by ICE username fragment: ``connect()`` pairs the local
connection with the one whose ``local_username`` is this one's ``remote_username`` (both
come from the SDP the test exchanges). ``loss`` is a pattern applied to datagrams this
side sends: a callable given the datagram's index on that link (from 0) that returns True
to drop it. DTLS handshake datagrams are never dropped, so a lossy link still connects.

Use the ``memory_network`` context manager (or the pytest fixture of the same name)::

    with memory_network() as net:
        net.loss_from["publisher-ufrag"] = every_nth(10)
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
from collections.abc import Callable, Iterator
from typing import Any

import aiortc.rtcicetransport
from aioice import Candidate
from aioice.ice import ConnectionClosed

Loss = Callable[[int], bool]

_ufrags = itertools.count(1)


def every_nth(n: int) -> Loss:
    """A loss pattern: drop every ``n``-th datagram (the n-th, 2n-th, ...)."""
    return lambda index: (index + 1) % n == 0


def is_dtls(data: bytes) -> bool:
    """RFC 7983: DTLS records start with a byte in 20..63 (RTP/RTCP in 128..191)."""
    return bool(data) and 20 <= data[0] <= 63


class MemoryNetwork:
    """Every ``MemoryConnection`` made while it is installed, by local username fragment."""

    def __init__(self) -> None:
        self.connections: dict[str, MemoryConnection] = {}
        #: Loss patterns by the *sending* side's username fragment (see ``every_nth``).
        self.loss: Loss | None = None
        self.loss_from: dict[str, Loss] = {}
        self.dropped = 0
        self.delivered = 0

    def connection(self, **kwargs: Any) -> MemoryConnection:
        conn = MemoryConnection(self, **kwargs)
        self.connections[conn.local_username] = conn
        return conn


class MemoryConnection:
    """The subset of ``aioice.Connection`` that aiortc's ICE gatherer and transport use."""

    def __init__(
        self,
        network: MemoryNetwork,
        ice_controlling: bool = False,
        local_username: str | None = None,
        local_password: str | None = None,
        **_: Any,
    ) -> None:
        self.network = network
        self.ice_controlling = ice_controlling
        self.local_username = local_username or f"mem{next(_ufrags):05d}"
        self.local_password = local_password or "m" * 22
        self.remote_username: str | None = None
        self.remote_password: str | None = None
        self.remote_is_lite = False
        self.remote_candidates: list[Candidate] = []
        # a placeholder host candidate, so the SDP has one; nothing is ever sent to it
        self.local_candidates: list[Candidate] = []
        self.peer: MemoryConnection | None = None
        self._inbox: asyncio.Queue[bytes | None] = asyncio.Queue()
        self._events: asyncio.Queue[object] = asyncio.Queue()
        self._sent = 0
        self._closed = False

    async def gather_candidates(self) -> None:
        self.local_candidates = [
            Candidate(foundation="1", component=1, transport="udp", priority=1, host="192.0.2.1", port=9, type="host")
        ]

    async def add_remote_candidate(self, candidate: Candidate | None) -> None:
        if candidate is not None:
            self.remote_candidates.append(candidate)

    async def connect(self) -> None:
        if self.remote_username is None:
            raise ConnectionError("no remote parameters")
        for _ in range(500):  # the other side's description may be applied a moment later
            peer = self.network.connections.get(self.remote_username)
            if peer is not None:
                self.peer = peer
                return
            await asyncio.sleep(0.01)
        raise ConnectionError(f"no in-memory connection {self.remote_username}")

    async def send(self, data: bytes) -> None:
        peer = self.peer
        if peer is None or self._closed:
            raise ConnectionError("not connected")
        index, self._sent = self._sent, self._sent + 1
        loss = self.network.loss_from.get(self.local_username, self.network.loss)
        if loss is not None and not is_dtls(data) and loss(index):
            self.network.dropped += 1
            return
        self.network.delivered += 1
        peer._inbox.put_nowait(bytes(data))

    async def recv(self) -> bytes:
        if self._closed:
            raise ConnectionError("closed")
        data = await self._inbox.get()
        if data is None:
            raise ConnectionError("closed")
        return data

    async def get_event(self) -> object:
        return await self._events.get()

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._inbox.put_nowait(None)
        self._events.put_nowait(ConnectionClosed())
        self.network.connections.pop(self.local_username, None)


@contextlib.contextmanager
def memory_network() -> Iterator[MemoryNetwork]:
    """Install in-memory ICE for every ``RTCPeerConnection`` created inside the block."""
    network = MemoryNetwork()
    original = vars(aiortc.rtcicetransport)["Connection"]
    setattr(aiortc.rtcicetransport, "Connection", network.connection)  # noqa: B010 - aiortc does not export it
    try:
        yield network
    finally:
        setattr(aiortc.rtcicetransport, "Connection", original)  # noqa: B010
