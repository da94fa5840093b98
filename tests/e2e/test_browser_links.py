"""Room links a person shares (issue 15), in real Chromium, each person in their own browser
profile: the address the room page shows (and its Copy link button) carries only the room,
so it works in another profile; a link naming a device this browser does not have joins with
the default camera and says so in one line; a browser that refuses the camera and microphone
joins as a viewer with a clear message and a badge that tells the real state."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
from playwright.async_api import Playwright

from producers.kafka import EventProducer
from producers.topics import Topics
from tests.e2e.browser import ARTIFACTS, User, chromium, open_user, start_web_stack
from tests.harness import Infra, Service, unique, wait_for

CAROL, DAVE, EVE = 51, 52, 53


async def sees(user: User, peer_id: str, code: int) -> bool:
    reads = [t["read"] for t in await user.tiles() if not t["local"] and t["peerId"] == peer_id]
    return any(r is not None and r["code"] == code for r in reads)


async def page_status(user: User) -> dict[str, Any]:
    status: dict[str, Any] = await user.page.evaluate("""() => ({
        banner: document.getElementById('banner').hidden ? null : document.getElementById('banner').textContent,
        bannerError: document.getElementById('banner').classList.contains('error'),
        badge: document.getElementById('state').textContent, badgeState: document.getElementById('state').dataset.state,
        errors: window.roomlogPage.errors, notice: window.roomlogPage.notice, role: window.roomlogPage.role,
        devices: window.roomlogPage.devices || null, rejoin: !document.getElementById('rejoin').hidden })""")
    return status


@contextlib.asynccontextmanager
async def browsers(pw: Playwright, *specs: tuple[str, int, dict[str, Any]]) -> AsyncIterator[list[User]]:
    users: list[User] = []
    try:
        for name, code, options in specs:
            users.append(await open_user(pw, name, code, **options))
        yield users
    except BaseException:
        ARTIFACTS.mkdir(exist_ok=True)
        for user in users:
            with contextlib.suppress(Exception):
                await user.page.screenshot(path=str(ARTIFACTS / f"failed-links-{user.name}.png"))
            with contextlib.suppress(Exception):
                print(f"--- {user.name} page ---\n{user.page.url}\n{await page_status(user)}")
            print(f"--- {user.name} console ---\n" + "\n".join(user.console[-30:]))
        raise
    finally:
        for user in users:
            with contextlib.suppress(Exception):
                await user.browser.close()


async def carol_in_a_room(carol: User, base: str) -> tuple[str, str]:
    """Carol creates and joins a room from the lobby; her room id and peer id."""
    room_id = unique("walk-")
    await carol.sign_in(base)
    # as a person would: the lobby has checked and listed the devices before she creates the room
    await carol.page.wait_for_function("document.querySelectorAll('#camera option').length > 0", timeout=20_000)
    await carol.create_room(room_id)
    return room_id, await carol.wait_published()


@pytest.mark.timeout(300)
async def test_the_address_a_room_page_shows_works_in_another_browser_profile(
    infra: Infra, topics: Topics, prefix: str, producer: EventProducer, services: list[Service], tmp_path: Path
) -> None:
    _, base = await start_web_stack(infra, topics, prefix, producer, services, tmp_path)
    async with (
        chromium() as pw,
        browsers(pw, ("Carol", CAROL, {"permissions": ["clipboard-read", "clipboard-write"]}), ("Dave", DAVE, {})) as (
            carol,
            dave,
        ),
    ):
        room_id, carol_id = await carol_in_a_room(carol, base)
        address = carol.page.url
        assert parse_qs(urlsplit(address).query) == {"room": [room_id]}, address
        await carol.page.click("#copy-link")
        copied = await carol.page.evaluate("navigator.clipboard.readText()")
        assert copied == address, (copied, address)

        await dave.sign_in(base)
        await dave.page.goto(address)
        dave_id = await dave.wait_published()
        await wait_for(lambda: sees(dave, carol_id, CAROL), 60, "Dave's page showing Carol's camera", interval=1)
        await wait_for(lambda: sees(carol, dave_id, DAVE), 60, "Carol's page showing Dave's camera", interval=1)
        for user in (carol, dave):
            status = await page_status(user)
            assert status["banner"] is None and status["errors"] == [], (user.name, status)
            assert (status["badge"], status["badgeState"]) == ("Connected", "connected"), (user.name, status)


@pytest.mark.timeout(300)
async def test_a_link_naming_a_missing_camera_joins_with_the_default_one_and_says_so(
    infra: Infra, topics: Topics, prefix: str, producer: EventProducer, services: list[Service], tmp_path: Path
) -> None:
    _, base = await start_web_stack(infra, topics, prefix, producer, services, tmp_path)
    async with chromium() as pw, browsers(pw, ("Carol", CAROL, {}), ("Dave", DAVE, {})) as (carol, dave):
        room_id, carol_id = await carol_in_a_room(carol, base)
        await dave.sign_in(base)
        await dave.page.goto(f"{base}/web/room.html?room={room_id}&camera=no-such-camera-0123&microphone=default")
        dave_id = await dave.wait_published()
        await wait_for(lambda: sees(carol, dave_id, DAVE), 60, "Carol's page showing Dave's default camera", interval=1)
        await wait_for(lambda: sees(dave, carol_id, CAROL), 60, "Dave's page showing Carol's camera", interval=1)
        status = await page_status(dave)
        assert status["devices"] == {"camera": "default", "microphone": "ok"}, status
        assert status["banner"] == "The chosen camera is not available here: using the default camera.", status
        assert not status["bannerError"] and status["errors"] == [], status
        assert (status["badge"], status["badgeState"]) == ("Connected", "connected"), status
        # the address bar now carries the room only: copying it works for anyone
        assert parse_qs(urlsplit(dave.page.url).query) == {"room": [room_id]}, dave.page.url


@pytest.mark.timeout(300)
async def test_a_refused_camera_joins_as_a_viewer_with_a_clear_message(
    infra: Infra, topics: Topics, prefix: str, producer: EventProducer, services: list[Service], tmp_path: Path
) -> None:
    _, base = await start_web_stack(infra, topics, prefix, producer, services, tmp_path)
    refusing = {"fake_ui": False, "extra_args": ("--deny-permission-prompts",)}
    async with chromium() as pw, browsers(pw, ("Carol", CAROL, {}), ("Eve", EVE, refusing)) as (carol, eve):
        room_id, carol_id = await carol_in_a_room(carol, base)
        await eve.sign_in(base)
        await eve.page.goto(f"{base}/web/room.html?room={room_id}")

        async def settled() -> dict[str, Any] | None:
            status = await page_status(eve)
            return status if status["role"] not in ("joining", None) or status["errors"] else None

        status = await wait_for(settled, 40, "Eve's page to finish joining", interval=0.5)
        assert status["role"] == "watching" and status["errors"] == [], status
        assert status["devices"] == {"camera": "refused", "microphone": "refused"}, status
        assert status["banner"] is not None and status["banner"].startswith(
            "Camera and microphone unavailable (access was refused"
        ), status
        assert "watching only" in status["banner"] and not status["bannerError"], status
        assert (status["badge"], status["badgeState"]) == ("Connected · watching", "connected"), status
        await wait_for(lambda: sees(eve, carol_id, CAROL), 60, "Eve's page showing Carol's camera", interval=1)
        controls = await eve.page.evaluate("document.getElementById('controls').className")
        assert "watching" in controls.split(), controls
        assert not await eve.page.locator("#leave").is_disabled()
        assert await eve.page.evaluate("window.roomlogPage.room.peers.size") == 1
