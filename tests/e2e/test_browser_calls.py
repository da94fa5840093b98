"""1:1 calls between real Chromium pages (the lobby's people list, call button and
incoming-call dialog): accept → a direct browser-to-browser connection with frames both
ways, hang-up ends both, and the invite, accept and end are facts on the log; a
relay-only call goes through coturn (and fails with a wrong TURN secret); an unanswered
call times out after 30 s by streams' decision; the 11th attempt in a minute is refused
across two gateways. Plus an SFU room page that outlives the gateway it was connected to."""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from producers.kafka import EventProducer
from producers.sessions import CallAccepted, CallEnded, CallInvited, CallRefused, CallTimedOut
from producers.topics import Topics
from tests.e2e.browser import ARTIFACTS, PythonParticipant, User, chromium, open_user
from tests.e2e.tcp_proxy import TcpProxy
from tests.harness import (
    Infra,
    Service,
    api_service,
    free_port,
    http_ready,
    mint_token,
    node_service,
    read_events,
    streams_ready,
    streams_service,
    unique,
    wait_for,
)

ALICE, BOB = 31, 32  # the source codes in each browser's frames


async def start_calls_stack(
    infra: Infra,
    topics: Topics,
    prefix: str,
    producer: EventProducer,
    services: list[Service],
    log_dir: Path,
    gateways: int = 1,
    api_settings: list[dict[str, str]] | None = None,
    **streams_settings: Any,
) -> list[str]:
    """streams and ``gateways`` api processes in development mode (no media node: p2p)."""
    worker = streams_service(infra, prefix, log_dir, node_timeout_s=3, **streams_settings).start()
    services.append(worker)
    bases = []
    for i in range(gateways):
        settings = (api_settings or [{}] * gateways)[i]
        port = free_port()
        api = api_service(infra, prefix, log_dir, port, name=f"api{i}", dev_mode="true", **settings).start()
        services.append(api)
        bases.append(f"http://127.0.0.1:{port}")
        await http_ready(f"{bases[-1]}/healthz", api, timeout=120)  # the machine may be busy
    await streams_ready(producer, infra, topics, worker)
    return bases


def turn_settings(secret: str | None = None) -> dict[str, str]:
    url, real = os.environ.get("TURN_URL"), os.environ.get("TURN_SECRET")
    if not url or not real:
        raise RuntimeError("TURN_URL/TURN_SECRET not set: run with scripts/test.sh (scripts/infra.sh starts coturn)")
    return {"turn_urls": url, "turn_secret": secret or real}


async def open_lobby(user: User, base: str, query: str = "") -> str:
    """Sign in, open the lobby (with ``query``), wait for presence; returns the user id."""
    await user.sign_in(base)
    if query:
        await user.page.goto(f"{base}/web/lobby.html?{query}")
    await user.page.wait_for_function("window.lobbyPage && window.lobbyPage.started === true", timeout=30_000)
    identity: str = await user.page.evaluate("JSON.parse(sessionStorage.getItem('roomlog.session')).identity")
    return identity


async def token_of(user: User) -> str:
    token: str = await user.page.evaluate("JSON.parse(sessionStorage.getItem('roomlog.session')).token")
    return token


async def click_call(user: User, callee: str) -> None:
    button = user.page.locator(f"#people-list li[data-user='{callee}'] button.call")
    await button.wait_for(timeout=30_000)
    await button.click()


async def state(user: User) -> str:
    result: str = await user.page.evaluate("window.lobbyPage.phone.state")
    return result


async def states(user: User) -> list[str]:
    result: list[str] = await user.page.evaluate("window.lobbyPage.states")
    return result


async def ringing(user: User) -> bool:
    result: bool = await user.page.evaluate(
        "window.lobbyPage.ringer.ringing && document.querySelector('#incoming').open "
        "&& document.querySelector('#incoming').dataset.ringing === 'true'"
    )
    return result


async def p2p_stats(user: User) -> dict[str, Any]:
    result: dict[str, Any] = await user.page.evaluate("window.lobbyPage.phone.stats()")
    return result


async def frames(user: User) -> int:
    stats = await p2p_stats(user)
    return sum(s["framesDecoded"] for s in stats["inbound"] if s["kind"] == "video")


async def remote_code(user: User) -> int | None:
    read = await user.page.evaluate("""async () => {
        const { readVideo } = await import('/web/sdk/pattern.js');
        return readVideo(document.querySelector('#remote-video'));
    }""")
    return None if read is None else int(read["code"])


async def until_state(user: User, wanted: str, timeout: float) -> None:
    async def reached() -> bool:
        return await state(user) == wanted

    try:
        await wait_for(reached, timeout, f"{user.name} in state {wanted}", interval=0.3)
    except AssertionError as exc:
        raise AssertionError(f"{exc}; states {await states(user)}; console {user.console[-20:]}") from None


