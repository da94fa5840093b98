"""Gate drivers. The shipped one is simulated: opening appends a JSON line to its state
file (flushed and fsynced), so a test can count the openings."""

from __future__ import annotations

import asyncio
import json
import os
import time
from pathlib import Path
from typing import Any, Protocol

from edge.config import GateSection


class GateDriver(Protocol):
    async def open(self, command_id: str) -> dict[str, Any]: ...


class SimulatedGate:
    def __init__(self, gate_id: str, state_file: str | Path, open_s: float = 0.0) -> None:
        self.gate_id = gate_id
        self.path = Path(state_file)
        self.open_s = open_s

    async def open(self, command_id: str) -> dict[str, Any]:
        if self.open_s:
            await asyncio.sleep(self.open_s)
        line = {"gate_id": self.gate_id, "state": "open", "command_id": command_id, "at": time.time()}
        await asyncio.to_thread(self._append, json.dumps(line))
        return {"gate_id": self.gate_id, "state": "open"}

    def _append(self, line: str) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self.path.open("a") as fh:
            fh.write(line + "\n")
            fh.flush()
            os.fsync(fh.fileno())

    def openings(self) -> list[dict[str, Any]]:
        if not self.path.exists():
            return []
        return [json.loads(line) for line in self.path.read_text().splitlines() if line.strip()]


def build(gates: list[GateSection]) -> dict[str, GateDriver]:
    return {g.id: SimulatedGate(g.id, g.state_file, g.open_s) for g in gates}
