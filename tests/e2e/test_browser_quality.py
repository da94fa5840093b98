"""The room page's network-quality indicator under real loss, in Chromium: a publisher page
and a viewer page in one room; 15 % random loss (iptables, inside the test namespace) on the
UDP traffic towards the viewer's port only (before the viewer comes, dynacast has stopped the
publisher's camera encodings: nobody needs them). The viewer's tile of the publisher goes to
level >= 4 (its own receive stats combined with streams' ``quality`` decision), the
publisher's own tile (its uplink) is untouched, and after the rule is removed the viewer's
tile comes back to <= 2. Screenshots of both moments go to artifacts/; the viewer's
``quality-report``s are on ``quality.samples`` and none was refused.

Needs the streams quality agent (streams/quality_agent.py) for the pushed decision."""

from __future__ import annotations

import asyncio
import contextlib
import time
from pathlib import Path
from typing import Any

import pytest

from producers.kafka import EventProducer
from producers.media import QualitySample
from producers.topics import Topics
from tests.e2e.browser import ARTIFACTS, User, chromium, open_user, start_web_stack
from tests.e2e.test_quality_loop import Loss
from tests.harness import Infra, Service, read_events, unique, wait_for

ALICE, BOB = 21, 22

#: The viewer page's subscriber connection: the local port of its selected candidate pair.
SELECTED_PORT = """async () => {
    const pc = window.roomlogPage.room.subscriber?.pc;
    if (!pc) return null;
    const stats = [...(await pc.getStats()).values()];
    const byId = new Map(stats.map((s) => [s.id, s]));
    const transport = stats.find((s) => s.type === 'transport' && s.selectedCandidatePairId);
    const pair = transport ? byId.get(transport.selectedCandidatePairId)
        : stats.find((s) => s.type === 'candidate-pair' && s.nominated && s.state === 'succeeded');
    const local = pair && byId.get(pair.localCandidateId);
    return local ? { port: local.port, address: local.address, protocol: local.protocol } : null;
}"""

#: The camera's source id once streams said no encoding of it is needed and every one is inactive.
CAMERA_STOPPED = """() => {
    const room = window.roomlogPage.room;
    const id = [...room.encodings.keys()].find((s) => s.startsWith('cam-'));
    if (!id || room.encodings.get(id).length !== 0) return null;
    return Object.values(room.publisher.sending(id)).every((on) => !on) ? id : null;
}"""

#: Packets Alice's publisher connection sent: [video, audio].
PACKETS_SENT = """async () => {
    const out = [0, 0];
    (await window.roomlogPage.room.publisher.pc.getStats()).forEach((s) => {
        if (s.type === 'outbound-rtp') out[s.kind === 'video' ? 0 : 1] += s.packetsSent;
    });
    return out;
}"""

#: Every tile's quality indicator: level (data-quality-level), local or remote, tooltip.
TILE_QUALITY = """() => [...document.querySelectorAll('.tile')].map((t) => ({
    peerId: t.dataset.peerId, kind: t.dataset.kind, local: t.classList.contains('local'),
    level: Number(t.dataset.qualityLevel || 0), title: t.querySelector('.tile-quality')?.title || '' }))"""


async def tile_of(user: User, peer_id: str, local: bool = False) -> dict[str, Any] | None:
    tiles: list[dict[str, Any]] = await user.page.evaluate(TILE_QUALITY)
    return next(
        (t for t in tiles if t["local"] == local and (local or t["peerId"] == peer_id) and t["kind"] == "camera"), None
    )


async def level_of(user: User, peer_id: str, local: bool = False) -> int:
    tile = await tile_of(user, peer_id, local)
    return int(tile["level"]) if tile else 0


async def viewer_levels(viewer: User, publisher_id: str) -> dict[str, Any]:
    """What the viewer's SDK computed for the publisher: combined, own stats, pushed (for messages)."""
    result: dict[str, Any] = await viewer.page.evaluate(
        """(peerId) => {
        const q = window.roomlogPage.room.lastQuality?.downlink?.get(peerId);
        return q ? { level: q.level, own: q.ownLevel, pushed: q.pushedLevel, loss: q.lossPct, layers: q.layers } : null;
    }""",
        publisher_id,
    )
    return result


