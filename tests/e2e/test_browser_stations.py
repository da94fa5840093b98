"""The stations page in real Chromium against the real stack and real edge agents: the
registry pushed live (online, then offline within 10 s of a SIGKILL, online again after a
restart, without a reload), site and cameras shown, and a gate button that follows its
command to Done while the simulated gate opens exactly once."""

from __future__ import annotations

import time
from pathlib import Path

from producers.kafka import EventProducer
from producers.topics import Topics
from tests.e2e.browser import User, chromium, open_user, start_web_stack
from tests.harness import Infra, Service, wait_for
from tests.stations_stack import edge_service, gate_openings, station_token, write_config


async def row(user: User, station: str) -> dict[str, object] | None:
    result: dict[str, object] | None = await user.page.evaluate(
        """(id) => {
        const tr = document.querySelector(`#stations tr[data-station="${id}"]`);
        if (!tr) return null;
        const cells = tr.querySelectorAll('td');
        return { status: tr.dataset.status, site: cells[1].textContent,
                 cameras: [...tr.querySelectorAll('button.camera')].map((b) => b.dataset.camera),
                 gate: tr.querySelector('.gate-status')?.dataset.status ?? null,
                 gateText: tr.querySelector('.gate-status')?.textContent ?? '' };
    }""",
        station,
    )
    return result


async def test_stations_page_live_registry_and_gate(
    infra: Infra, topics: Topics, prefix: str, producer: EventProducer, services: list[Service], tmp_path: Path
) -> None:
    _, base = await start_web_stack(infra, topics, prefix, producer, services, tmp_path)
    station = f"bj_{prefix.strip('-')[-6:]}"
    token = await station_token(base, station)
    state = tmp_path / "state"
    config = write_config(
        tmp_path / "edge.toml",
        station_id=station,
        api=base,
        token=token,
        state_dir=state,
        cameras=(("cam1", "rtsp://127.0.0.1:1/none"),),
    )
    async with chromium() as pw:
        user = await open_user(pw, "Olga", 1)
        try:
            await user.sign_in(base)
            await user.page.goto(f"{base}/web/stations.html")
            await user.page.wait_for_function("document.getElementById('feed').textContent.startsWith('Live')")
            agent = edge_service(config, tmp_path).start()
            services.append(agent)

            async def shown(status: str) -> dict[str, object] | None:
                r = await row(user, station)
                return r if r is not None and r["status"] == status else None

            online = await wait_for(lambda: shown("online"), 30, "the station online on the page")
            assert online["site"] == "Beijing" and online["cameras"] == ["cam1"], online

            await user.page.click(f'#stations tr[data-station="{station}"] button.open-gate')
            done = await wait_for(lambda: _gate_final(user, station), 20, "the gate button's outcome")
            assert done["gate"] == "succeeded" and "Done" in str(done["gateText"]), done
            assert len(gate_openings(state)) == 1

            agent.kill()
            killed = time.monotonic()
            await wait_for(lambda: shown("offline"), 12, "the station offline on the page", interval=0.2)
            assert time.monotonic() - killed < 10.5
            again = edge_service(config, tmp_path, "edge2").start()
            services.append(again)
            await wait_for(lambda: shown("online"), 30, "the station online again on the page")
            assert len(gate_openings(state)) == 1
            errors = [c for c in user.console if c.startswith("pageerror")]
            assert not errors, errors
        finally:
            await user.browser.close()


async def _gate_final(user: User, station: str) -> dict[str, object] | None:
    r = await row(user, station)
    return r if r is not None and r["gate"] in ("succeeded", "failed", "timed-out", "rejected") else None
