"""A TCP proxy the test controls: ``block()`` cuts every connection through it (RST to
both sides) and refuses new ones until ``unblock()``, like a network path going away
while both ends stay up."""

from __future__ import annotations

import asyncio
import contextlib

from tests.harness import free_port


class TcpProxy:
    def __init__(self, target_port: int, host: str = "127.0.0.1") -> None:
        self.host = host
        self.target_port = target_port
        self.port = free_port()
        self.server: asyncio.Server | None = None
        self.pipes: set[tuple[asyncio.StreamWriter, asyncio.StreamWriter]] = set()

    async def start(self) -> TcpProxy:
        self.server = await asyncio.start_server(self._client, self.host, self.port, reuse_address=True)
        return self

    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await asyncio.open_connection(self.host, self.target_port)
        except OSError:
            writer.transport.abort()
            return
        pair = (writer, up_writer)
        self.pipes.add(pair)
        try:
            await asyncio.gather(_pump(reader, up_writer), _pump(up_reader, writer))
        finally:
            self.pipes.discard(pair)

    async def block(self) -> None:
        if self.server is not None:
            self.server.close()
            self.server = None
        for a, b in list(self.pipes):
            a.transport.abort()
            b.transport.abort()
        self.pipes.clear()

    async def unblock(self) -> None:
        await self.start()

    async def close(self) -> None:
        await self.block()


async def _pump(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    with contextlib.suppress(ConnectionError, OSError, asyncio.CancelledError):
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    with contextlib.suppress(Exception):
        writer.close()
