"""The browser SDK's pure modules run in real Chromium: reconnection backoff (1 s, x2,
30 s cap, +-10 % jitter, 60 s budget), the call state machine's transition table and
the network-quality mapping. No platform needed: web/ is served by a static server."""

from __future__ import annotations

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


async def test_backoff_doubles_from_one_second_caps_at_thirty_with_ten_percent_jitter(page: Page) -> None:
    middle = await run(page, "return [0,1,2,3,4,5,6,9].map((a) => sdk.backoffDelay(a, 0.5));")
    assert middle == [1000, 2000, 4000, 8000, 16000, 30000, 30000, 30000]
    low = await run(page, "return [0,3,5].map((a) => sdk.backoffDelay(a, 0));")
    high = await run(page, "return [0,3,5].map((a) => sdk.backoffDelay(a, 0.999999));")
    assert low == [900, 7200, 27000]
    assert [round(h) for h in high] == [1100, 8800, 30000]  # never above the cap


async def test_backoff_gives_up_when_the_budget_is_spent(page: Page) -> None:
    result = await run(page, """
        const b = new sdk.Backoff({}, () => 0.5);
        let now = 0; const delays = [];
        for (;;) { const d = b.next(now); if (d === null) break; delays.push(d); now += d + 100; }
        const custom = new sdk.Backoff({ budgetMs: 5000 }, () => 0.5);
        const short = []; let t = 0;
        for (;;) { const d = custom.next(t); if (d === null) break; short.push(d); t += d; }
        return { delays, elapsed: b.elapsed(now), short };
    """)
    assert result["delays"] == [1000, 2000, 4000, 8000, 16000]  # the next 30 s would pass 60 s
    assert result["short"] == [1000, 2000]


async def test_call_state_machine_follows_its_table(page: Page) -> None:
    result = await run(page, """
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
    """)
    assert result["room"] == ["connecting", "connected", "reconnecting", "reconnecting", "connected", "ending", "idle"]
    assert result["caller"] == ["calling", "connecting", "connected", "ending", "idle"]
    assert result["callee"] == ["ringing", "ending", "idle"]
    assert result["failed"] == ["connecting", "connected", "reconnecting", "failed", "idle"]
    assert result["invalid"][1:] == ["idle", "connected", True]


async def test_quality_levels_follow_the_documented_bands(page: Page) -> None:
    cases = [
        ({"lossPct": 0, "rttMs": 20}, 1), ({"lossPct": 0.99, "rttMs": 99}, 1),
        ({"lossPct": 1, "rttMs": 20}, 2), ({"lossPct": 0, "rttMs": 250}, 2),
        ({"lossPct": 5, "rttMs": 20}, 3), ({"lossPct": 0, "rttMs": 450}, 3),
        ({"lossPct": 12, "rttMs": 20}, 4), ({"lossPct": 0, "rttMs": 999}, 4),
        ({"lossPct": 20, "rttMs": 20}, 5), ({"lossPct": 0, "rttMs": 1500}, 5),
        ({"lossPct": 12, "rttMs": 450}, 4),  # the worse band wins
        ({"lossPct": 0, "rttMs": None}, 1),  # no RTT measured yet
        ({"lossPct": 0, "rttMs": 20, "silentMs": 4999}, 1),
        ({"lossPct": 0, "rttMs": 20, "silentMs": 5000}, 6),  # Down after 5 s without packets
    ]
    levels = await page.evaluate("""async (cases) => {
        const sdk = await import('/web/sdk/index.js');
        return cases.map((c) => sdk.qualityLevel(c));
    }""", [c for c, _ in cases])
    assert levels == [level for _, level in cases]
