"""``python -m edge.rtsp --forbid-codecs`` as a subprocess for the e2e tests (its codec
factories raise, the test process may decode)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import subprocess
import sys
from pathlib import Path
from typing import Any


class Edge:
    """``python -m edge.rtsp --forbid-codecs`` as a subprocess; its JSON lines as events."""

    def __init__(self, args: list[str], log: Path) -> None:
        self.log = log.open("wb")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "edge.rtsp", "--forbid-codecs", *args], stdout=subprocess.PIPE, stderr=self.log
        )
        self.events: list[dict[str, Any]] = []
        self._task = asyncio.create_task(self._read())

    async def _read(self) -> None:
        assert self.proc.stdout is not None
        loop = asyncio.get_running_loop()
        while True:
            line = await loop.run_in_executor(None, self.proc.stdout.readline)
            if not line:
                return
            self.events.append(json.loads(line))

    def of(self, event: str) -> list[dict[str, Any]]:
        return [e for e in self.events if e["event"] == event]

    async def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            await asyncio.get_running_loop().run_in_executor(None, self.proc.wait, 15)
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.wait_for(self._task, 5)
        self.log.close()
