"""The station agents, wired into the streams worker (``install``):

- ``stations``: ``station.events`` → station table → registry facts, ``StationCommand``
  (``station.commands``), command/stream notices (``streams/stations.py``); the ticker
  ticks the partitions of ``station.events`` where a heartbeat, command or idle deadline is due;
- ``station-viewers``: ``rtc.facts`` → viewers of each ``station:*`` room →
  ``StationViewersChanged`` (``streams/stations_viewers.py``);
- ``station-projection``: ``station.events`` + ``station.commands`` → Postgres
  ``stations`` / ``station_commands`` (``streams/stations_projection.py``).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

from aiokafka.structs import ConsumerRecord

from producers.catalog import decode
from producers.errors import DecodeError
from streams import stations as station_decision
from streams import stations_viewers as viewers_decision
from streams.driver import DrivenAgent, Projected, Table
from streams.keyed import KeyedAgent, by_field
from streams.stations_projection import project_stations

if TYPE_CHECKING:
    from streams.app import Worker


def config_of(worker: Worker) -> station_decision.StationConfig:
    s = worker.settings
    return station_decision.StationConfig(
        missed_heartbeats=s.station_missed_heartbeats,
        command_timeout_s=s.station_command_timeout_s,
        stream_start_timeout_s=s.station_stream_start_timeout_s,
        idle_stop_s=s.station_idle_stop_s,
    )


def install(worker: Worker, table: Callable[[str, str], Table]) -> None:
    config = config_of(worker)
    stations = KeyedAgent(
        station_decision.StationState,
        table("stations", "station.events"),
        key_of=by_field("station_id"),
        decide=lambda state, event, key: station_decision.handle(state, event, config, station_id=key),
        deadline=lambda state: station_decision.next_deadline(state, config),
    )
    worker.keyed_agent("stations", ["station.events"], stations)
    viewers = KeyedAgent(
        viewers_decision.RoomViewers,
        table("station-viewers", "rtc.facts"),
        key_of=lambda e: (
            room
            if (room := str(getattr(e, "room_id", "") or "")) and viewers_decision.parse_room(room) is not None
            else None
        ),
        decide=lambda state, event, key: viewers_decision.handle(state, event, key),
        deadline=lambda state: None,
    )
    worker.keyed_agent("station-viewers", ["rtc.facts"], viewers)
    if not worker.settings.project_to_postgres:
        return

    async def project(records: Sequence[ConsumerRecord]) -> Projected:
        events = []
        for record in records:
            try:
                events.append(decode(record.value))
            except DecodeError:
                continue  # the stations agent dead-letters station.events
        await project_stations(worker._engine(), events)
        return Projected()

    worker.driver.agents.append(
        DrivenAgent(
            "station-projection",
            [worker.topics.name(t) for t in ("station.events", "station.commands")],
            [],
            project,
        )
    )
