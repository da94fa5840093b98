"""Playwright harness for the browser e2e tests: real headless Chromium (Debian's
/usr/bin/chromium, installed by ``scripts/browser.sh``) with a fake camera fed from a y4m
file whose frames carry a source code and a counter, driving the real pages in ``web/``.

Each participant is its own Chromium process (the fake-capture file is a process flag).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import sys
import time
from collections import defaultdict
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from playwright.async_api import Browser, Page, Playwright, async_playwright

from tests.e2e.y4m import write_y4m
from tests.harness import REPO, Infra, Service, http_ready, media_stack, streams_ready

CHROMIUM = Path("/usr/bin/chromium")
ARTIFACTS = REPO / "artifacts"
Y4M_CACHE = REPO / ".run" / "y4m"


def chromium_args(y4m: Path, *, fake_ui: bool = True) -> list[str]:
    """``fake_ui=False``: no auto-accepted permission prompt (add ``--deny-permission-prompts``
    for a person who refuses the camera and microphone)."""
    return [
        "--no-sandbox",
        "--disable-background-networking",
        *(["--use-fake-ui-for-media-stream"] if fake_ui else []),
        "--use-fake-device-for-media-stream",
        f"--use-file-for-fake-video-capture={y4m}",
        "--allow-loopback-in-peer-connection",
        "--disable-features=WebRtcHideLocalIpsWithMdns",
        "--autoplay-policy=no-user-gesture-required",
    ]


async def start_web_stack(
    infra: Infra,
    topics: Any,
    prefix: str,
    producer: Any,
    services: list[Service],
    log_dir: Path,
    **streams_settings: Any,
) -> tuple[list[Service], str]:
    """streams (``streams_settings`` → ``ROOMLOG_STREAMS_*``), one media node and an api in
    development mode (the dev login is on)."""
    stack = media_stack(infra, prefix, log_dir, stats_interval_s=1)
    stack[0].env.update({f"ROOMLOG_STREAMS_{k.upper()}": str(v) for k, v in streams_settings.items()})
    stack[-1].env["ROOMLOG_API_DEV_MODE"] = "true"
    for service in stack:
        services.append(service.start())
    base = f"http://127.0.0.1:{stack[-1].env['ROOMLOG_API_PORT']}"
    await streams_ready(producer, infra, topics, stack[0])
    await http_ready(f"{base}/healthz", stack[-1])
    return stack, base


@dataclass
class User:
    """One person in one Chromium: signs in, uses the lobby and the room page."""

    name: str
    code: int
    browser: Browser
    page: Page
    console: list[str] = field(default_factory=list)

    async def sign_in(self, base: str) -> None:
        await self.page.goto(f"{base}/web/")
        await self.page.fill("input[name=name]", self.name)
        await self.page.click("button[type=submit]")
        await self.page.wait_for_url("**/web/lobby.html")

    async def create_room(self, room_id: str, room_type: str = "sfu") -> None:
        await self.page.fill("#create input[name=room_id]", room_id)
        await self.page.select_option("#create select[name=type]", room_type)
        await self.page.click("#create button[type=submit]")
        await self.page.wait_for_url("**/web/room.html?*")

    async def ensure_room(self, room_id: str, room_type: str = "sfu") -> None:
        """Create the room through the api with this user's token (already there: fine): the
        room page does not create a room a link names (a mistyped link must not)."""
        status: int = await self.page.evaluate(
            """async ([room, type]) => {
            const { token } = JSON.parse(sessionStorage.getItem('roomlog.session'));
            const r = await fetch('/v1/rooms', { method: 'POST', body: JSON.stringify({ room_id: room, type }),
                headers: { 'Content-Type': 'application/json', Authorization: `Bearer ${token}` } });
            return r.status; }""",
            [room_id, room_type],
        )
        assert status in (201, 202, 409), f"creating room {room_id}: HTTP {status}"

    async def join_from_lobby(self, room_id: str, timeout_s: float = 20) -> None:
        row = self.page.locator(f"tr[data-room='{room_id}'] a").first
        await row.wait_for(timeout=timeout_s * 1000)
        await row.click()
        await self.page.wait_for_url("**/web/room.html?*")

    async def wait_published(self, timeout_s: float = 40) -> str:
        """Until the page has joined and published; returns its peer id."""
        try:
            await self.page.wait_for_function(
                "window.roomlogPage && window.roomlogPage.published === true", timeout=timeout_s * 1000
            )
        except Exception as exc:
            errors = await self.page.evaluate("window.roomlogPage && window.roomlogPage.errors")
            raise AssertionError(
                f"{self.name} did not publish: {exc}; page errors {errors}; console {self.console[-15:]}"
            ) from None
        peer_id: str = await self.page.evaluate("window.roomlogPage.room.peerId")
        return peer_id

    async def tiles(self) -> list[dict[str, Any]]:
        """Every tile on the room page with what its <video> shows: pattern code/counter, luma std."""
        result: list[dict[str, Any]] = await self.page.evaluate("""async () => {
            const { readVideo } = await import('/web/sdk/pattern.js');
            return [...document.querySelectorAll('.tile')].map((t) => ({
                key: t.dataset.key, peerId: t.dataset.peerId, name: t.dataset.name || '', kind: t.dataset.kind,
                local: t.classList.contains('local'), videoOff: t.classList.contains('video-off'),
                read: readVideo(t.querySelector('video')) }));
        }""")
        return result

    async def frames_decoded(self) -> dict[str, int]:
        """framesDecoded per remote video source, from the subscriber connection's getStats."""
        stats = await self.page.evaluate("window.roomlogPage.room.stats()")
        return {
            f"{s['peerId']}/{s['sourceId']}": s["framesDecoded"]
            for s in stats["inbound"]
            if s["kind"] == "video" and s["peerId"]
        }

    async def debug(self) -> Any:
        """What the page's connections report (for failure messages)."""
        return await self.page.evaluate("""async () => {
            const room = window.roomlogPage && window.roomlogPage.room;
            if (!room) return null;
            const dump = async (pc) => {
                if (!pc) return null;
                const out = [];
                (await pc.getStats()).forEach((s) => {
                    if (['inbound-rtp', 'outbound-rtp', 'candidate-pair'].includes(s.type)) out.push(
                        Object.fromEntries(Object.entries(s).filter(([k]) => ['type', 'kind', 'mid', 'ssrc',
                        'packetsReceived', 'packetsSent', 'framesDecoded', 'keyFramesDecoded', 'pliCount', 'nackCount',
                        'firCount', 'frameWidth', 'framesEncoded', 'state', 'nominated', 'bytesReceived',
                        'qualityLimitationReason'].includes(k))));
                });
                return out;
            };
            return { state: room.state, peerId: room.peerId, remote: [...room.remote.keys()],
                     sources: room.subscriber ? [...room.subscriber.sources.entries()] : [],
                     sub: await dump(room.subscriber?.pc), pub: await dump(room.publisher?.pc) };
        }""")

    async def record_messages(self, kind: str) -> None:
        await self.page.evaluate(
            """(kind) => {
            window.__messages = window.__messages || {};
            window.__messages[kind] = [];
            window.roomlogPage.room.on(kind, (m) => window.__messages[kind].push(m));
        }""",
            kind,
        )

    async def messages(self, kind: str) -> list[dict[str, Any]]:
        result: list[dict[str, Any]] = await self.page.evaluate("(kind) => window.__messages[kind]", kind)
        return result


