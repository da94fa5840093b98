"""A gateway restart during a meeting (issue 16 item 2), in real Chromium: two people in an
SFU room on one gateway; the gateway is stopped for 30 s and started again on the same port
(the new process starts at once behind a refused port, so the pages are without a gateway for
30 s however long its start-up takes on a loaded machine).
Media keeps flowing through the node meanwhile; afterwards both pages must be back in the
same room as the SAME participants (resumed within streams' 75 s grace, which outlasts the
SDK's 60 s budget: same peer ids, no new PeerJoined), with the other's frames increasing, and
neither gave up. A page that gives up offers Rejoin, and a participant who rejoins is seen by
one who resumed (streams send a resumed peer the subscriber offer its lost socket missed)."""

from __future__ import annotations

import asyncio
import contextlib
import subprocess
import time
from collections.abc import Iterator
from functools import partial
from pathlib import Path
from typing import Any

import pytest

from producers.kafka import EventProducer
from producers.media import SubscriberOffered
from producers.rtc import PeerJoined, PeerLeft, PeerResumed
from producers.topics import Topics
from tests.e2e.browser import ARTIFACTS, User, chromium, open_user, start_web_stack
from tests.harness import Infra, Service, http_ready, read_events, unique, wait_for, wait_for_events

ALICE, BOB = 71, 72
DOWN_S = 30.0

#: What a page knows about itself and the room (for the assertions and the failure message).
STATE_JS = """() => { const r = window.roomlogPage.room; return {
    state: r.state, room: r.room, peerId: r.peerId, peers: [...r.peers.keys()],
    badge: document.getElementById('state').textContent, rejoin: !document.getElementById('rejoin').hidden,
    banner: document.getElementById('banner').hidden ? null : document.getElementById('banner').textContent,
    log: window.__gatewayLog }; }"""

RECORD_JS = """() => {
    const log = window.__gatewayLog = [];
    const r = window.roomlogPage.room;
    const t0 = performance.now();
    const at = () => Math.round(performance.now() - t0);
    r.on('state', (m) => log.push([at(), 'state', m.state]));
    r.on('reconnecting', (m) => log.push([at(), 'reconnecting', m.attempt, Math.round(m.delayMs)]));
    r.on('reconnect-failed', (m) => log.push([at(), 'reconnect-failed', m.attempt, m.error]));
    r.on('reconnected', (m) => log.push([at(), 'reconnected', m.peerId, m.resumed]));
    r.on('gave-up', (m) => log.push([at(), 'gave-up', m.attempts, Math.round(m.elapsedMs)]));
}"""


@contextlib.contextmanager
def closed_port(port: int) -> Iterator[None]:
    """Connections to ``port`` are refused (a TCP reset, as from a port nobody listens on);
    iptables inside the test's network namespace."""
    rule = ["INPUT", "-p", "tcp", "--dport", str(port), "-j", "REJECT", "--reject-with", "tcp-reset"]
    subprocess.run(["iptables", "-w", "-I", *rule], check=True)
    try:
        yield
    finally:
        subprocess.run(["iptables", "-w", "-D", *rule], check=True)


async def page_state(user: User) -> dict[str, Any]:
    result: dict[str, Any] = await user.page.evaluate(STATE_JS)
    return result


async def decoding(user: User, other: User) -> bool:
    """``user``'s page knows ``other``'s current peer and decodes its video, frames increasing."""
    me, them = await page_state(user), await page_state(other)
    if me["state"] != "connected" or them["state"] != "connected" or me["room"] != them["room"]:
        return False
    if them["peerId"] not in me["peers"]:
        return False
    key = f"{them['peerId']}/"
    before = {k: v for k, v in (await user.frames_decoded()).items() if k.startswith(key)}
    await asyncio.sleep(1.5)
    after = {k: v for k, v in (await user.frames_decoded()).items() if k.startswith(key)}
    return any(after[k] >= before.get(k, 0) + 8 for k in after) and any(
        r is not None and r["code"] == other.code
        for r in [t["read"] for t in await user.tiles() if not t["local"] and t["peerId"] == them["peerId"]]
    )


async def both_publishing(alice: User, bob: User, base: str, room_id: str) -> None:
    """Alice creates the room from the page, Bob opens its link; both publish."""
    await alice.sign_in(base)
    await alice.create_room(room_id)
    await alice.wait_published()
    await bob.sign_in(base)
    await bob.page.goto(f"{base}/web/room.html?room={room_id}")
    await bob.wait_published()


