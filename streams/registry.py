"""The media-node registry and room placement: ``handle(state, event, config)``.

Pure. One registry state for the whole cluster lives on the single partition of
``media.nodes`` (heartbeats are a few per second per node). A node is alive while its
heartbeats keep coming; a ``Tick`` later than ``last_seen + node_timeout`` marks it
dead and its rooms are re-placed. The timeout is ``node_timeout`` or two of the node's
promised heartbeat intervals, whichever is longer (an idle node beats seldom); the
registry's deadline (``next_deadline``) is when the ticker next ticks ``media.nodes``.
Placement picks the least-loaded live node: forwarded packets/s from its last heartbeat,
then peers, then rooms placed on it, ties broken by node id.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from pydantic import BaseModel, ConfigDict, Field

from producers.envelope import Event
from producers.fields import NodeLoad
from producers.media import (
    NodeHeartbeat,
    NodeMarkedAlive,
    NodeMarkedDead,
    NodeStopped,
    PlacementRequested,
    RoomReleased,
)
from producers.rtc import RoomPlaced, Tick
from streams.outputs import Outputs

REGISTRY_KEY = "registry"


@dataclass(frozen=True)
class RegistryConfig:
    node_timeout_s: float = 5.0


class NodeInfo(BaseModel):
    model_config = ConfigDict(extra="ignore")

    node_id: str
    alive: bool = True
    address: str = ""
    started_at: datetime
    last_seen: datetime
    load: NodeLoad = Field(default_factory=NodeLoad)
    #: The node's promised heartbeat interval from its last heartbeat (None: not said).
    interval_s: float | None = None

    def timeout(self, config: RegistryConfig) -> timedelta:
        """How long without a heartbeat makes this node dead: the configured timeout, or two
        of its promised intervals if longer (an idle node beats seldom, docs/events.md)."""
        return timedelta(seconds=max(config.node_timeout_s, 2 * (self.interval_s or 0.0)))


class RegistryState(BaseModel):
    model_config = ConfigDict(extra="ignore")

    nodes: dict[str, NodeInfo] = Field(default_factory=dict)
    #: room id -> node id, or None while no live node exists.
    rooms: dict[str, str | None] = Field(default_factory=dict)

    def live(self) -> list[NodeInfo]:
        return [n for n in self.nodes.values() if n.alive]

    def rooms_on(self, node_id: str) -> list[str]:
        return sorted(r for r, n in self.rooms.items() if n == node_id)


def choose_node(state: RegistryState) -> str | None:
    """The least-loaded live node, or None."""
    counts: dict[str, int] = {}
    for node in state.rooms.values():
        if node is not None:
            counts[node] = counts.get(node, 0) + 1
    live = state.live()
    if not live:
        return None
    best = min(live, key=lambda n: (n.load.packets_per_s, n.load.peers, counts.get(n.node_id, 0), n.node_id))
    return best.node_id


def _place(state: RegistryState, out: Outputs, room_id: str, previous: str | None, reason: str) -> None:
    node_id = choose_node(state)
    state.rooms[room_id] = node_id
    if node_id is not None:
        out.add("rtc.intents", RoomPlaced, room_id=room_id, node_id=node_id, previous_node_id=previous, reason=reason)


def _mark_dead(state: RegistryState, out: Outputs, node: NodeInfo, reason: str) -> None:
    node.alive = False
    out.add("node.facts", NodeMarkedDead, node_id=node.node_id, reason=reason, last_seen_at=node.last_seen)
    for room_id in state.rooms_on(node.node_id):
        _place(state, out, room_id, node.node_id, "node-failed")


def handle(
    state: RegistryState | None,
    event: Event,
    config: RegistryConfig,
) -> tuple[RegistryState, Outputs]:
    state = state.model_copy(deep=True) if state is not None else RegistryState()
    at = event.now if isinstance(event, Tick) else event.occurred_at
    out = Outputs(event, REGISTRY_KEY, at)
    if isinstance(event, NodeHeartbeat):
        node = state.nodes.get(event.node_id)
        was_alive = node is not None and node.alive
        state.nodes[event.node_id] = NodeInfo(
            node_id=event.node_id,
            alive=True,
            address=event.address,
            started_at=event.started_at,
            last_seen=event.occurred_at,
            load=event.load,
            interval_s=event.interval_s,
        )
        if not was_alive:
            out.add("node.facts", NodeMarkedAlive, node_id=event.node_id, address=event.address)
            for room_id in sorted(r for r, n in state.rooms.items() if n is None):
                _place(state, out, room_id, None, "node-available")
    elif isinstance(event, NodeStopped):
        node = state.nodes.get(event.node_id)
        if node is not None and node.alive:
            _mark_dead(state, out, node, "stopped")
    elif isinstance(event, PlacementRequested):
        current = state.rooms.get(event.room_id)
        if current is not None and state.nodes[current].alive:
            out.add("rtc.intents", RoomPlaced, room_id=event.room_id, node_id=current, reason="initial")
        else:
            _place(state, out, event.room_id, current, "initial")
    elif isinstance(event, RoomReleased):
        state.rooms.pop(event.room_id, None)
    elif isinstance(event, Tick):
        for node in sorted(state.live(), key=lambda n: n.node_id):
            if event.now - node.last_seen >= node.timeout(config):
                _mark_dead(state, out, node, "heartbeat-timeout")
    return state, out


def next_deadline(state: RegistryState | None, config: RegistryConfig) -> datetime | None:
    """When a tick may next change the registry: the earliest heartbeat timeout of a live node."""
    if state is None:
        return None
    return min((n.last_seen + n.timeout(config) for n in state.live()), default=None)