def require_chromium() -> None:
    if not CHROMIUM.exists():
        raise RuntimeError("no /usr/bin/chromium: run `make install` (scripts/browser.sh install)")


@contextlib.asynccontextmanager
async def chromium() -> AsyncIterator[Playwright]:
    require_chromium()
    async with async_playwright() as pw:
        yield pw


async def open_user(
    pw: Playwright,
    name: str,
    code: int,
    *,
    seconds: float = 30,
    fake_ui: bool = True,
    extra_args: tuple[str, ...] = (),
    permissions: list[str] | None = None,
    viewport: tuple[int, int] = (1280, 800),
    mobile: bool = False,
) -> User:
    """A Chromium whose camera shows ``code`` (and a counter) at 640x360, 15 fps; its own profile."""
    y4m = write_y4m(Y4M_CACHE / f"code{code}-{int(seconds)}s.y4m", code, seconds=seconds)
    browser = await pw.chromium.launch(
        executable_path=str(CHROMIUM), args=[*chromium_args(y4m, fake_ui=fake_ui), *extra_args]
    )
    context = await browser.new_context(
        viewport={"width": viewport[0], "height": viewport[1]},
        permissions=permissions,
        is_mobile=mobile,
        has_touch=mobile,
    )
    page = await context.new_page()
    user = User(name, code, browser, page)
    page.on("console", lambda m: user.console.append(f"{m.type}: {m.text}"))
    page.on("pageerror", lambda e: user.console.append(f"pageerror: {e}"))
    return user


