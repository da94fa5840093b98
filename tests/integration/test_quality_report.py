"""``quality-report`` through a real gateway over a real WebSocket into real Kafka: bad
reports (NaN, negative, loss over 100 %, 10,000-element arrays, 20 in one second, before
joining) get their documented codes and write nothing on ``quality.samples``; a good one
lands there as one client ``QualitySample``."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import websockets

from producers.kafka import EventProducer
from producers.media import ClientLeg, QualitySample
from producers.topics import Topics
from tests.harness import Infra, Service, mint_token, read_events, start_media_stack, unique, wait_for

UPLINK = {"loss_pct": 1.5, "rtt_ms": 35.0, "jitter_ms": 2.0, "bitrate_kbps": 640.0, "level": 2}
LEG = {
    "peer_id": "Pother",
    "source_id": "cam-other",
    "kind": "video",
    "loss_pct": 12.5,
    "jitter_ms": 8.0,
    "bitrate_kbps": 290.0,
    "packets": 410,
    "frames_decoded": 58,
    "silent_s": 0.0,
}


def report(request_id: str, **fields: Any) -> dict[str, Any]:
    return {
        "type": "quality-report",
        "request_id": request_id,
        "uplink": dict(UPLINK),
        "downlink": [dict(LEG)],
        **fields,
    }


async def recv_type(ws: Any, kinds: set[str], timeout: float = 15) -> dict[str, Any]:
    """The next message of one of ``kinds`` (others, e.g. presence, are skipped)."""

    async def next_one() -> dict[str, Any]:
        while True:
            message: dict[str, Any] = json.loads(await ws.recv())
            if message["type"] in kinds:
                return message

    return await asyncio.wait_for(next_one(), timeout)


async def client_samples(infra: Infra, topics: Topics, room_id: str) -> list[QualitySample]:
    return [
        e
        for e in await read_events(infra.kafka, topics.name("quality.samples"))
        if isinstance(e, QualitySample) and e.room_id == room_id and e.source == "client"
    ]


async def test_bad_quality_reports_are_refused_and_a_good_one_lands(
    infra: Infra, topics: Topics, prefix: str, producer: EventProducer, services: list[Service], tmp_path: Path
) -> None:
    _, base = await start_media_stack(infra, topics, prefix, producer, services, tmp_path)
    room_id = unique("quality-")
    ws_url = base.replace("http", "ws") + "/v1/rtc"
    token = await mint_token(base, "ana", ["join", "publish", "subscribe"], room_id)
    async with websockets.connect(f"{ws_url}?token={token}") as ws:
        # before joining: not_joined
        await ws.send(json.dumps(report("early")))
        error = await recv_type(ws, {"error"})
        assert (error["code"], error["request_id"]) == ("not_joined", "early")

        await ws.send(json.dumps({"type": "join", "room": room_id, "name": "Ana", "request_id": "j"}))
        joined = await recv_type(ws, {"joined", "error"}, timeout=30)
        assert joined["type"] == "joined", joined
        peer_id = joined["peer_id"]

        # each bad report: invalid_message (the frame that is not JSON has no request id to echo)
        nan = json.dumps(report("nan")).replace('"rtt_ms": 35.0', '"rtt_ms": NaN')
        inf = json.dumps(report("inf")).replace('"bitrate_kbps": 290.0', '"bitrate_kbps": Infinity')
        bad: list[tuple[str, str | None, str]] = [
            (nan, None, "NaN"),
            (inf, None, "Infinity"),
            (json.dumps(report("neg", uplink={**UPLINK, "jitter_ms": -1.0})), "neg", "uplink.jitter_ms"),
            (json.dumps(report("negleg", downlink=[{**LEG, "packets": -5}])), "negleg", "downlink.0.packets"),
            (json.dumps(report("loss", uplink={**UPLINK, "loss_pct": 100.5})), "loss", "uplink.loss_pct"),
            (json.dumps(report("lossleg", downlink=[{**LEG, "loss_pct": 250}])), "lossleg", "downlink.0.loss_pct"),
            (json.dumps(report("huge", downlink=[0] * 10_000)), "huge", "at most 64 sources, not 10000"),
            (json.dumps(report("hugeobj", downlink=[{}] * 10_000)), "hugeobj", "at most 64 sources, not 10000"),
        ]
        for text, request_id, words in bad:
            assert len(text) < 64 * 1024  # refused by the validation, not by the frame limit
            error = await recv_type_after(ws, text)
            assert (error["code"], error["request_id"]) == ("invalid_message", request_id), error
            assert words in error["message"], error

        # a good one: no answer, one sample on the log
        await ws.send(json.dumps(report("good")))
        await wait_for(lambda: client_samples(infra, topics, room_id), 15, "the good report on quality.samples")

        # 20 reports in one second, 2 s after the good one: the first is taken, 19 are rate_limited
        await asyncio.sleep(2.2)
        for i in range(20):
            await ws.send(json.dumps(report(f"burst{i}")))
            await asyncio.sleep(0.05)
        errors = [await recv_type(ws, {"error"}) for _ in range(19)]
        assert [(e["code"], e["request_id"]) for e in errors] == [("rate_limited", f"burst{i}") for i in range(1, 20)]
        await ws.send(json.dumps({"type": "ping", "request_id": "p"}))
        assert (await recv_type(ws, {"pong", "error"}))["type"] == "pong"  # nothing else came back

    async def two() -> list[QualitySample] | None:
        samples = await client_samples(infra, topics, room_id)
        return samples if len(samples) >= 2 else None

    samples = await wait_for(two, 15, "the burst's first report on quality.samples")
    await asyncio.sleep(1)
    samples = await client_samples(infra, topics, room_id)
    # exactly the good report and the burst's first: nothing from any refused one
    assert [s.correlation_id for s in samples] == ["good", "burst0"]
    for sample in samples:
        assert (sample.peer_id, sample.leg, sample.source, sample.key) == (peer_id, "client", "client", room_id)
        assert (sample.loss_pct, sample.rtt_ms, sample.jitter_ms, sample.bitrate_kbps, sample.level) == (
            1.5,
            35.0,
            2.0,
            640.0,
            2,
        )
        assert sample.downlink == [ClientLeg.model_validate(LEG)]


async def recv_type_after(ws: Any, text: str) -> dict[str, Any]:
    await ws.send(text)
    return await recv_type(ws, {"error"})
