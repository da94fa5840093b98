"""The quality agent: ``quality.samples`` + ``rtc.facts`` → layer, pause and dynacast decisions.

Its own consumer group (``<app_id>-quality``) on the driver, keyed by room id: both inputs
are co-partitioned with the room agent's topics. Two tables per room:

* ``quality``: the decision state (``streams/quality.py``), changed by node samples only,
  so replaying a room's samples gives the same ``QualityDecided`` facts, ids included;
* ``quality-rooms``: the room as its facts fold (``room_state.evolve``, the room agent's own
  function): who subscribes to what, which node hosts the room, where each peer's socket is.

Per sample: the decision's facts go first (``QualityDecided`` on ``quality.facts``, so their
ids depend on the sample alone), then ``SetLayer``/``SetPaused`` to the room's node and a
``quality`` notification to the subscriber. At the end of each batch, every room touched
works out dynacast: which encodings of each published video source some subscriber
receives; when that changes, an ``EncodingsChanged`` fact and an ``encodings`` notification
tell the publisher's client which to send.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from datetime import timedelta
from typing import Any

from aiokafka.structs import ConsumerRecord
from pydantic import ValidationError

from observability import metrics, tracing
from producers.envelope import Event
from producers.fields import SourceKind
from producers.media import EncodingsChanged, QualityDecided, QualitySample, SetLayer, SetPaused
from producers.rtc import Notification, SubscriptionAdded
from streams.batch import Batch
from streams.driver import DrivenAgent, Table
from streams.outputs import Outputs
from streams.quality import Change, QualityConfig, decide, new_state
from streams.room_state import RoomState, evolve

log = logging.getLogger(__name__)

LAYER_ORDER = ("high", "mid", "low")
SAMPLE_TAG = b'"type":"QualitySample"'


def resolve(layer: str, layers: Sequence[str]) -> str:
    """The encoding the node forwards for a requested layer (``forwarder.Source.resolve``)."""
    if layer in layers:
        return layer
    if "single" in layers:
        return "single"
    start = LAYER_ORDER.index(layer) if layer in LAYER_ORDER else 0
    for candidate in LAYER_ORDER[start:] + LAYER_ORDER[:start][::-1]:
        if candidate in layers:
            return candidate
    return layer


def decision_outputs(sample: QualitySample, changes: list[Change]) -> Outputs:
    """The facts of a sample's decisions, first in its outputs (ids from the sample alone)."""
    out = Outputs(sample, sample.room_id, sample.occurred_at)
    for c in changes:
        out.add(
            "quality.facts",
            QualityDecided,
            room_id=sample.room_id,
            peer_id=c.peer_id,
            source_id=c.source_id,
            layer=c.layer,
            loss_pct=c.loss_pct,
            previous=c.previous,
            reason=c.reason,
            publisher_peer_id=c.publisher_peer_id,
            level=c.level,
            bandwidth_kbps=c.bandwidth_kbps,
        )
    return out


def replay(samples: Iterable[Event], config: QualityConfig | None = None) -> list[QualityDecided]:
    """Every ``QualityDecided`` the agent takes for these samples (in log order per room)."""
    config = config or QualityConfig()
    states: dict[str, dict[str, Any]] = {}
    facts: list[QualityDecided] = []
    for sample in samples:
        if isinstance(sample, QualitySample):
            changes = decide(states.setdefault(sample.room_id, new_state()), sample, config)
            if changes:
                facts += [o.event for o in decision_outputs(sample, changes).items]  # type: ignore[misc]
    return facts


def capped(layer: str, room: RoomState, peer_id: str, source_id: str) -> str:
    """What the node should forward: the quality layer, or the layer the subscriber asked for
    (``subscribe`` with a layer) if that is lower."""
    peer = room.peers.get(peer_id)
    requested = peer.subscriptions.get(source_id) if peer is not None else None
    if requested in LAYER_ORDER and layer in LAYER_ORDER and LAYER_ORDER.index(requested) > LAYER_ORDER.index(layer):
        return str(requested)
    return layer


