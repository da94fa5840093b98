"""The browser SDK's pure modules run in real Chromium: reconnection backoff (1 s, x2,
10 s cap, +-10 % jitter, attempts until the 60 s budget is spent), the call state machine's transition table and
the network-quality mapping. No platform needed: web/ is served by a static server."""

from __future__ import annotations

import json
import threading
from collections.abc import AsyncIterator, Iterator
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from playwright.async_api import Page

from tests.e2e.browser import CHROMIUM, chromium
from tests.harness import REPO


@pytest.fixture(scope="module")
def static_base() -> Iterator[str]:
    class Quiet(SimpleHTTPRequestHandler):
        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), partial(Quiet, directory=str(REPO)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


@pytest.fixture
async def page(static_base: str) -> AsyncIterator[Page]:
    async with chromium() as pw:
        browser = await pw.chromium.launch(executable_path=str(CHROMIUM), args=["--no-sandbox"])
        p = await browser.new_page()
        await p.goto(f"{static_base}/web/index.html")
        yield p
        await browser.close()


async def run(page: Page, body: str) -> Any:
    """Evaluate ``body`` (an async function body) with the SDK imported as ``sdk``."""
    return await page.evaluate(f"async () => {{ const sdk = await import('/web/sdk/index.js'); {body} }}")


async def test_backoff_doubles_from_one_second_caps_at_ten_with_ten_percent_jitter(page: Page) -> None:
    middle = await run(page, "return [0,1,2,3,4,5,6,9].map((a) => sdk.backoffDelay(a, 0.5));")
    assert middle == [1000, 2000, 4000, 8000, 10000, 10000, 10000, 10000]
    low = await run(page, "return [0,3,5].map((a) => sdk.backoffDelay(a, 0));")
    high = await run(page, "return [0,3,5].map((a) => sdk.backoffDelay(a, 0.999999));")
    assert low == [900, 7200, 9000]
    assert [round(h) for h in high] == [1100, 8800, 10000]  # never above the cap


async def test_backoff_gives_up_when_the_budget_is_spent(page: Page) -> None:
    result = await run(
        page,
        """
        const b = new sdk.Backoff({}, () => 0.5);
        let now = 0; const delays = [];
        for (;;) { const d = b.next(now); if (d === null) break; delays.push(d); now += d + 100; }
        const custom = new sdk.Backoff({ budgetMs: 5000 }, () => 0.5);
        const short = []; let t = 0;
        for (;;) { const d = custom.next(t); if (d === null) break; short.push(d); t += d; }
        return { delays, elapsed: b.elapsed(now), short };
    """,
    )
    # attempts go on until 60 s have passed: the last delay is cut to what is left of the budget
    assert result["delays"] == [1000, 2000, 4000, 8000, 10000, 10000, 10000, 10000, 4200], result
    assert result["elapsed"] == 60000 + 100, result
    assert result["short"] == [1000, 2000, 2000], result


async def test_call_state_machine_follows_its_table(page: Page) -> None:
    result = await run(
        page,
        """
        const walk = (events) => { const c = new sdk.CallState(); return events.map((e) => c.send(e)); };
        let invalid = null;
        try { new sdk.CallState().send('connected'); }
        catch (e) { invalid = [e.name, e.state, e.event, e instanceof sdk.InvalidTransition]; }
        return {
            room: walk(['join', 'connected', 'lost', 'lost', 'connected', 'hangup', 'ended']),
            caller: walk(['dial', 'accepted', 'connected', 'hangup', 'ended']),
            callee: walk(['incoming', 'reject', 'ended']),
            failed: walk(['join', 'connected', 'lost', 'fail', 'reset']),
            invalid,
        };
    """,
    )
    assert result["room"] == ["connecting", "connected", "reconnecting", "reconnecting", "connected", "ending", "idle"]
    assert result["caller"] == ["calling", "connecting", "connected", "ending", "idle"]
    assert result["callee"] == ["ringing", "ending", "idle"]
    assert result["failed"] == ["connecting", "connected", "reconnecting", "failed", "idle"]
    assert result["invalid"][1:] == ["idle", "connected", True]


async def test_quality_levels_follow_the_documented_bands(page: Page) -> None:
    cases = [
        ({"lossPct": 0, "rttMs": 20}, 1),
        ({"lossPct": 0.99, "rttMs": 99}, 1),
        ({"lossPct": 1, "rttMs": 20}, 2),
        ({"lossPct": 0, "rttMs": 250}, 2),
        ({"lossPct": 5, "rttMs": 20}, 3),
        ({"lossPct": 0, "rttMs": 450}, 3),
        ({"lossPct": 12, "rttMs": 20}, 4),
        ({"lossPct": 0, "rttMs": 999}, 4),
        ({"lossPct": 20, "rttMs": 20}, 5),
        ({"lossPct": 0, "rttMs": 1500}, 5),
        ({"lossPct": 12, "rttMs": 450}, 4),  # the worse band wins
        ({"lossPct": 0, "rttMs": None}, 1),  # no RTT measured yet
        ({"lossPct": 0, "rttMs": 20, "silentMs": 4999}, 1),
        ({"lossPct": 0, "rttMs": 20, "silentMs": 5000}, 6),  # Down after 5 s without packets
    ]
    levels = await page.evaluate(
        """async (cases) => {
        const sdk = await import('/web/sdk/index.js');
        return cases.map((c) => sdk.qualityLevel(c));
    }""",
        [c for c, _ in cases],
    )
    assert levels == [level for _, level in cases]


async def test_the_browser_and_python_mappings_agree(page: Page) -> None:
    """One mapping in two SDKs: client/quality.py and web/sdk/quality.js give the same level for
    every combination of loss, RTT and silence around the band edges, and combine a participant's
    legs with streams' pushed level the same way."""
    from client.quality import participant_level, quality_level

    losses = [0, 0.5, 0.99, 1, 4.99, 5, 9.99, 10, 15, 19.99, 20, 100]
    rtts: list[float | None] = [None, 0, 99.9, 100, 299, 300, 499, 500, 999, 1000, 5000]
    silences = [0, 4.999, 5, 60]
    cases = [(loss, rtt, silent) for loss in losses for rtt in rtts for silent in silences]
    levels = await page.evaluate(
        """async (cases) => {
        const sdk = await import('/web/sdk/index.js');
        return cases.map(([lossPct, rttMs, silentS]) => sdk.qualityLevel({ lossPct, rttMs, silentMs: silentS * 1000 }));
    }""",
        cases,
    )
    assert levels == [quality_level(loss, rtt, silent) for loss, rtt, silent in cases]

    participants: list[tuple[list[tuple[float, float]], float | None, int | None]] = [
        ([], None, None),
        ([], 20, 4),
        ([(0, 0), (12, 0)], 20, None),
        ([(0, 9), (0, 0)], 20, None),
        ([(0, 9), (0, 5)], 20, None),
        ([(0, 9), (0, 5)], 20, 3),
        ([(3, 0)], 350, 2),
        ([(25, 0)], 20, 1),
    ]
    combined = await page.evaluate(
        """async (cases) => {
        const sdk = await import('/web/sdk/index.js');
        return cases.map(([legs, rttMs, pushed]) => sdk.participantLevel(
            legs.map(([lossPct, silentS]) => ({ lossPct, silentMs: silentS * 1000 })), rttMs, pushed));
    }""",
        participants,
    )
    assert combined == [participant_level(legs, rtt, pushed) for legs, rtt, pushed in participants]


async def test_the_browser_report_is_what_the_gateway_accepts(page: Page) -> None:
    """measure() over two snapshots of made-up stats, then qualityReport(): window loss, bitrate,
    silence and the pushed level, and a message the gateway's validation accepts."""
    from api.signaling import QualityReport, parse_message

    result = await page.evaluate("""async () => {
        const sdk = await import('/web/sdk/index.js');
        const meter = new sdk.LinkMeter();
        const inbound = (video, audio) => [
            { mid: '0', kind: 'video', packetsReceived: video[0], packetsLost: video[1], bytesReceived: video[2],
              jitterMs: 4, framesDecoded: video[3] },
            { mid: '1', kind: 'audio', packetsReceived: audio, packetsLost: 0, bytesReceived: audio * 100,
              jitterMs: 2, framesDecoded: 0 }];
        const pub = (sent, lost, heard) => ({ outbound: [{ mid: '0' }], rtpBytesSent: sent, remoteSent: sent / 1000,
            remoteLost: lost, remoteJitterMs: 3, rttMs: 40, bytesReceived: heard });
        const sources = { '0': { peer_id: 'Pa', source_id: 'cam-a' }, '1': { peer_id: 'Pa', source_id: 'mic-a' } };
        const context = { sourceOf: (mid) => sources[mid], peers: new Map([['Pa', { peer_id: 'Pa' }]]),
                          pushed: new Map() };
        sdk.measure(meter, pub(100000, 0, 10), { inbound: inbound([100, 0, 50000, 30], 50), rttMs: 30 }, context, 0);
        // 2 s: video 170 received + 30 lost (15 %), 250 kB (1000 kbit/s); audio still flowing; uplink 10 % loss
        const second = sdk.measure(meter, pub(300000, 20, 20),
            { inbound: inbound([270, 30, 300000, 60], 150), rttMs: 30 }, context, 2000);
        context.pushed.set('Pa', new Map([['cam-a', { layer: 'low', level: 5 }]]));
        // 7 s later nothing more arrived on either leg: down
        const third = sdk.measure(meter, pub(300000, 20, 20),
            { inbound: inbound([270, 30, 300000, 60], 150), rttMs: 30 }, context, 9000);
        const pa = (m) => ({ ...m.downlink.get('Pa') });
        return { second: pa(second), third: pa(third), up: second.uplink, upThird: third.uplink,
                 report: sdk.qualityReport(second) };
    }""")
    second, third = result["second"], result["third"]
    assert second["lossPct"] == 15 and second["ownLevel"] == 4 and second["level"] == 4
    assert second["bitrateKbps"] == 1000 + 40  # video 250 kB + audio 10 kB in 2 s
    assert (third["ownLevel"], third["pushedLevel"], third["level"], third["layers"]) == (6, 5, 6, {"cam-a": "low"})
    assert (result["up"]["lossPct"], result["up"]["level"], result["up"]["bitrateKbps"]) == (10, 4, 800)
    assert result["upThird"]["level"] == 6  # the node's RTCP stopped for 7 s
    report = parse_message(json.dumps({**result["report"], "request_id": "quality-1"}))
    assert isinstance(report, QualityReport)
    assert report.uplink.level == 4 and report.uplink.loss_pct == 10 and report.uplink.rtt_ms == 40
    video = next(leg for leg in report.downlink if leg.source_id == "cam-a")
    assert (video.peer_id, video.kind, video.loss_pct, video.packets, video.frames_decoded, video.jitter_ms) == (
        "Pa",
        "video",
        15,
        170,
        60,
        4,
    )


async def test_repaired_packets_count_as_lost_by_the_network(page: Page) -> None:
    """Chromium counts a retransmitted packet as received and no longer lost: the leg's loss adds
    the repaired ones back, (lost + repaired) / expected."""
    loss = await page.evaluate("""async () => {
        const sdk = await import('/web/sdk/index.js');
        const meter = new sdk.LinkMeter();
        const stat = (received, lost, retransmitted) => ({ packetsReceived: received, packetsLost: lost,
            retransmitted, bytesReceived: 0, jitterMs: 0, framesDecoded: 0 });
        meter.leg('Pa/cam', stat(1000, 10, 50), 20, 0);
        // 200 expected: 170 originals arrived, 30 lost of which 27 were repaired -> 197 received, 3 lost
        return meter.leg('Pa/cam', stat(1197, 13, 77), 20, 1000).lossPct;
    }""")
    assert loss == 15
