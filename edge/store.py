"""The agent's record of the commands it ran (sqlite, survives a restart).

A gate command is run at most once by its id: ``begin`` records it before the driver is
called, ``finish`` records the outcome after. A command found ``running`` after a restart
was interrupted mid-execution: it is never run again, and is reported failed
(``interrupted``). Outcomes stay until the api accepted the report (``reported``), and
the record of the id stays after that (a redelivery reports the same outcome again).
"""

from __future__ import annotations

import json
import sqlite3
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

SCHEMA = """
CREATE TABLE IF NOT EXISTS commands (
    command_id TEXT PRIMARY KEY,
    kind TEXT NOT NULL,
    status TEXT NOT NULL CHECK (status IN ('running', 'done')),
    ok INTEGER,
    error TEXT,
    result TEXT NOT NULL DEFAULT '{}',
    reported INTEGER NOT NULL DEFAULT 0,
    received_at REAL NOT NULL
)
"""
INTERRUPTED = "interrupted: the agent stopped while executing it; not run again"


@dataclass(frozen=True)
class Outcome:
    command_id: str
    kind: str
    status: str
    ok: bool | None
    error: str | None
    result: dict[str, Any]
    reported: bool


class CommandStore:
    def __init__(self, path: str | Path) -> None:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(str(path), isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.execute(SCHEMA)

    def close(self) -> None:
        self._db.close()

    def get(self, command_id: str) -> Outcome | None:
        row = self._db.execute(
            "SELECT command_id, kind, status, ok, error, result, reported FROM commands WHERE command_id = ?",
            (command_id,),
        ).fetchone()
        return None if row is None else _outcome(row)

    def begin(self, command_id: str, kind: str) -> bool:
        """Record the command as running; False if its id was seen before (do not run it)."""
        cur = self._db.execute(
            "INSERT OR IGNORE INTO commands (command_id, kind, status, received_at) VALUES (?, ?, 'running', ?)",
            (command_id, kind, time.time()),
        )
        return cur.rowcount == 1

    def finish(self, command_id: str, ok: bool, error: str | None, result: dict[str, Any]) -> Outcome:
        self._db.execute(
            "UPDATE commands SET status = 'done', ok = ?, error = ?, result = ? WHERE command_id = ?",
            (int(ok), error, json.dumps(result), command_id),
        )
        outcome = self.get(command_id)
        assert outcome is not None
        return outcome

    def interrupted(self) -> list[Outcome]:
        """Commands left running by a previous process: finished as failed now."""
        rows = self._db.execute("SELECT command_id FROM commands WHERE status = 'running'").fetchall()
        return [self.finish(r[0], False, INTERRUPTED, {}) for r in rows]

    def unreported(self) -> list[Outcome]:
        rows = self._db.execute(
            "SELECT command_id, kind, status, ok, error, result, reported FROM commands "
            "WHERE status = 'done' AND reported = 0 ORDER BY received_at"
        ).fetchall()
        return [_outcome(r) for r in rows]

    def mark_reported(self, command_id: str) -> None:
        self._db.execute("UPDATE commands SET reported = 1 WHERE command_id = ?", (command_id,))


def _outcome(row: tuple[Any, ...]) -> Outcome:
    return Outcome(
        command_id=row[0],
        kind=row[1],
        status=row[2],
        ok=None if row[3] is None else bool(row[3]),
        error=row[4],
        result=json.loads(row[5] or "{}"),
        reported=bool(row[6]),
    )
