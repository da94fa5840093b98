"""Phone-size pages (issue 16 item 3), in real Chromium at 390x844 (a phone's viewport, touch):
the lobby's Join is clickable as a person taps it (Playwright's ``click`` without ``force``
checks the link is visible and nothing covers it), and neither the lobby nor the room page
scrolls sideways."""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any

import pytest

from producers.kafka import EventProducer
from producers.topics import Topics
from tests.e2e.browser import ARTIFACTS, User, chromium, open_user, start_web_stack
from tests.harness import Infra, Service, unique

PHONE = (390, 844)


async def overflow(user: User) -> dict[str, Any]:
    """How much wider than the screen the page is, and the elements sticking out."""
    result: dict[str, Any] = await user.page.evaluate("""() => {
        const width = document.documentElement.clientWidth;
        const out = [...document.querySelectorAll('body *')].filter((e) => {
            const r = e.getBoundingClientRect();
            return r.width > 0 && (r.right > width + 1 || r.left < -1) && getComputedStyle(e).position !== 'fixed';
        }).slice(0, 8).map((e) => `${e.tagName.toLowerCase()}#${e.id}.${e.className}`);
        return { width, scrollWidth: document.documentElement.scrollWidth, bodyScrollWidth: document.body.scrollWidth,
                 out };
    }""")
    return result


async def no_sideways_scroll(user: User, where: str) -> None:
    shown = await overflow(user)
    assert shown["scrollWidth"] <= shown["width"] and shown["bodyScrollWidth"] <= shown["width"], (where, shown)
    await user.page.evaluate("window.scrollTo(200, 0)")
    assert await user.page.evaluate("window.scrollX") == 0, (where, shown)


@pytest.mark.timeout(300)
async def test_phone_size_lobby_join_is_clickable_and_the_room_page_does_not_scroll_sideways(
    infra: Infra, topics: Topics, prefix: str, producer: EventProducer, services: list[Service], tmp_path: Path
) -> None:
    _, base = await start_web_stack(infra, topics, prefix, producer, services, tmp_path)
    room_id = unique("phone-")
    async with chromium() as pw:
        phone = await open_user(pw, "Pat", 61, viewport=PHONE, mobile=True)
        try:
            await phone.sign_in(base)
            await phone.page.wait_for_function("document.querySelectorAll('#camera option').length > 0", timeout=20_000)
            await phone.ensure_room(room_id)  # someone created it: the lobby lists it
            join = phone.page.locator(f"tr[data-room='{room_id}'] a").first
            await join.wait_for(timeout=20_000)
            await no_sideways_scroll(phone, "lobby with a room")
            await join.click(timeout=10_000)  # no force: fails if anything covers it
            await phone.page.wait_for_url(f"**/web/room.html?room={room_id}")
            await phone.wait_published()
            await no_sideways_scroll(phone, "room page")
            for button in ("#mic", "#camera", "#screen", "#leave", "#copy-link"):
                assert await phone.page.locator(button).is_visible(), button
        except BaseException:
            ARTIFACTS.mkdir(exist_ok=True)
            with contextlib.suppress(Exception):
                await phone.page.screenshot(path=str(ARTIFACTS / "failed-phone.png"), full_page=True)
            with contextlib.suppress(Exception):
                print(await overflow(phone))
            print("\n".join(phone.console[-30:]))
            raise
        finally:
            with contextlib.suppress(Exception):
                await phone.browser.close()
