"""The gateway's ``quality-report`` validation (docs/protocol.md): finite, non-negative,
bounded numbers, at most 64 downlink legs, one report per 2 s per connection, joined
peers only; a refused report writes nothing."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import pytest
from starlette.websockets import WebSocketState

from api.rtc import Connection
from api.signaling import MAX_DOWNLINK, QualityReport, SignalingError, parse_message
from api.tokens import Claims
from producers.envelope import Event
from producers.fields import Grant
from producers.media import ClientLeg, QualitySample

LEG = {
    "peer_id": "Pa",
    "source_id": "cam-a",
    "kind": "video",
    "loss_pct": 2.5,
    "jitter_ms": 4.0,
    "bitrate_kbps": 310.5,
    "packets": 120,
    "frames_decoded": 30,
    "silent_s": 0.0,
}
UPLINK = {"loss_pct": 0.5, "rtt_ms": 12.0, "jitter_ms": 1.5, "bitrate_kbps": 820.0, "level": 1}


def report(**fields: Any) -> dict[str, Any]:
    return {"type": "quality-report", "uplink": dict(UPLINK), "downlink": [dict(LEG)], **fields}


def refused(text: str) -> SignalingError:
    with pytest.raises(SignalingError) as exc:
        parse_message(text)
    return exc.value


def test_a_good_report_parses_with_every_field() -> None:
    m = parse_message(json.dumps(report(request_id="q1")))
    assert isinstance(m, QualityReport)
    assert m.uplink.model_dump() == UPLINK
    assert [leg.model_dump() for leg in m.downlink] == [LEG]
    # field for field what the catalog's ClientLeg carries
    assert set(LEG) == set(ClientLeg.model_fields)
    minimal = parse_message('{"type": "quality-report", "uplink": {}}')
    assert isinstance(minimal, QualityReport) and minimal.downlink == [] and minimal.uplink.level is None


@pytest.mark.parametrize("token", ["NaN", "Infinity", "-Infinity"])
def test_non_finite_tokens_are_refused_although_pythons_parser_takes_them(token: str) -> None:
    text = json.dumps(report(request_id="q1")).replace('"rtt_ms": 12.0', f'"rtt_ms": {token}')
    assert token in text
    error = refused(text)
    assert (error.code, error.request_id) == ("invalid_message", None)
    assert token in error.message


def test_a_number_too_big_for_a_float_is_refused() -> None:
    error = refused(json.dumps(report(request_id="q2")).replace('"jitter_ms": 4.0', '"jitter_ms": 1e400'))
    assert (error.code, error.request_id) == ("invalid_message", "q2")
    assert "downlink.0.jitter_ms" in error.message and "finite" in error.message


@pytest.mark.parametrize(
    ("where", "name", "value", "words"),
    [
        ("uplink", "loss_pct", -0.1, "greater than or equal to 0"),
        ("uplink", "loss_pct", 100.5, "less than or equal to 100"),
        ("uplink", "rtt_ms", -5, "greater than or equal to 0"),
        ("uplink", "bitrate_kbps", "800", "valid number"),
        ("uplink", "level", 0, "greater than or equal to 1"),
        ("uplink", "level", 7, "less than or equal to 6"),
        ("uplink", "level", 2.5, "valid integer"),
        ("uplink", "jitter_ms", True, "valid number"),
        ("downlink", "loss_pct", 101, "less than or equal to 100"),
        ("downlink", "packets", -1, "greater than or equal to 0"),
        ("downlink", "frames_decoded", 1.5, "valid integer"),
        ("downlink", "silent_s", -0.5, "greater than or equal to 0"),
        ("downlink", "kind", "screen", "'audio' or 'video'"),
        ("downlink", "peer_id", "not an id!", "pattern"),
        ("downlink", "extra", 1, "Extra inputs"),
    ],
)
def test_bad_numbers_and_fields_are_refused(where: str, name: str, value: Any, words: str) -> None:
    message = report(request_id="q3")
    target = message["uplink"] if where == "uplink" else message["downlink"][0]
    target[name] = value
    error = refused(json.dumps(message))
    assert (error.code, error.request_id) == ("invalid_message", "q3")
    assert name in error.message and words in error.message, error.message


def test_oversized_and_duplicate_downlinks_are_refused() -> None:
    # 10,000 legs are refused on the length, before any leg is validated: each is invalid
    # (not even an object), and the error is about the length, not the first bad leg
    started = time.perf_counter()
    error = refused(json.dumps(report(request_id="big", downlink=[0] * 10_000)))
    assert (error.code, error.request_id) == ("invalid_message", "big")
    assert error.message == f"downlink: at most {MAX_DOWNLINK} sources, not 10000"
    assert time.perf_counter() - started < 0.5
    legs = [{**LEG, "source_id": f"s{i}"} for i in range(MAX_DOWNLINK + 1)]
    assert refused(json.dumps(report(downlink=legs))).message == "downlink: at most 64 sources, not 65"
    assert isinstance(parse_message(json.dumps(report(downlink=legs[:MAX_DOWNLINK]))), QualityReport)
    error = refused(json.dumps(report(downlink=[LEG, LEG])))
    assert error.code == "invalid_message" and "twice" in error.message
    bad: dict[str, Any]
    for bad in ({"uplink": None}, {"uplink": []}, {"downlink": {}}, {"downlink": "x"}):
        assert refused(json.dumps(report(**bad))).code == "invalid_message"


# --- the handler: joined, rate, what is written -------------------------------------


class FakeSocket:
    """The part of starlette's WebSocket a Connection sends on."""

    client_state = WebSocketState.CONNECTED

    def __init__(self) -> None:
        self.sent: list[dict[str, Any]] = []

    async def send_json(self, message: dict[str, Any]) -> None:
        self.sent.append(message)