@pytest.mark.timeout(420)
async def test_a_gateway_stopped_30_s_and_started_again_leaves_both_pages_in_the_room(
    infra: Infra, topics: Topics, prefix: str, producer: EventProducer, services: list[Service], tmp_path: Path
) -> None:
    stack, base = await start_web_stack(infra, topics, prefix, producer, services, tmp_path)
    api = stack[-1]
    room_id = unique("gw-")
    async with chromium() as pw:
        alice = await open_user(pw, "Alice", ALICE)
        bob = await open_user(pw, "Bob", BOB)
        users = (alice, bob)
        try:
            await both_publishing(alice, bob, base, room_id)
            for user, other in ((alice, bob), (bob, alice)):
                await wait_for(partial(decoding, user, other), 60, f"{user.name} decoding {other.name}", interval=0.5)
                await user.page.evaluate(RECORD_JS)
            before = {u.name: await page_state(u) for u in users}

            # the pages lose the gateway when the stop begins; it serves again DOWN_S later. The new
            # process starts at once behind a closed port (on a loaded machine its imports alone
            # took 35 s): the pages are without a gateway for DOWN_S, not for DOWN_S + start-up
            port = int(api.env["ROOMLOG_API_PORT"])
            stopped_at = time.monotonic()
            with closed_port(port):
                await asyncio.to_thread(api.stop)
                stop_s = time.monotonic() - stopped_at
                assert stop_s < DOWN_S, f"the gateway took {stop_s:.1f} s to stop"
                serving = api.log_path.read_text(errors="replace").count("Uvicorn running on")
                api.start()
                await asyncio.sleep(max(0.0, 10 - stop_s))
                for user in users:  # meanwhile the pages say so (media still flows, the meeting is not "excellent")
                    shown = await user.page.evaluate("""() => ({ badge: document.getElementById('state').textContent,
                        quality: document.querySelector('#quality .text').textContent })""")
                    assert shown == {"badge": "Reconnecting", "quality": "– · reconnecting"}, (user.name, shown)
                await wait_for(
                    lambda: api.log_path.read_text(errors="replace").count("Uvicorn running on") > serving,
                    90,
                    "the new gateway process serving (behind the closed port)",
                    interval=0.5,
                )
                await asyncio.sleep(max(0.0, DOWN_S - (time.monotonic() - stopped_at)))
            await http_ready(f"{base}/healthz", api, timeout=30)
            print(f"gateway stopped in {stop_s:.1f} s, back after {time.monotonic() - stopped_at:.1f} s")

            for user, other in ((alice, bob), (bob, alice)):
                await wait_for(
                    partial(decoding, user, other),
                    60,
                    f"{user.name} back in the room decoding {other.name}",
                    interval=0.5,
                )
            after = {u.name: await page_state(u) for u in users}
            print(f"before: {before}\nafter: {after}")
            for user in users:
                state = after[user.name]
                assert not any(e[1] == "gave-up" for e in state["log"]), state
                assert state["room"] == room_id and state["badge"] == "Connected" and not state["rejoin"], state
                # the same participants: resumed within streams' grace, not joined anew
                assert state["peerId"] == before[user.name]["peerId"], (before[user.name], state)
                assert [e[2:] for e in state["log"] if e[1] == "reconnected"] == [[state["peerId"], True]], state
            facts = [
                e
                for e in await read_events(infra.kafka, topics.name("rtc.facts"))
                if getattr(e, "room_id", None) == room_id
            ]
            joined = [e.peer_id for e in facts if isinstance(e, PeerJoined)]
            assert sorted(joined) == sorted(before[u.name]["peerId"] for u in users), joined
            assert not [e for e in facts if isinstance(e, PeerLeft)], "a participant left the room"
            resumed = {e.peer_id for e in facts if isinstance(e, PeerResumed)}
            assert resumed == set(joined), (resumed, joined)
        except BaseException:
            ARTIFACTS.mkdir(exist_ok=True)
            for user in users:
                with contextlib.suppress(Exception):
                    await user.page.screenshot(path=str(ARTIFACTS / f"failed-gateway-{user.name}.png"))
                with contextlib.suppress(Exception):
                    print(f"--- {user.name} page ---\n{await page_state(user)}\n{await user.debug()}")
                print(f"--- {user.name} console ---\n" + "\n".join(user.console[-30:]))
            raise
        finally:
            for user in users:
                with contextlib.suppress(Exception):
                    await user.browser.close()