class PythonParticipant:
    """``tests/e2e/pattern_client.py`` in its own process: what it decodes, per source code."""

    def __init__(self, ws_url: str, token: str, room: str, name: str, code: int, log_path: Path) -> None:
        self.args = [ws_url, token, room, "--name", name, "--code", str(code)]
        self.log_path = log_path
        self.peer_id: str | None = None
        self.peers: dict[str, dict[str, Any]] = {}
        self.video: dict[int, list[int]] = defaultdict(list)
        self.video_at: dict[int, list[float]] = defaultdict(list)
        self.audio: dict[str, int] = {}
        self.proc: asyncio.subprocess.Process | None = None
        self._reader: asyncio.Task[None] | None = None

    async def start(self, timeout_s: float = 30) -> PythonParticipant:
        env = {**os.environ, "PYTHONPATH": str(REPO)}
        # its own session, as the services (tests.harness.Service) and Playwright's browsers
        # have: with the kernel's autogroup scheduling a session is one CPU group, and in the
        # test's session the participant would share one group's CPU with pytest and the
        # Playwright driver (and anything else started from the same shell)
        self.proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "tests.e2e.pattern_client",
            *self.args,
            cwd=REPO,
            env=env,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=self.log_path.open("ab"),
            start_new_session=True,
        )
        self._reader = asyncio.create_task(self._read())
        deadline = time.monotonic() + timeout_s
        while self.peer_id is None:
            if self.proc.returncode is not None or time.monotonic() > deadline:
                raise AssertionError(f"python participant did not join:\n{self.log_path.read_text()[-3000:]}")
            await asyncio.sleep(0.1)
        return self

    async def _read(self) -> None:
        assert self.proc is not None and self.proc.stdout is not None
        async for line in self.proc.stdout:
            message = json.loads(line)
            event = message["event"]
            if event == "frame":
                self.video[message["code"]].append(message["counter"])
                self.video_at[message["code"]].append(time.monotonic())
            elif event == "audio":
                self.audio = message["counts"]
            elif event == "joined":
                self.peer_id = message["peer_id"]
            elif event in ("peer-updated", "peer-joined"):
                self.peers[message["peer"]["peer_id"]] = message["peer"]

    def frames_since(self, code: int, since: float) -> int:
        return sum(1 for t in self.video_at.get(code, []) if t >= since)

    async def stop(self) -> None:
        if self.proc is not None and self.proc.returncode is None:
            assert self.proc.stdin is not None
            self.proc.stdin.close()
            try:
                await asyncio.wait_for(self.proc.wait(), 10)
            except TimeoutError:
                self.proc.kill()
                await self.proc.wait()
        if self._reader is not None:
            self._reader.cancel()
