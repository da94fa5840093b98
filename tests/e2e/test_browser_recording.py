"""Recording from the room page in real Chromium: one page starts a recording, every page
shows the indicator, the recording stops, the finished recording plays in the page."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from producers.kafka import EventProducer
from producers.topics import Topics
from tests.e2e.browser import CHROMIUM, User, chromium
from tests.e2e.recording_stack import close_all, publisher, recorder_service
from tests.harness import Infra, Service, http_ready, media_stack, streams_ready, unique, wait_for


async def open_room(user: User, base: str, room_id: str) -> None:
    await user.sign_in(base)
    await user.page.goto(f"{base}/web/room.html?room={room_id}&view=1")  # watching: no camera needed
    await user.page.wait_for_function(
        "window.roomlogPage && window.roomlogPage.room.state === 'connected'", timeout=40_000
    )


async def indicator(user: User) -> bool:
    shown: bool = await user.page.evaluate("!document.getElementById('rec-indicator').hidden")
    return shown


async def test_indicator_for_everyone_and_the_recording_plays_in_the_page(
    infra: Infra, topics: Topics, prefix: str, producer: EventProducer, services: list[Service], tmp_path: Path
) -> None:
    stack = media_stack(infra, prefix, tmp_path)
    stack[-1].env.update(
        {
            "ROOMLOG_API_DEV_MODE": "true",
            "MINIO_ENDPOINT": infra.minio_endpoint,
            "MINIO_ACCESS_KEY": infra.minio_access_key,
            "MINIO_SECRET_KEY": infra.minio_secret_key,
        }
    )
    for service in stack:
        services.append(service.start())
    base = f"http://127.0.0.1:{stack[-1].env['ROOMLOG_API_PORT']}"
    await streams_ready(producer, infra, topics, stack[0])
    await http_ready(f"{base}/healthz", stack[-1])
    services.append(recorder_service(infra, prefix, tmp_path, base, f"{prefix}rec0").start())
    room_id = unique("webrec-")
    alice = await publisher(base, room_id, "alice", 11)  # something to record
    async with chromium() as pw:
        browser = await pw.chromium.launch(executable_path=str(CHROMIUM), args=["--no-sandbox"])
        try:
            users = []
            for name in ("Ana", "Ben"):
                page = await (await browser.new_context()).new_page()
                user = User(name, 0, browser, page)
                page.on("console", lambda m, u=user: u.console.append(f"{m.type}: {m.text}"))
                users.append(user)
            ana, ben = users
            for user in users:
                await open_room(user, base, room_id)
                assert not await indicator(user)
            await ana.page.click("#rec-start")
            for user in users:
                try:
                    await wait_for(lambda u=user: indicator(u), 30, f"{user.name}'s recording indicator")
                except AssertionError as exc:
                    raise AssertionError(f"{exc}; console {user.console[-10:]}") from None
            await ana.page.wait_for_timeout(6000)
            await ana.page.click("#rec-stop")
            for user in users:
                await wait_for(lambda u=user: _not(indicator(u)), 60, f"{user.name}'s indicator off")

            async def playable() -> list[dict[str, Any]] | None:
                await ben.page.evaluate("window.roomlogPage.recording.refresh()")
                items: list[dict[str, Any]] = await ben.page.evaluate("""() =>
                    [...document.querySelectorAll('#rec-list li')].map((li) => ({
                        id: li.dataset.recordingId, status: li.dataset.status, play: !!li.querySelector('.play')}))""")
                return items if items and items[0]["play"] else None

            (item,) = await wait_for(playable, 60, "a completed recording in Ben's list")
            assert item["status"] == "completed"
            await ben.page.click(f"#rec-list li[data-recording-id='{item['id']}'] .play")
            await ben.page.wait_for_function(
                "(() => { const v = document.getElementById('rec-player'); return !v.hidden && v.currentTime > 1; })()",
                timeout=30_000,
            )
        finally:
            await browser.close()
            await close_all(alice.room)


async def _not(check: Any) -> bool:
    return not await check
