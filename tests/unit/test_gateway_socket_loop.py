"""The gateway's socket loop never waits on the log (issue 13, item 5).

- a ``ping`` is answered while the socket's earlier request still waits for its ack;
- a request the broker refuses (``KafkaTimeoutError``) gets ``unavailable`` with its
  ``request_id``, the socket stays usable (no 1011);
- requests are handled in order, one at a time;
- ``SessionLog`` writes opens, one ping per live session per sweep and closes, in order,
  retries a refused open, and never blocks the caller.
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from aiokafka.errors import KafkaTimeoutError

from api.rtc import INBOX_LIMIT, Connection
from api.sessions import SessionLog
from api.settings import ApiSettings
from api.tokens import Claims
from producers.envelope import Event
from producers.fields import Grant
from producers.sessions import SessionClosed, SessionOpened, SessionPinged
from tests.unit.test_quality_report import FakeSocket


@dataclass
class SlowServices:
    """``publish`` waits for ``release`` (an ack that takes long), or raises ``fail``."""

    settings: Any = field(default_factory=lambda: ApiSettings(gateway_id="gw1"))
    written: list[tuple[str, Event]] = field(default_factory=list)
    release: asyncio.Event = field(default_factory=asyncio.Event)
    fail: Exception | None = None

    async def publish(self, topic: str, event: Event) -> None:
        await self.release.wait()
        if self.fail is not None:
            raise self.fail
        self.written.append((topic, event))


def connection(svc: SlowServices) -> tuple[Connection, FakeSocket]:
    ws = FakeSocket()
    claims = Claims(
        identity="ana",
        name="Ana",
        room=None,
        grants=frozenset({Grant.JOIN, Grant.PUBLISH}),
        expires_at=datetime(2030, 1, 1, tzinfo=UTC),
        token_id="t1",
    )
    return Connection(ws, svc, claims), ws  # type: ignore[arg-type]


async def test_ping_is_answered_while_a_join_waits_for_its_ack() -> None:
    svc = SlowServices()
    conn, ws = connection(svc)
    await conn.receive(json.dumps({"type": "join", "room": "r1", "request_id": "j1"}))
    await conn.receive(json.dumps({"type": "ping", "request_id": "p1"}))
    assert ws.sent == [{"type": "pong", "request_id": "p1"}]
    assert svc.written == []  # the join is still waiting for the broker
    svc.release.set()
    await conn.drain()
    [(topic, join)] = svc.written
    assert topic == "rtc.intents" and join.type == "JoinRequested" and join.correlation_id == "j1"


async def test_a_refused_intent_is_unavailable_and_the_socket_goes_on() -> None:
    svc = SlowServices(fail=KafkaTimeoutError())
    svc.release.set()
    conn, ws = connection(svc)
    await conn.receive(json.dumps({"type": "join", "room": "r1", "request_id": "j1"}))
    await conn.drain()
    assert ws.sent[-1]["type"] == "error"
    assert (ws.sent[-1]["code"], ws.sent[-1]["request_id"]) == ("unavailable", "j1")
    assert svc.written == []
    # not left half-joined: the same socket may join again once the broker is back
    svc.fail = None
    await conn.receive(json.dumps({"type": "join", "room": "r1", "request_id": "j2"}))
    await conn.drain()
    assert [e.correlation_id for _, e in svc.written] == ["j2"]


async def test_requests_keep_their_order_and_the_inbox_is_bounded() -> None:
    svc = SlowServices()
    conn, ws = connection(svc)
    conn.peer_id, conn.room = "P1", "r1"
    for n in range(INBOX_LIMIT + 2):
        await conn.receive(json.dumps({"type": "chat", "text": f"m{n}", "request_id": f"c{n}"}))
        await asyncio.sleep(0)  # the worker starts on the first and takes it
    refused = [m for m in ws.sent if m.get("code") == "unavailable"]
    # the first is taken by the worker at once; INBOX_LIMIT more wait; the last is refused
    assert [m["request_id"] for m in refused] == [f"c{INBOX_LIMIT + 1}"]
    svc.release.set()
    await conn.drain()
    assert [e.correlation_id for _, e in svc.written] == [f"c{n}" for n in range(INBOX_LIMIT + 1)]


class FakeProducer:
    """``send_soon`` queues and returns a future the test resolves."""

    def __init__(self) -> None:
        self.sent: list[tuple[Event, asyncio.Future[Any]]] = []

    async def send_soon(self, topic: str, event: Event) -> asyncio.Future[Any]:
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self.sent.append((event, future))
        return future

    async def flush(self) -> None:
        return None


async def test_session_log_opens_pings_every_live_session_and_closes() -> None:
    producer = FakeProducer()
    log = SessionLog(producer, "session.events", "gw1", ping_s=3600)  # type: ignore[arg-type]
    log.opened("ana", "S1", "Ana")
    log.opened("bob", "S2", "Bob")
    log.opened("not a user id!", "S3", "x")  # no presence for it: nothing written
    assert await log.flush() == 2
    assert await log.ping_all() == 2
    log.closed("S1", 1000)
    log.closed("S3", 1000)
    assert await log.flush() == 1
    kinds = [(type(e).__name__, e.session_id) for e, _ in producer.sent]  # type: ignore[attr-defined]
    assert kinds == [
        ("SessionOpened", "S1"),
        ("SessionOpened", "S2"),
        ("SessionPinged", "S1"),
        ("SessionPinged", "S2"),
        ("SessionClosed", "S1"),
    ]
    closed = producer.sent[-1][0]
    assert isinstance(closed, SessionClosed) and closed.reason == "closed"
    assert len(log) == 1


async def test_session_log_retries_a_refused_open_not_a_ping() -> None:
    producer = FakeProducer()
    log = SessionLog(producer, "session.events", "gw1", ping_s=3600, retries=2)  # type: ignore[arg-type]
    log.opened("ana", "S1", "Ana")
    await log.flush()
    await log.ping_all()
    (opened, f1), (pinged, f2) = producer.sent
    assert isinstance(opened, SessionOpened) and isinstance(pinged, SessionPinged)
    f1.set_exception(KafkaTimeoutError())
    f2.set_exception(KafkaTimeoutError())
    await asyncio.sleep(0)
    assert await log.flush() == 1  # the open again, not the ping
    again, f3 = producer.sent[-1]
    assert again is opened
    f3.set_exception(KafkaTimeoutError())
    await asyncio.sleep(0)
    assert await log.flush() == 0  # two attempts were allowed
    assert log.failed == 3


async def test_session_log_timer_sweeps_without_callers_waiting() -> None:
    producer = FakeProducer()
    log = SessionLog(producer, "session.events", "gw1", ping_s=0.05)  # type: ignore[arg-type]
    await log.start()
    try:
        log.opened("ana", "S1", "Ana")
        await asyncio.sleep(0.3)
        pings = [e for e, _ in producer.sent if isinstance(e, SessionPinged)]
        assert isinstance(producer.sent[0][0], SessionOpened)
        assert 3 <= len(pings) <= 7 and log.sweeps == len(pings)
    finally:
        await log.stop()
