"""Two real Chromium pages and one Python client in an SFU room: everyone receives
everyone (identities read from the frame pattern), getStats shows frames decoded,
a browser's camera goes off and on and the others see it; screenshots of the lobby and
the three-person call land in artifacts/ and every video tile has real pixels."""

from __future__ import annotations

import asyncio
import contextlib
import time
from pathlib import Path
from typing import Any

import av
import numpy as np
import pytest

from producers.kafka import EventProducer
from producers.topics import Topics
from tests.e2e.browser import ARTIFACTS, PythonParticipant, User, chromium, open_user, start_web_stack
from tests.harness import Infra, Service, mint_token, unique, wait_for

ALICE, BOB, CAROL = 11, 12, 13  # the source codes in each participant's frames


def remote_codes(tiles: list[dict[str, Any]]) -> dict[str, tuple[int, int, str]]:
    """peer id -> (code, counter, name) of every remote camera tile showing a picture."""
    return {
        t["peerId"]: (t["read"]["code"], t["read"]["counter"], t["name"])
        for t in tiles
        if not t["local"] and t["kind"] == "camera" and t["read"]
    }


async def sees(user: User, expected: dict[str, tuple[int, str]]) -> bool:
    """``user``'s page shows each expected peer with that code and name, counters advancing."""
    first = remote_codes(await user.tiles())
    await asyncio.sleep(0.5)
    second = remote_codes(await user.tiles())
    for peer_id, (code, name) in expected.items():
        if peer_id not in first or peer_id not in second:
            return False
        if first[peer_id][0] != code or second[peer_id][0] != code or second[peer_id][2] != name:
            return False
        if second[peer_id][1] == first[peer_id][1]:
            return False
    return True


def png_std(path: Path) -> float:
    with av.open(str(path)) as container:
        frame = next(container.decode(video=0))
    return float(np.std(frame.to_ndarray(format="gray")))