async def call_events(infra: Infra, topics: Topics) -> list[Any]:
    return await read_events(infra.kafka, topics.name("call.events"))


@contextlib.asynccontextmanager
async def two_users(names: tuple[str, str] = ("Alice", "Bob")) -> Any:
    async with chromium() as pw:
        users = [
            await open_user(pw, f"{names[0]}-{unique('')[:6]}", ALICE),
            await open_user(pw, f"{names[1]}-{unique('')[:6]}", BOB),
        ]
        try:
            yield users
        except BaseException:
            for user in users:
                with contextlib.suppress(Exception):
                    await user.page.screenshot(path=str(ARTIFACTS / f"failed-call-{user.name}.png"))
                print(f"--- {user.name} console ---\n" + "\n".join(user.console[-40:]))
                with contextlib.suppress(Exception):
                    print(f"--- {user.name} states ---", await states(user), await p2p_stats(user))
            raise
        finally:
            for user in users:
                with contextlib.suppress(Exception):
                    await user.browser.close()


async def connect_call(alice: User, bob: User, bob_id: str) -> None:
    """Alice calls Bob from the lobby; Bob's dialog rings; he accepts; both connect."""
    await click_call(alice, bob_id)
    await wait_for(lambda: ringing(bob), 20, "Bob's incoming-call dialog ringing")
    await until_state(alice, "calling", 5)
    await bob.page.click("#accept")
    for user in (alice, bob):
        await until_state(user, "connected", 45)


@pytest.mark.timeout(300)
async def test_call_accepted_media_both_ways_then_hang_up(
    infra: Infra, topics: Topics, prefix: str, producer: EventProducer, services: list[Service], tmp_path: Path
) -> None:
    [base] = await start_calls_stack(infra, topics, prefix, producer, services, tmp_path)
    ARTIFACTS.mkdir(exist_ok=True)
    async with two_users() as (alice, bob):
        alice_id = await open_lobby(alice, base)
        bob_id = await open_lobby(bob, base)
        await connect_call(alice, bob, bob_id)
        assert (await states(alice))[:3] == ["calling", "connecting", "connected"], await states(alice)
        assert (await states(bob))[:3] == ["ringing", "connecting", "connected"], await states(bob)
        assert not await ringing(bob), "the dialog still rings after accepting"

        # each page decodes the other's camera (its code in the pattern), still advancing after 10 s
        await wait_for(lambda: remote_code(alice), 20, "Alice's remote video")
        assert await remote_code(alice) == BOB and await remote_code(bob) == ALICE
        await asyncio.sleep(10)
        before = {u.name: await frames(u) for u in (alice, bob)}
        await asyncio.sleep(2)
        after = {u.name: await frames(u) for u in (alice, bob)}
        for user in (alice, bob):
            assert after[user.name] > before[user.name] + 10, f"{user.name}: {before} -> {after}"
        for user in (alice, bob):
            stats = await p2p_stats(user)
            assert stats["connectionState"] == "connected" and stats["pair"]["state"] == "succeeded", stats
        await alice.page.screenshot(path=str(ARTIFACTS / "p2p-call.png"))

        # Alice hangs up: both pages go through Ending to Idle
        await alice.page.click("#hangup")
        for user in (alice, bob):
            await until_state(user, "idle", 15)
            assert (await states(user))[-2:] == ["ending", "idle"], await states(user)
        assert await bob.page.evaluate("window.lobbyPage.ended") == ["ended"]
        assert await bob.page.locator("#call").is_hidden()

    events = await call_events(infra, topics)
    invited = [e for e in events if isinstance(e, CallInvited) and e.caller == alice_id and e.callee == bob_id]
    assert len(invited) == 1, invited
    call_id = invited[0].call_id
    assert [e for e in events if isinstance(e, CallAccepted) and e.call_id == call_id]
    ended = [e for e in events if isinstance(e, CallEnded) and e.call_id == call_id]
    assert len(ended) == 1 and ended[0].by == alice_id, ended