@pytest.mark.timeout(600)
async def test_the_viewer_tile_shows_loss_towards_the_viewer_and_its_recovery(
    infra: Infra, topics: Topics, prefix: str, producer: EventProducer, services: list[Service], tmp_path: Path
) -> None:
    _, base = await start_web_stack(infra, topics, prefix, producer, services, tmp_path)
    room_id = unique("quality-web-")
    ARTIFACTS.mkdir(exist_ok=True)
    loss: Loss | None = None
    async with chromium() as pw:
        alice = await open_user(pw, "Alice", ALICE, seconds=60)
        bob = await open_user(pw, "Bob", BOB, seconds=60)
        try:
            await alice.sign_in(base)
            await alice.create_room(room_id)
            alice_id = await alice.wait_published()

            # dynacast: alone in the room, Alice is told nobody needs her camera; its senders
            # go inactive and send nothing (her own getStats), her microphone goes on
            camera = await wait_for(lambda: alice.page.evaluate(CAMERA_STOPPED), 40, "Alice's camera encodings off")
            video_before, audio_before = await alice.page.evaluate(PACKETS_SENT)
            await asyncio.sleep(2)
            video_after, audio_after = await alice.page.evaluate(PACKETS_SENT)
            assert video_after == video_before, f"inactive encodings still send: {video_before} -> {video_after}"
            assert audio_after > audio_before + 20
            await bob.sign_in(base)
            await bob.page.goto(f"{base}/web/room.html?room={room_id}&view=1")
            await bob.page.wait_for_function("window.roomlogPage && window.roomlogPage.room.peerId", timeout=30_000)
            bob_id: str = await bob.page.evaluate("window.roomlogPage.room.peerId")
            await bob.record_messages("quality-decision")
            await wait_for(lambda: _decoding(bob, alice_id, 30), 60, "Bob decoding Alice", interval=1)
            # ... and Bob's subscription turned an encoding back on
            active = await alice.page.evaluate("(id) => window.roomlogPage.room.publisher.sending(id)", camera)
            assert any(active.values()), active

            # clean network: Bob's tile of Alice and Alice's own tile show a good level
            await wait_for(lambda: _at_most(bob, alice_id, 2), 30, "Bob's tile of Alice at level <= 2", interval=0.5)
            await wait_for(
                lambda: _at_most(alice, alice_id, 2, local=True), 30, "Alice's own tile at <= 2", interval=0.5
            )

            # 15 % loss on the UDP traffic towards Bob's port only
            selected = await wait_for(lambda: bob.page.evaluate(SELECTED_PORT), 15, "Bob's selected candidate pair")
            assert selected["protocol"] == "udp", selected
            loss = Loss({int(selected["port"])})
            loss.set(15)
            started = time.monotonic()
            lossy = await wait_for(
                lambda: _at_least(bob, alice_id, 4),
                45,
                "Bob's tile of Alice at level >= 4 under 15 % loss",
                interval=0.5,
            )
            took = time.monotonic() - started
            await bob.page.screenshot(path=str(ARTIFACTS / "quality-viewer-loss.png"))
            await bob.page.locator(".tile[data-quality-level]:not(.local)").first.screenshot(
                path=str(ARTIFACTS / "quality-viewer-loss-tile.png")
            )
            detail = await viewer_levels(bob, alice_id)
            print(f"level {lossy['level']} after {took:.1f} s; SDK: {detail}; tooltip: {lossy['title']}")
            assert "loss" in lossy["title"] and "RTT" in lossy["title"] and "kbit/s" in lossy["title"]
            # the loss is towards Bob only: Alice's own tile (her uplink) stays good
            assert await level_of(alice, alice_id, local=True) <= 2

            # streams' decision comes too (within a few samples) and the tile combines it
            async def decided() -> list[dict[str, Any]] | None:
                got = [d for d in await bob.messages("quality-decision") if d["peer_id"] == alice_id]
                return got or None

            decision = (await wait_for(decided, 30, "a quality decision for Bob"))[-1]
            assert decision["layer"] in ("mid", "low", "paused"), decision
            assert decision["reason"] in ("loss", "bandwidth"), decision
            combined = await wait_for(lambda: _at_least(bob, alice_id, 4), 10, "the tile after the decision")
            print(f"decision {decision}; tile {combined['level']}: {combined['title']}")

            # the rule removed: back to <= 2
            loss.clear()
            loss = None
            cleared = time.monotonic()
            recovered = await wait_for(
                lambda: _at_most(bob, alice_id, 2), 90, "Bob's tile of Alice back at level <= 2", interval=0.5
            )
            print(
                f"back to level {recovered['level']} after {time.monotonic() - cleared:.1f} s; "
                f"SDK: {await viewer_levels(bob, alice_id)}"
            )
            await bob.page.screenshot(path=str(ARTIFACTS / "quality-viewer-recovered.png"))
            await alice.page.screenshot(path=str(ARTIFACTS / "quality-publisher.png"))

            # the gateway refused none of the viewer's reports
            errors = await bob.page.evaluate("window.roomlogPage.room.reportErrors")
            assert errors == {}, errors
            sent: int = await bob.page.evaluate("window.roomlogPage.room.reportsSent")
        except BaseException:
            for user in (alice, bob):
                with contextlib.suppress(Exception):
                    await user.page.screenshot(path=str(ARTIFACTS / f"failed-quality-{user.name}.png"))
                    print(user.name, await user.debug(), user.console[-20:])
            raise
        finally:
            if loss is not None:
                loss.clear()
            for user in (alice, bob):
                with contextlib.suppress(Exception):
                    await user.browser.close()

    # every report the viewer sent is one client sample on the log (one more may have left
    # between counting and closing), and they carry what it measured: Alice's video, lossy
    async def all_reports() -> list[QualitySample] | None:
        samples = [
            e
            for e in await read_events(infra.kafka, topics.name("quality.samples"))
            if isinstance(e, QualitySample) and e.room_id == room_id and e.source == "client"
        ]
        return samples if len([s for s in samples if s.peer_id == bob_id]) >= sent else None

    samples = await wait_for(all_reports, 15, f"the viewer's {sent} reports on quality.samples")
    from_bob = [s for s in samples if s.peer_id == bob_id]
    ids = [s.correlation_id for s in from_bob]
    assert ids[:sent] == [f"quality-{i}" for i in range(1, sent + 1)] and len(ids) <= sent + 1, ids
    assert sent >= 3
    assert all(s.leg == "client" and s.level is None for s in from_bob)  # a viewer has no uplink
    alice_legs = [leg for s in from_bob for leg in s.downlink if leg.peer_id == alice_id]
    alice_video = [leg for leg in alice_legs if leg.kind == "video"]
    assert alice_video and any(leg.packets > 0 and leg.frames_decoded > 0 for leg in alice_video)
    print(
        "reported loss %, video:",
        [leg.loss_pct for leg in alice_video],
        "audio:",
        [leg.loss_pct for leg in alice_legs if leg.kind == "audio"],
    )
    assert any(leg.loss_pct >= 5 for leg in alice_legs), [leg.loss_pct for leg in alice_legs]
    assert any(s.peer_id == alice_id and s.level is not None for s in samples), "no uplink level from Alice"


async def _at_least(user: User, peer_id: str, level: int, local: bool = False) -> dict[str, Any] | None:
    tile = await tile_of(user, peer_id, local)
    return tile if tile and tile["level"] >= level else None


async def _at_most(user: User, peer_id: str, level: int, local: bool = False) -> dict[str, Any] | None:
    tile = await tile_of(user, peer_id, local)
    return tile if tile and 1 <= tile["level"] <= level else None


async def _decoding(user: User, peer_id: str, frames: int) -> bool:
    decoded = await user.frames_decoded()
    return any(k.startswith(f"{peer_id}/") and n >= frames for k, n in decoded.items())
