"""Presence in the lobby after a 1:1 call (issue 16 item 4): once the call is hung up, each
person's lobby lists the other as online again (their Call button usable), without a reload."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import pytest

from producers.kafka import EventProducer
from producers.sessions import CallAccepted, PresenceChanged
from producers.topics import Topics
from tests.e2e.browser import User
from tests.e2e.test_browser_calls import (
    connect_call,
    open_lobby,
    start_calls_stack,
    token_of,
    two_users,
    until_state,
)
from tests.harness import Infra, Service, read_events, wait_for


async def listed(user: User, other_id: str) -> dict[str, Any]:
    """How ``user``'s lobby shows ``other_id`` (status, Call button) and what presence it holds."""
    result: dict[str, Any] = await user.page.evaluate(
        """(other) => {
        const li = document.querySelector(`#people-list li[data-user="${other}"]`);
        return { status: li ? li.dataset.status : null,
                 callEnabled: li ? !li.querySelector('button.call').disabled : false,
                 empty: !document.getElementById('people-empty').hidden,
                 known: window.lobbyPage.phone.users.get(other) || null };
    }""",
        other_id,
    )
    return result


@pytest.mark.timeout(300)
async def test_after_a_hang_up_both_lobbies_list_the_other_online(
    infra: Infra, topics: Topics, prefix: str, producer: EventProducer, services: list[Service], tmp_path: Path
) -> None:
    [base] = await start_calls_stack(infra, topics, prefix, producer, services, tmp_path)
    async with two_users() as (alice, bob):
        alice_id = await open_lobby(alice, base)
        bob_id = await open_lobby(bob, base)
        await connect_call(alice, bob, bob_id)
        # the call's private p2p room exists but is not in the public room list (issue 16 item 5)
        accepted = [
            e
            for e in await read_events(infra.kafka, topics.name("call.events"))
            if isinstance(e, CallAccepted) and e.by == bob_id
        ]
        assert len(accepted) == 1, accepted
        headers = {"Authorization": f"Bearer {await token_of(alice)}"}
        async with httpx.AsyncClient(base_url=base, headers=headers, timeout=15) as http:

            async def in_read_model() -> httpx.Response | None:
                r = await http.get(f"/v1/rooms/{accepted[0].room_id}")
                return r if r.status_code == 200 else None

            one = await wait_for(in_read_model, 15, "the call's room in the read model", interval=0.5)
            assert one.json()["type"] == "p2p", one.text
            listed_rooms = (await http.get("/v1/rooms")).json()
            assert accepted[0].room_id not in [r["room_id"] for r in listed_rooms], listed_rooms
        await alice.page.click("#hangup")
        for user in (alice, bob):
            await until_state(user, "idle", 15)
        pairs = ((alice, bob_id), (bob, alice_id))

        async def both_online() -> bool:
            for user, other in pairs:
                shown = await listed(user, other)
                if shown["status"] != "online" or not shown["callEnabled"] or shown["empty"]:
                    return False
            return True

        try:
            await wait_for(both_online, 20, "both lobbies listing the other online after the hang-up", interval=0.5)
        except AssertionError as exc:
            facts = [
                (e.user_id, e.status, e.occurred_at.isoformat())
                for e in await read_events(infra.kafka, topics.name("presence.facts"))
                if isinstance(e, PresenceChanged) and e.user_id in (alice_id, bob_id)
            ]
            shown = {u.name: await listed(u, o) for u, o in pairs}
            raise AssertionError(f"{exc}; lobbies {shown}; presence facts {facts}") from None