@pytest.mark.timeout(400)
async def test_relay_only_call_goes_through_turn_and_fails_with_a_wrong_secret(
    infra: Infra, topics: Topics, prefix: str, producer: EventProducer, services: list[Service], tmp_path: Path
) -> None:
    good, bad = await start_calls_stack(
        infra,
        topics,
        prefix,
        producer,
        services,
        tmp_path,
        gateways=2,
        api_settings=[turn_settings(), turn_settings("not-the-turn-secret")],
    )
    async with two_users() as (alice, bob):
        await open_lobby(alice, good, "ice=relay")
        bob_id = await open_lobby(bob, good, "ice=relay")
        await connect_call(alice, bob, bob_id)
        for user in (alice, bob):

            async def relayed(user: User = user) -> bool:
                pair = (await p2p_stats(user))["pair"]
                return bool(pair) and pair["state"] == "succeeded"

            await wait_for(relayed, 15, f"{user.name}'s selected pair succeeding")
            stats = await p2p_stats(user)
            assert stats["pair"] == {"state": "succeeded", "localType": "relay", "remoteType": "relay"}, stats
        await wait_for(lambda: remote_code(alice), 20, "Alice's remote video through TURN")
        first = await frames(alice)
        await asyncio.sleep(3)
        assert await frames(alice) > first + 10, "frames through the relay stopped"
        assert await remote_code(bob) == ALICE
        await alice.page.click("#hangup")
        for user in (alice, bob):
            await until_state(user, "idle", 15)

    # the same call through a gateway whose TURN credentials coturn refuses: no connection
    async with two_users(("Carol", "Dave")) as (carol, dave):
        await open_lobby(carol, bad, "ice=relay")
        dave_id = await open_lobby(dave, bad, "ice=relay")
        await click_call(carol, dave_id)
        await wait_for(lambda: ringing(dave), 20, "Dave's dialog ringing")
        await dave.page.click("#accept")
        await until_state(carol, "connecting", 20)
        await asyncio.sleep(20)
        for user in (carol, dave):
            stats = await p2p_stats(user)
            assert stats["connectionState"] in ("new", "connecting", "failed"), stats
            assert not stats["pair"] or stats["pair"]["state"] != "succeeded", stats
            assert "connected" not in await states(user), await states(user)
            assert await frames(user) == 0


@pytest.mark.timeout(400)
async def test_unanswered_call_times_out_and_the_eleventh_attempt_is_refused(
    infra: Infra, topics: Topics, prefix: str, producer: EventProducer, services: list[Service], tmp_path: Path
) -> None:
    gw = await start_calls_stack(infra, topics, prefix, producer, services, tmp_path, gateways=2)
    async with two_users() as (alice, bob):
        alice_id = await open_lobby(alice, gw[0])
        bob_id = await open_lobby(bob, gw[1])
        await click_call(alice, bob_id)
        await wait_for(lambda: ringing(bob), 20, "Bob's dialog ringing")
        rang_at = asyncio.get_running_loop().time()

        # nobody answers: streams decide CallTimedOut after 30 s; both pages end, the ringing stops
        await until_state(alice, "idle", 45)
        waited = asyncio.get_running_loop().time() - rang_at
        assert 27 < waited < 42, f"ended after {waited:.1f} s"
        await until_state(bob, "idle", 5)
        assert not await ringing(bob) and not await bob.page.locator("#incoming").is_visible()
        assert await alice.page.evaluate("window.lobbyPage.ended") == ["timed_out"]
        assert await bob.page.evaluate("window.lobbyPage.ended") == ["timed_out"]
        events = await call_events(infra, topics)
        [invited] = [e for e in events if isinstance(e, CallInvited) and e.caller == alice_id]
        assert [e for e in events if isinstance(e, CallTimedOut) and e.call_id == invited.call_id]

        # attempts 2..10 through both gateways (to a user who is offline), the 11th from the page
        token = await token_of(alice)
        async with httpx.AsyncClient() as http:
            for attempt in range(2, 11):
                r = await http.post(
                    f"{gw[attempt % 2]}/v1/calls",
                    json={"callee": unique("nobody-")},
                    headers={"Authorization": f"Bearer {token}"},
                    timeout=15,
                )
                assert r.status_code == 201, (attempt, r.text)
            await click_call(alice, bob_id)
            await wait_for(lambda: alice.page.evaluate("window.lobbyPage.errors.length > 0"), 15, "the refusal")
            errors = await alice.page.evaluate("window.lobbyPage.errors")
            assert errors[-1]["code"] == "rate_limited", errors
            assert "Too many calls" in await alice.page.locator("#call-note").text_content()
            await until_state(alice, "idle", 5)
            # the 12th through the other gateway: the documented 429
            r = await http.post(
                f"{gw[1]}/v1/calls", json={"callee": bob_id}, headers={"Authorization": f"Bearer {token}"}, timeout=15
            )
            assert r.status_code == 429, r.text
            assert r.json()["error"]["code"] == "rate_limited" and int(r.headers["Retry-After"]) >= 1
        await asyncio.sleep(1)
        assert not await ringing(bob), "a refused call must not ring"
        refused = [
            e
            for e in await call_events(infra, topics)
            if isinstance(e, CallRefused) and e.reason == "rate_limited" and e.caller == alice_id
        ]
        assert len(refused) == 2, refused


GRACE_S = 6  # streams' disconnect grace for the gateway test (the default is 75 s)


