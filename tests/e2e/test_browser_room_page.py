"""The room page's smaller points (issue 16 item 5), in real Chromium: a room link opened
signed out comes back to that room after sign-in; the device buttons say their state (and
own tile, the others' tiles and the participant list agree); the participant list names
everyone, a broadcast's viewers as watching, and they get no blank tiles."""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any

import pytest

from producers.kafka import EventProducer
from producers.topics import Topics
from tests.e2e.browser import ARTIFACTS, User, chromium, open_user, start_web_stack
from tests.harness import Infra, Service, unique, wait_for

ANN, BEN = 81, 82

PAGE_JS = """() => ({
    tiles: [...document.querySelectorAll('.tile')].map((t) => ({ peerId: t.dataset.peerId,
        local: t.classList.contains('local'), kind: t.dataset.kind, badges: t.querySelector('.badges').textContent })),
    people: [...document.querySelectorAll('#people-list li')].map((li) => [li.querySelector('.who').textContent,
        li.querySelector('.muted').textContent]),
    count: document.getElementById('people-count').textContent,
    mic: [document.getElementById('mic').getAttribute('aria-pressed'), document.getElementById('mic').textContent] })"""


async def page(user: User) -> dict[str, Any]:
    result: dict[str, Any] = await user.page.evaluate(PAGE_JS)
    return result


@contextlib.asynccontextmanager
async def two(pw: Any) -> Any:
    users = [await open_user(pw, "Ann", ANN), await open_user(pw, "Ben", BEN)]
    try:
        yield users
    except BaseException:
        ARTIFACTS.mkdir(exist_ok=True)
        for user in users:
            with contextlib.suppress(Exception):
                await user.page.screenshot(path=str(ARTIFACTS / f"failed-room-page-{user.name}.png"))
            with contextlib.suppress(Exception):
                print(f"--- {user.name} ---\n{user.page.url}\n{await page(user)}")
            print("\n".join(user.console[-20:]))
        raise
    finally:
        for user in users:
            with contextlib.suppress(Exception):
                await user.browser.close()


@pytest.mark.timeout(300)
async def test_a_signed_out_link_returns_to_its_room_and_mute_state_is_shown_everywhere(
    infra: Infra, topics: Topics, prefix: str, producer: EventProducer, services: list[Service], tmp_path: Path
) -> None:
    _, base = await start_web_stack(infra, topics, prefix, producer, services, tmp_path)
    room_id = unique("page-")
    async with chromium() as pw, two(pw) as (ann, ben):
        await ann.sign_in(base)
        await ann.create_room(room_id)
        ann_id = await ann.wait_published()

        # Ben opens the link signed out: sign-in, then the room (not the lobby)
        await ben.page.goto(f"{base}/web/room.html?room={room_id}")
        await ben.page.wait_for_url("**/web/index.html?*")
        await ben.page.fill("input[name=name]", "Ben")
        await ben.page.click("button[type=submit]")
        await ben.page.wait_for_url(f"**/web/room.html?room={room_id}", timeout=15_000)
        ben_id = await ben.wait_published()

        shown = await page(ann)
        assert shown["mic"] == ["true", "Microphone on"], shown
        await ann.page.click("#mic")
        shown = await page(ann)
        assert shown["mic"] == ["false", "Microphone off"], shown
        own = [t for t in shown["tiles"] if t["local"]]
        assert [t["badges"] for t in own] == ["mic off"], shown

        async def ben_sees_it() -> dict[str, Any] | None:
            seen = await page(ben)
            tiles = [t["badges"] for t in seen["tiles"] if t["peerId"] == ann_id]
            rows = dict(seen["people"])
            ok = tiles == ["mic off"] and rows.get("Ann") == "mic off · camera on" and seen["count"] == "People (2)"
            return seen if ok else None

        seen = await wait_for(ben_sees_it, 20, "Ben's page showing Ann's microphone off", interval=0.5)
        assert dict(seen["people"]).get("Ben (you)") == "mic on · camera on", seen
        assert [t["peerId"] for t in seen["tiles"] if not t["local"]] == [ann_id], seen
        assert ben_id in [t["peerId"] for t in (await page(ann))["tiles"]]


@pytest.mark.timeout(300)
async def test_broadcast_viewers_are_listed_as_watching_and_get_no_tile(
    infra: Infra, topics: Topics, prefix: str, producer: EventProducer, services: list[Service], tmp_path: Path
) -> None:
    _, base = await start_web_stack(infra, topics, prefix, producer, services, tmp_path)
    room_id = unique("cast-")
    async with chromium() as pw, two(pw) as (ann, ben):
        await ann.sign_in(base)
        await ann.create_room(room_id, "broadcast")
        ann_id = await ann.wait_published()
        await ben.sign_in(base)
        await ben.page.goto(f"{base}/web/room.html?room={room_id}&view=1")

        async def ben_watching() -> bool:
            reads = [t["read"] for t in await ben.tiles() if t["peerId"] == ann_id]
            return any(r is not None and r["code"] == ANN for r in reads)

        await wait_for(ben_watching, 60, "Ben watching Ann's broadcast", interval=1)

        async def ann_lists_ben() -> dict[str, Any] | None:
            shown = await page(ann)
            return shown if dict(shown["people"]).get("Ben") == "watching" else None

        shown = await wait_for(ann_lists_ben, 20, "Ann's participant list naming Ben as watching", interval=0.5)
        assert shown["count"] == "People (2)", shown
        assert [t for t in shown["tiles"] if not t["local"]] == [], shown  # no blank tile for a viewer


@pytest.mark.timeout(200)
async def test_a_mistyped_room_link_says_so_and_creates_nothing(
    infra: Infra, topics: Topics, prefix: str, producer: EventProducer, services: list[Service], tmp_path: Path
) -> None:
    _, base = await start_web_stack(infra, topics, prefix, producer, services, tmp_path)
    typo = unique("no-such-room-")
    async with chromium() as pw, two(pw) as (ann, _):
        await ann.sign_in(base)
        await ann.page.goto(f"{base}/web/room.html?room={typo}")

        async def told() -> dict[str, Any] | None:
            shown: dict[str, Any] = await ann.page.evaluate("""() => ({
                banner: document.getElementById('banner').hidden ? null : document.getElementById('banner').textContent,
                badge: document.getElementById('state').textContent, state: window.roomlogPage.room.state })""")
            return shown if shown["banner"] else None

        shown = await wait_for(told, 20, "the page saying the room does not exist", interval=0.5)
        assert shown == {
            "banner": f"There is no room named “{typo}”. Check the link, or create the room in the lobby.",
            "badge": "No such room",
            "state": "idle",
        }, shown
        assert not await ann.page.locator("#leave").is_disabled()
        status = await ann.page.evaluate(
            """async (room) => {
            const { token } = JSON.parse(sessionStorage.getItem('roomlog.session'));
            return (await fetch(`/v1/rooms/${room}`, { headers: { Authorization: `Bearer ${token}` } })).status; }""",
            typo,
        )
        assert status == 404, status  # nothing was created