@pytest.mark.timeout(420)
@pytest.mark.parametrize("bob_back", ["before", "after"])
async def test_a_page_that_gives_up_offers_rejoin_and_rejoining_works(
    infra: Infra,
    topics: Topics,
    prefix: str,
    producer: EventProducer,
    services: list[Service],
    tmp_path: Path,
    bob_back: str,
) -> None:
    """Alice's page has a 5 s reconnection budget (set on its Room for the test); the gateway is
    away for longer: her page says it gave up, the badge says Failed, Rejoin appears, and
    Rejoin (once the gateway is back) puts her in the room again with Bob's video. Bob's page
    resumes as the same participant ``before`` Alice rejoins, or only ``after`` she has joined
    and published again: then the subscriber offer for her new tracks was addressed to Bob's
    lost socket, and streams must offer it again when he resumes."""
    # Bob must come back as the same participant however slowly a loaded machine restarts the
    # gateway: the grace is not what this test is about (test_a_gateway_stopped_30_s_… is)
    stack, base = await start_web_stack(infra, topics, prefix, producer, services, tmp_path, disconnect_grace_s=300)
    api = stack[-1]
    room_id = unique("gw-")
    async with chromium() as pw:
        alice = await open_user(pw, "Alice", ALICE)
        bob = await open_user(pw, "Bob", BOB)
        users = (alice, bob)
        try:
            await both_publishing(alice, bob, base, room_id)
            await wait_for(partial(decoding, alice, bob), 60, "Alice decoding Bob", interval=0.5)
            await alice.page.evaluate("window.roomlogPage.room.backoff.opts.budgetMs = 5000")
            bob_peer = (await page_state(bob))["peerId"]
            # Bob's page keeps trying (every 2 s, for up to 4 min); held off ("after": its attempts
            # go to a closed port) until Alice has joined again and published
            await bob.page.evaluate(
                "Object.assign(window.roomlogPage.room.backoff.opts, {capMs: 2000, budgetMs: 240000})"
            )
            if bob_back == "after":
                await bob.page.evaluate(
                    "(() => { const r = window.roomlogPage.room; window.__urls = r.urls;"
                    " r.urls = ['ws://127.0.0.1:9/v1/rtc']; })()"
                )

            stopped_at = time.monotonic()
            await asyncio.to_thread(api.stop)

            async def gave_up() -> dict[str, Any] | None:
                state = await page_state(alice)
                return state if state["rejoin"] else None

            state = await wait_for(gave_up, 20, "Alice's page giving up and offering Rejoin", interval=0.5)
            assert state["state"] == "failed" and state["badge"] == "Failed", state
            assert state["banner"] is not None and state["banner"].startswith("Could not reconnect after"), state
            await asyncio.sleep(max(0.0, 12 - (time.monotonic() - stopped_at)))
            api.start()
            await http_ready(f"{base}/healthz", api, timeout=60)
            print(f"gateway back after {time.monotonic() - stopped_at:.1f} s")

            async def bob_resumed() -> bool:
                state = await page_state(bob)
                return bool(state["state"] == "connected" and state["peerId"] == bob_peer)

            if bob_back == "before":
                await wait_for(bob_resumed, 30, "Bob's page resuming before Alice rejoins", interval=0.5)
            await alice.page.click("#rejoin")
            await alice.wait_published()
            if bob_back == "after":
                # the node offered Bob's subscriber connection Alice's new tracks while his socket
                # was gone: that offer went nowhere, and the node makes no other until it is answered
                alice_peer = (await page_state(alice))["peerId"]

                def offered_to_bob(events: list[Any]) -> bool:
                    return any(
                        isinstance(e, SubscriberOffered)
                        and e.peer_id == bob_peer
                        and any(s.peer_id == alice_peer for s in e.sources)
                        for e in events
                    )

                await wait_for_events(
                    infra.kafka,
                    topics.name("media.results"),
                    offered_to_bob,
                    30,
                    "the node offering Bob Alice's tracks",
                )
                assert not await bob_resumed(), "Bob's page came back before the offer"
                await bob.page.evaluate("window.roomlogPage.room.urls = window.__urls")
                await wait_for(bob_resumed, 30, "Bob's page resuming after Alice rejoined", interval=0.5)
            for user, other in ((alice, bob), (bob, alice)):
                await wait_for(
                    partial(decoding, user, other), 60, f"{user.name} decoding {other.name} after Rejoin", interval=0.5
                )
            after = await page_state(alice)
            assert after["room"] == room_id and after["badge"] == "Connected" and not after["rejoin"], after
            assert (await page_state(bob))["peerId"] == bob_peer, "Bob's page came back as a new participant"
        except BaseException:
            for user in users:
                with contextlib.suppress(Exception):
                    print(f"--- {user.name} page ---\n{await page_state(user)}\n{await user.debug()}")
                print(f"--- {user.name} console ---\n" + "\n".join(user.console[-30:]))
            raise
        finally:
            for user in users:
                with contextlib.suppress(Exception):
                    await user.browser.close()