@pytest.mark.timeout(400)
async def test_room_page_outlives_its_gateway_and_rejoins_after_the_grace(
    infra: Infra, topics: Topics, prefix: str, producer: EventProducer, services: list[Service], tmp_path: Path
) -> None:
    worker = streams_service(infra, prefix, tmp_path, node_timeout_s=3, disconnect_grace_s=GRACE_S).start()
    node = node_service(infra, prefix, tmp_path, f"{prefix}n0", stats_interval_s=1).start()
    ports = [free_port(), free_port()]
    gateways = [
        api_service(infra, prefix, tmp_path, port, name=f"api{i}", dev_mode="true").start()
        for i, port in enumerate(ports)
    ]
    services.extend([worker, node, *gateways])
    bases = [f"http://127.0.0.1:{port}" for port in ports]
    for base, api in zip(bases, gateways, strict=True):
        await http_ready(f"{base}/healthz", api, timeout=120)
    await streams_ready(producer, infra, topics, worker)
    proxy = await TcpProxy(ports[1]).start()  # the page reaches gateway 1 through a path the test can cut
    room_id = unique("gw-")
    urls = f"ws://127.0.0.1:{ports[0]}/v1/rtc,ws://127.0.0.1:{proxy.port}/v1/rtc"
    carol: PythonParticipant | None = None
    async with chromium() as pw:
        alice = await open_user(pw, f"Alice-{unique('')[:6]}", ALICE)
        try:
            await alice.sign_in(bases[0])
            await alice.ensure_room(room_id)
            await alice.page.goto(f"{bases[0]}/web/room.html?room={room_id}&gateways={urls}")
            alice_id = await alice.wait_published()
            token = await mint_token(bases[1], "carol", ["join", "publish", "subscribe"], room_id)
            carol = await PythonParticipant(
                f"ws://127.0.0.1:{ports[1]}/v1/rtc", token, room_id, "Carol", 33, tmp_path / "carol.log"
            ).start()
            await wait_for(lambda: decodes(alice, carol), 60, "Alice decoding Carol", interval=1)
            for kind in ("state", "reconnected"):
                await alice.record_messages(kind)

            # the gateway the page is connected to dies: Reconnecting, then Connected on the other, same peer
            gateways[0].kill()
            back = await wait_for(lambda: alice.messages("reconnected"), 30, "the page reconnected")
            assert back[-1]["peerId"] == alice_id and back[-1]["resumed"] is True, back
            assert back[-1]["url"].endswith(f":{proxy.port}/v1/rtc"), back
            seen = [m["state"] for m in await alice.messages("state")]
            assert seen[0] == "reconnecting" and seen[-1] == "connected", seen
            assert await alice.page.evaluate("window.roomlogPage.room.peerId") == alice_id
            assert await alice.page.locator("#state").get_attribute("data-state") == "connected"
            await wait_for(lambda: decodes(alice, carol), 20, "Alice still decoding Carol (no reload)", interval=1)
            await alice.page.click("#camera")  # a signaling action through the new gateway
            await wait_for(lambda: carol.peers.get(alice_id, {}).get("video_muted") is True, 15, "Carol sees the mute")
            await alice.page.click("#camera")
            await wait_for(lambda: carol.peers.get(alice_id, {}).get("video_muted") is False, 15, "... and unmute")

            # cut off for longer than the grace period: the peer is gone, the page joins afresh
            await alice.record_messages("reconnected")
            await proxy.block()
            await asyncio.sleep(GRACE_S + 5)
            await proxy.unblock()
            back = await wait_for(lambda: alice.messages("reconnected"), 60, "the page rejoined")
            new_id = back[-1]["peerId"]
            assert back[-1]["resumed"] is False and new_id != alice_id, back
            assert await alice.page.evaluate("window.roomlogPage.room.peerId") == new_id
            await wait_for(lambda: decodes(alice, carol), 60, "Alice decoding Carol after the rejoin", interval=1)
            rejoined_at = time.monotonic()
            await wait_for(
                lambda: carol.frames_since(ALICE, rejoined_at) > 10 and new_id in carol.peers,
                60,
                "Carol decoding Alice's new peer",
            )
        except BaseException:
            print(f"--- {alice.name} console ---\n" + "\n".join(alice.console[-40:]))
            with contextlib.suppress(Exception):
                print(f"--- {alice.name} connections ---\n{await alice.debug()}")
            raise
        finally:
            await proxy.close()
            if carol is not None:
                await carol.stop()
            with contextlib.suppress(Exception):
                await alice.browser.close()


async def decodes(user: User, other: PythonParticipant) -> bool:
    """``user``'s page decodes ``other``'s video: frames decoded advance over a second."""
    key = f"{other.peer_id}/"
    before = {k: v for k, v in (await user.frames_decoded()).items() if k.startswith(key)}
    await asyncio.sleep(1)
    after = {k: v for k, v in (await user.frames_decoded()).items() if k.startswith(key)}
    return any(after[k] > before.get(k, 0) + 3 for k in after)
