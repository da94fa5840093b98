"""``GET /healthz`` of the edge agent: 200 with its state while registered, else 503."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from typing import Any


async def serve(host: str, port: int, state: Callable[[], dict[str, Any]]) -> asyncio.Server:
    async def on_client(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            request = await asyncio.wait_for(reader.readline(), 5)
            while (await asyncio.wait_for(reader.readline(), 5)).strip():
                pass
            path = request.split()[1].decode() if len(request.split()) > 1 else "/"
            body = state()
            status = "200 OK" if path == "/healthz" and body.get("registered") else "503 Service Unavailable"
            if path != "/healthz":
                status, body = "404 Not Found", {"error": "not_found"}
            data = json.dumps(body).encode()
            writer.write(
                f"HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {len(data)}\r\n"
                "Connection: close\r\n\r\n".encode()
                + data
            )
            await writer.drain()
        except (TimeoutError, ConnectionError):
            pass
        finally:
            writer.close()

    return await asyncio.start_server(on_client, host, port)
