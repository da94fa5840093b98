"""In-room chat between two real Chromium room pages: a message typed in one page shows
up in the other page's chat panel (and its own) with the sender's name, as text, never
as HTML, and is a fact on the log. A screenshot of the panel goes to artifacts/."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from producers.kafka import EventProducer
from producers.rtc import ChatMessagePosted
from producers.topics import Topics
from tests.e2e.browser import ARTIFACTS, CHROMIUM, User, chromium, start_web_stack
from tests.harness import Infra, Service, read_events, unique, wait_for

#: Would run script and add an element if the page ever used it as HTML.
TRICKY = 'hi Ben <img src=x onerror="window.__injected = true"> & <b>bold</b>'


async def chat_panel(user: User) -> list[dict[str, Any]]:
    result: list[dict[str, Any]] = await user.page.evaluate("""() =>
        [...document.querySelectorAll('#chat-log .chat-message')].map((m) => ({
            id: m.dataset.id, peerId: m.dataset.peerId, own: m.classList.contains('own'),
            name: m.querySelector('.chat-name').textContent, text: m.querySelector('.chat-text').textContent }))""")
    return result


async def open_room(user: User, base: str, room_id: str) -> str:
    await user.sign_in(base)
    await user.ensure_room(room_id)
    await user.page.goto(f"{base}/web/room.html?room={room_id}&view=1")  # watching: no camera needed
    await user.page.wait_for_function(
        "window.roomlogPage && window.roomlogPage.room.state === 'connected'", timeout=40_000
    )
    await user.page.wait_for_function("!document.getElementById('chat-text').disabled", timeout=5_000)
    peer_id: str = await user.page.evaluate("window.roomlogPage.room.peerId")
    return peer_id


async def say(user: User, text: str) -> None:
    await user.page.fill("#chat-text", text)
    await user.page.press("#chat-text", "Enter")


async def test_a_message_typed_in_one_page_appears_in_the_other(
    infra: Infra, topics: Topics, prefix: str, producer: EventProducer, services: list[Service], tmp_path: Path
) -> None:
    _, base = await start_web_stack(infra, topics, prefix, producer, services, tmp_path)
    room_id = unique("chat-")
    async with chromium() as pw:
        browser = await pw.chromium.launch(executable_path=str(CHROMIUM), args=["--no-sandbox"])
        try:
            users = []
            for name in ("Ana", "Ben"):  # one Chromium, a context (own sessionStorage) per person
                page = await (await browser.new_context()).new_page()
                user = User(name, 0, browser, page)
                page.on("console", lambda m, u=user: u.console.append(f"{m.type}: {m.text}"))
                page.on("pageerror", lambda e, u=user: u.console.append(f"pageerror: {e}"))
                users.append(user)
            ana, ben = users
            ana_peer = await open_room(ana, base, room_id)
            ben_peer = await open_room(ben, base, room_id)

            await say(ana, f"  {TRICKY}  ")

            async def shows(user: User, count: int) -> list[dict[str, Any]] | None:
                panel = await chat_panel(user)
                return panel if len(panel) >= count else None

            try:
                ben_panel = await wait_for(lambda: shows(ben, 1), 20, "Ben's chat panel to show Ana's message")
            except AssertionError as exc:
                raise AssertionError(f"{exc}; Ana's console {ana.console[-10:]}; Ben's {ben.console[-10:]}") from None
            assert [(m["name"], m["text"], m["peerId"], m["own"]) for m in ben_panel] == [
                ("Ana", TRICKY, ana_peer, False)
            ]
            ana_panel = await wait_for(lambda: shows(ana, 1), 10, "Ana's panel to show her own message")
            assert [(m["id"], m["name"], m["text"], m["own"]) for m in ana_panel] == [
                (ben_panel[0]["id"], "Ana", TRICKY, True)
            ]
            assert await ana.page.input_value("#chat-text") == ""  # sent: the field is cleared

            await say(ben, "hello Ana")
            ana_panel = await wait_for(lambda: shows(ana, 2), 20, "Ana's chat panel to show Ben's reply")
            assert [(m["name"], m["text"]) for m in ana_panel] == [("Ana", TRICKY), ("Ben", "hello Ana")]
            assert ana_panel[1]["peerId"] == ben_peer
            ben_panel = await wait_for(lambda: shows(ben, 2), 10, "Ben's panel to show his reply")
            assert [m["id"] for m in ben_panel] == [m["id"] for m in ana_panel]

            ARTIFACTS.mkdir(exist_ok=True)
            await ana.page.screenshot(path=str(ARTIFACTS / "room-chat.png"))
            for user in users:  # the markup stayed text
                assert await user.page.locator("#chat-log img, #chat-log b").count() == 0
                assert await user.page.evaluate("window.__injected === undefined")
                assert await user.page.evaluate("window.roomlogPage.errors") == []
        finally:
            await browser.close()

    posted = [
        e
        for e in await read_events(infra.kafka, topics.name("rtc.facts"))
        if isinstance(e, ChatMessagePosted) and e.room_id == room_id
    ]
    assert [(str(e.event_id), e.peer_id, e.name, e.text) for e in posted] == [
        (ana_panel[0]["id"], ana_peer, "Ana", TRICKY),
        (ana_panel[1]["id"], ben_peer, "Ben", "hello Ana"),
    ]