def act(out: Outputs, room: RoomState | None, changes: list[Change], command_ttl_s: float) -> None:
    """Commands to the node and notices to the subscribers, after the facts."""
    if room is None:
        return
    deadline = out.at + timedelta(seconds=command_ttl_s)
    for c in changes:
        if room.node_id is not None:
            node = {
                "node_id": room.node_id,
                "room_id": room.room_id,
                "deadline": deadline,
                "peer_id": c.peer_id,
                "source_id": c.source_id,
            }
            if c.layer == "paused":
                out.add("media.commands", SetPaused, paused=True, **node)
            else:
                out.add("media.commands", SetLayer, layer=capped(c.layer, room, c.peer_id, c.source_id), **node)
                if c.previous == "paused":
                    out.add("media.commands", SetPaused, paused=False, **node)
        peer = room.peers.get(c.peer_id)
        if peer is not None:
            out.add(
                "gateway.notifications",
                Notification,
                gateway_id=peer.gateway_id,
                session_id=peer.session_id,
                room_id=room.room_id,
                peer_id=peer.peer_id,
                message={
                    "type": "quality",
                    "peer_id": c.publisher_peer_id,
                    "source_id": c.source_id,
                    "layer": c.layer,
                    "previous": c.previous,
                    "level": c.level,
                    "reason": c.reason,
                    "loss_pct": c.loss_pct,
                },
            )


def needed_encodings(room: RoomState, state: dict[str, Any]) -> dict[tuple[str, str], list[str]]:
    """Per (publisher, video source) whose encodings are known: the encodings some
    subscriber receives now (its quality layer, capped by the layer it asked for)."""
    out: dict[tuple[str, str], list[str]] = {}
    for publisher in room.peers.values():
        for source_id in publisher.source_ids():
            kinds = {t.kind for t in publisher.tracks.values() if t.source_id == source_id}
            layers = state.get("src", {}).get(source_id)
            if not layers or SourceKind.MICROPHONE in kinds:
                continue
            needed = set()
            for sub in room.peers.values():
                requested = sub.subscriptions.get(source_id)
                if sub.peer_id == publisher.peer_id or requested is None:
                    continue
                window = state["w"].get(f"{sub.peer_id}|{source_id}")
                layer = window["layer"] if window is not None else requested
                if layer == "paused":
                    continue
                if (
                    requested in LAYER_ORDER
                    and layer in LAYER_ORDER
                    and LAYER_ORDER.index(requested) > LAYER_ORDER.index(layer)
                ):
                    layer = requested
                needed.add(resolve(layer, layers))
            out[(publisher.peer_id, source_id)] = [layer for layer in (*LAYER_ORDER, "single") if layer in needed]
    return out


def dynacast(out: Outputs, room: RoomState, state: dict[str, Any]) -> bool:
    """Tell publishers which encodings to send where that changed; whether it did."""
    sent: dict[str, list[str]] = state["enc"]
    changed = False
    for (publisher_id, source_id), active in needed_encodings(room, state).items():
        key = f"{publisher_id}|{source_id}"
        layers = state["src"][source_id]
        if sent.get(key) == active or (key not in sent and sorted(active) == sorted(layers)):
            sent.setdefault(key, active)  # a new source sends everything until told otherwise
            continue
        sent[key] = active
        changed = True
        publisher = room.peers[publisher_id]
        reason = "no-subscriber" if not active else "layers"
        out.add(
            "quality.facts",
            EncodingsChanged,
            room_id=room.room_id,
            peer_id=publisher_id,
            source_id=source_id,
            active=active,
            reason=reason,
        )
        out.add(
            "gateway.notifications",
            Notification,
            gateway_id=publisher.gateway_id,
            session_id=publisher.session_id,
            room_id=room.room_id,
            peer_id=publisher_id,
            message={"type": "encodings", "source_id": source_id, "active": active},
        )
    for key in [k for k in sent if k.split("|", 1)[0] not in room.peers]:
        del sent[key]
    return changed