@dataclass
class FakeServices:
    """Records what the gateway would write to the log."""

    written: list[tuple[str, Event]] = field(default_factory=list)

    async def publish(self, topic: str, event: Event) -> None:
        self.written.append((topic, event))


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


def connection(clock: Clock | None = None) -> tuple[Connection, FakeSocket, FakeServices]:
    ws, svc = FakeSocket(), FakeServices()
    claims = Claims(
        identity="ana",
        name="Ana",
        room="r1",
        grants=frozenset({Grant.JOIN, Grant.PUBLISH}),
        expires_at=datetime(2030, 1, 1, tzinfo=UTC),
        token_id="t1",
    )
    conn = Connection(ws, svc, claims)  # type: ignore[arg-type]
    if clock is not None:
        conn.clock = clock
    return conn, ws, svc


async def test_a_report_before_join_is_refused_not_joined(clock: Clock) -> None:
    conn, ws, svc = connection(clock)
    await conn.handle(json.dumps(report(request_id="early")))
    assert ws.sent == [{"type": "error", "code": "not_joined", "message": "join a room first", "request_id": "early"}]
    assert svc.written == []


async def test_a_good_report_writes_one_client_sample_and_a_second_within_2_s_is_rate_limited(clock: Clock) -> None:
    conn, ws, svc = connection(clock)
    conn.peer_id, conn.room = "Pme", "r1"
    await conn.handle(json.dumps(report(request_id="q1")))
    assert ws.sent == []  # accepted reports are not answered
    [(topic, sample)] = svc.written
    assert topic == "quality.samples" and isinstance(sample, QualitySample)
    assert (sample.room_id, sample.peer_id, sample.source, sample.leg, sample.key) == (
        "r1",
        "Pme",
        "client",
        "client",
        "r1",
    )
    assert (sample.loss_pct, sample.rtt_ms, sample.jitter_ms, sample.bitrate_kbps, sample.level) == (
        0.5,
        12.0,
        1.5,
        820.0,
        1,
    )
    assert sample.downlink == [ClientLeg.model_validate(LEG)]
    assert sample.correlation_id == "q1"

    clock.now += 1.99
    await conn.handle(json.dumps(report(request_id="q2")))
    assert [(m["code"], m["request_id"]) for m in ws.sent] == [("rate_limited", "q2")]
    # a refused report does not move the window: 2 s after the accepted one is fine again
    clock.now += 0.01
    await conn.handle(json.dumps(report(request_id="q3")))
    assert len(svc.written) == 2 and len(ws.sent) == 1


async def test_invalid_reports_write_nothing_and_do_not_use_the_rate(clock: Clock) -> None:
    conn, ws, svc = connection(clock)
    conn.peer_id, conn.room = "Pme", "r1"
    bad = [
        json.dumps(report(request_id="nan")).replace('"rtt_ms": 12.0', '"rtt_ms": NaN'),
        json.dumps(report(request_id="neg", uplink={**UPLINK, "bitrate_kbps": -1})),
        json.dumps(report(request_id="loss", uplink={**UPLINK, "loss_pct": 100.01})),
        json.dumps(report(request_id="big", downlink=[{}] * 10_000)),
    ]
    for text in bad:
        await conn.handle(text)
    assert [m["code"] for m in ws.sent] == ["invalid_message"] * 4
    assert svc.written == []
    await conn.handle(json.dumps(report(request_id="good")))
    assert len(svc.written) == 1 and len(ws.sent) == 4
