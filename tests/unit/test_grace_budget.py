"""Streams' disconnect grace outlasts the browser SDK's reconnection budget (issue 16 item 2):
a page that reconnects within its budget must find its peer still in the room (``resumed``),
not come back as a new participant."""

from __future__ import annotations

import re
from pathlib import Path

from streams.decision import RoomConfig
from streams.settings import StreamsSettings
from streams.users import UserConfig

BACKOFF_JS = Path(__file__).resolve().parents[2] / "web" / "sdk" / "backoff.js"
#: Time for the last attempt's socket and join round trip, and for the gateway to report the loss.
MARGIN_S = 10.0


def sdk_budget_s() -> float:
    match = re.search(r"DEFAULT_BACKOFF = Object\.freeze\(\{[^}]*budgetMs: (\d+)", BACKOFF_JS.read_text())
    assert match is not None, "web/sdk/backoff.js has no DEFAULT_BACKOFF budgetMs"
    return int(match.group(1)) / 1000


def test_the_disconnect_grace_outlasts_the_web_sdk_reconnection_budget() -> None:
    budget = sdk_budget_s()
    assert budget == 60.0
    grace = StreamsSettings().disconnect_grace_s
    assert grace >= budget + MARGIN_S, (grace, budget)
    # the pure decisions' defaults agree with the settings
    assert RoomConfig().disconnect_grace_s == grace
    assert UserConfig().resume_grace_s == grace