class QualityAgent:
    def __init__(
        self,
        windows: Table,
        rooms: Table,
        config: QualityConfig,
        command_ttl_s: float,
        samples_topic: str,
        facts_topic: str,
    ) -> None:
        self.windows = windows
        self.rooms = rooms
        self.config = config
        self.command_ttl_s = command_ttl_s
        self.samples_topic = samples_topic
        self.facts_topic = facts_topic

    def driven(self, worker: Any) -> DrivenAgent:
        async def handle(records: Sequence[ConsumerRecord]) -> Batch:
            batch: Batch = worker.batch()
            touched: dict[str, tuple[Event, int]] = {}
            traced = tracing.enabled()
            for group in [[r] for r in records] if traced else [records]:  # traced: one span per input
                for partition, event in await self.parsed(worker, batch, group):
                    room_id = getattr(event, "room_id", None)
                    if room_id is None:
                        continue
                    with tracing.consumed(f"quality decide {event.type}", group[0].headers if traced else None, event):
                        if await self.on_input(batch, event, partition):
                            touched[room_id] = (event, partition)
            for room_id, (cause, partition) in touched.items():
                await self.on_batch_end(batch, room_id, cause, partition)
            return batch

        return DrivenAgent("quality", [self.samples_topic, self.facts_topic], [self.windows, self.rooms], handle)

    async def parsed(self, worker: Any, batch: Batch, records: Sequence[ConsumerRecord]) -> list[tuple[int, Event]]:
        """Samples parse as ``QualitySample`` straight away (the catalog's union costs twice as
        much); anything else, or a sample that does not validate, goes the worker's way
        (the catalog, dead letters)."""
        out: list[tuple[int, Event]] = []
        fast = 0
        for record in records:
            value = record.value
            if value is not None and record.topic == self.samples_topic and SAMPLE_TAG in value:
                try:
                    out.append((record.partition, QualitySample.model_validate_json(value)))
                    fast += 1
                    continue
                except ValidationError:
                    pass
            out.extend(await worker.parsed(batch, [record]))
        metrics.STREAMS_INPUTS.labels(self.samples_topic, "QualitySample").inc(fast)
        return out

    def state(self, batch: Batch, room_id: str) -> dict[str, Any]:
        raw: dict[str, Any] | None = batch.get(self.windows, room_id)
        return raw if raw is not None else new_state()

    def room(self, batch: Batch, room_id: str) -> RoomState | None:
        raw = batch.get(self.rooms, room_id)
        if raw is None:
            return None
        return raw if isinstance(raw, RoomState) else RoomState.model_validate(raw)

    async def on_input(self, batch: Batch, event: Event, partition: int) -> bool:
        """Handle one input; whether dynacast should look at its room again."""
        room_id = str(getattr(event, "room_id"))  # noqa: B009
        if isinstance(event, QualitySample):
            state = self.state(batch, room_id)
            known = event.source_id in state["src"]
            changes = decide(state, event, self.config)
            batch.put(self.windows, room_id, partition, state)
            if not changes:
                return not known and event.source_id in state["src"]  # dynacast can now act on it
            out = decision_outputs(event, changes)
            act(out, self.room(batch, room_id), changes, self.command_ttl_s)
            await batch.emit(out.items)
            metrics.STREAMS_QUALITY_DECISIONS.inc(len(changes))
            return True
        before = self.room(batch, room_id)
        after = evolve(before, event)
        if after is before or after is None:
            return False
        if isinstance(event, SubscriptionAdded) and after.node_id is not None:
            await self.keep_cap(batch, after, event)
        if not after.is_open:
            batch.put(self.rooms, room_id, partition, None)
            batch.put(self.windows, room_id, partition, None)
            return False
        batch.put(self.rooms, room_id, partition, after)
        return True

    async def keep_cap(self, batch: Batch, room: RoomState, added: SubscriptionAdded) -> None:
        """A subscriber asked for a layer (the room agent told the node to forward it): if its
        quality window holds it lower, or paused, tell the node again, after that command."""
        window = self.state(batch, room.room_id)["w"].get(f"{added.peer_id}|{added.source_id}")
        if window is None or window["layer"] == "high":
            return
        out = Outputs(added, f"{room.room_id}:quality", added.occurred_at)
        node = {
            "node_id": room.node_id,
            "room_id": room.room_id,
            "peer_id": added.peer_id,
            "source_id": added.source_id,
            "deadline": added.occurred_at + timedelta(seconds=self.command_ttl_s),
        }
        if window["layer"] == "paused":
            out.add("media.commands", SetPaused, paused=True, **node)
        else:
            out.add(
                "media.commands", SetLayer, layer=capped(window["layer"], room, added.peer_id, added.source_id), **node
            )
        await batch.emit(out.items)

    async def on_batch_end(self, batch: Batch, room_id: str, cause: Event, partition: int) -> None:
        room = self.room(batch, room_id)
        if room is None:
            return
        state = self.state(batch, room_id)
        out = Outputs(cause, f"{room_id}:dynacast", cause.occurred_at)
        if dynacast(out, room, state):
            batch.put(self.windows, room_id, partition, state)
            await batch.emit(out.items)