@pytest.mark.timeout(600)
async def test_browsers_and_python_client_in_sfu_room(
    infra: Infra, topics: Topics, prefix: str, producer: EventProducer, services: list[Service], tmp_path: Path
) -> None:
    _, base = await start_web_stack(infra, topics, prefix, producer, services, tmp_path)
    room_id = unique("web-")
    ARTIFACTS.mkdir(exist_ok=True)
    carol: PythonParticipant | None = None
    async with chromium() as pw:
        alice = await open_user(pw, "Alice", ALICE)
        bob = await open_user(pw, "Bob", BOB)
        try:
            # Alice signs in and creates the room from the lobby; Bob finds it in his lobby
            await alice.sign_in(base)
            await alice.create_room(room_id)
            alice_id = await alice.wait_published()
            await bob.sign_in(base)
            await bob.page.locator(f"tr[data-room='{room_id}']").wait_for(timeout=20_000)
            await bob.page.wait_for_function(
                "document.querySelector('#preview').readyState >= 2 && "
                "document.querySelectorAll('#camera option').length > 0",
                timeout=20_000,
            )
            await bob.page.screenshot(path=str(ARTIFACTS / "lobby.png"))
            await bob.join_from_lobby(room_id)
            bob_id = await bob.wait_published()

            # Carol is a Python client (client/room.py) in her own process
            token = await mint_token(base, "carol", ["join", "publish", "subscribe"], room_id)
            carol = await PythonParticipant(
                base.replace("http", "ws") + "/v1/rtc", token, room_id, "Carol", CAROL, tmp_path / "carol.log"
            ).start()
            assert carol.peer_id is not None
            carol_id = carol.peer_id

            # everyone receives everyone, identities from the frame pattern
            await wait_for(
                lambda: sees(alice, {bob_id: (BOB, "Bob"), carol_id: (CAROL, "Carol")}),
                60,
                "Alice's page showing Bob and Carol",
                interval=1,
            )
            await wait_for(
                lambda: sees(bob, {alice_id: (ALICE, "Alice"), carol_id: (CAROL, "Carol")}),
                60,
                "Bob's page showing Alice and Carol",
                interval=1,
            )
            await wait_for(
                lambda: all(len(carol.video[c]) >= 15 for c in (ALICE, BOB)), 60, "Carol decoding Alice and Bob"
            )
            assert set(carol.video) == {ALICE, BOB}, f"Carol decoded codes {set(carol.video)}"
            for code in (ALICE, BOB):
                tail = carol.video[code][-10:]
                assert tail[-1] != tail[0], f"code {code} frozen at Carol: {tail}"
            # each microphone on its own receiver: both are heard (audio counts arrive once a second)
            await wait_for(
                lambda: all(carol.audio.get(p, 0) > 0 for p in (alice_id, bob_id)), 10, "Carol hearing Alice and Bob"
            )

            # getStats: frames decoded keep increasing on both pages
            for user, others in ((alice, (bob_id, carol_id)), (bob, (alice_id, carol_id))):
                before = await user.frames_decoded()
                await asyncio.sleep(3)
                after = await user.frames_decoded()
                for peer_id in others:
                    key = next((k for k in after if k.startswith(f"{peer_id}/")), None)
                    assert key is not None, f"{user.name}: no inbound video from {peer_id}: {after}"
                    assert after[key] > before.get(key, 0) + 10, f"{user.name}: {key} {before} -> {after}"

            # screenshots: the three-person call, and each tile has real pixels
            await alice.page.screenshot(path=str(ARTIFACTS / "call.png"))
            tiles = alice.page.locator(".tile.has-video")
            assert await tiles.count() == 3, "Alice's grid should have three video tiles"
            for i in range(3):
                path = ARTIFACTS / f"call-tile-{i}.png"
                await tiles.nth(i).screenshot(path=str(path))
                assert png_std(path) > 20, f"tile {i} is flat (std {png_std(path):.1f})"
            for tile in await alice.tiles():
                assert tile["read"] is not None and tile["read"]["std"] > 20, tile

            # Bob turns his camera off: the others get peer-updated and his frames stop
            await alice.record_messages("peer-updated")
            await bob.page.click("#camera")
            await wait_for(
                lambda: carol.peers.get(bob_id, {}).get("video_muted") is True, 15, "Carol seeing Bob's camera off"
            )
            updates = await wait_for(lambda: alice.messages("peer-updated"), 15, "Alice getting peer-updated")
            assert updates[-1]["peer"]["peer_id"] == bob_id and updates[-1]["peer"]["video_muted"] is True
            await asyncio.sleep(1.5)  # frames in flight
            alice_before = await alice.frames_decoded()
            stopped_at = time.monotonic()
            await asyncio.sleep(3)
            alice_after = await alice.frames_decoded()
            bob_key = next(k for k in alice_after if k.startswith(f"{bob_id}/"))
            assert alice_after[bob_key] == alice_before[bob_key], "Alice still decodes Bob's video"
            assert carol.frames_since(BOB, stopped_at) == 0, "Carol still decodes Bob's video"
            alice_key = next(k for k in alice_after if k.startswith(f"{carol_id}/"))
            assert alice_after[alice_key] > alice_before[alice_key], "Carol's video stopped at Alice too"

            # ... and on again: peer-updated, frames resume with Bob's pattern
            await bob.page.click("#camera")
            await wait_for(
                lambda: carol.peers.get(bob_id, {}).get("video_muted") is False, 15, "Carol seeing Bob's camera on"
            )
            resumed_at = time.monotonic()
            # aiortc's receiver holds frames behind a lost packet until its 512-packet jitter buffer
            # overflows (tens of seconds at a browser's low packet rate) before it asks for a keyframe
            await wait_for(lambda: carol.frames_since(BOB, resumed_at) >= 10, 60, "Carol decoding Bob again")
            await wait_for(lambda: sees(alice, {bob_id: (BOB, "Bob")}), 20, "Alice seeing Bob again", interval=1)
            updates = await alice.messages("peer-updated")
            assert updates[-1]["peer"]["peer_id"] == bob_id and updates[-1]["peer"]["video_muted"] is False
        except BaseException:
            if carol is not None:
                print(
                    "Carol decoded:",
                    {c: (len(v), v[:3], v[-3:]) for c, v in carol.video.items()},
                    "audio frames:",
                    carol.audio,
                )
            for user in (alice, bob):
                with contextlib.suppress(Exception):
                    await user.page.screenshot(path=str(ARTIFACTS / f"failed-{user.name}.png"))
                print(f"--- {user.name} console ---\n" + "\n".join(user.console[-40:]))
                with contextlib.suppress(Exception):
                    print(f"--- {user.name} connections ---\n{await user.debug()}")
            raise
        finally:
            if carol is not None:
                await carol.stop()
            for user in (alice, bob):
                with contextlib.suppress(Exception):
                    await user.browser.close()
