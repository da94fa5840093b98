"""The node's command loop: commands from streams in, results back on the log.

The node reads only the ``media.commands`` partition its id maps to, ignores commands
addressed to other nodes and commands past their deadline, runs each command id at
most once, and reports what happened (including failures) on ``media.results``.
Commands of one peer run in order; different peers run concurrently. With tracing on, a
command runs in a span of the trace its record's ``traceparent`` carries, so the results it
writes (``PublisherAnswered``, and ``TrackStarted``/``SubscriberOffered`` when they come) are its
children.
"""

from __future__ import annotations

import asyncio
import logging
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from typing import Any

from opentelemetry.context import Context

from media_node.errors import failure_code
from media_node.peers import Peers, PeerSession
from observability import metrics, tracing
from producers.envelope import Event, utcnow
from producers.fields import TrackInfo
from producers.kafka import EventConsumer, EventProducer
from producers.media import (
    AddSubscription,
    ApplySubscriberAnswer,
    ClosePeer,
    CloseRoom,
    CommandFailed,
    NodeCommand,
    OfferedSource,
    OpenPublisher,
    OpenSubscriber,
    PublisherAnswered,
    RemoveSource,
    RemoveSubscription,
    SetLayer,
    SetPaused,
    SubscriberOffered,
    TrackStarted,
)
from producers.topics import Topics

log = logging.getLogger(__name__)

SEEN_LIMIT = 10_000


class CommandLoop:
    """The executor's discipline, whatever executes: commands addressed to ``node_id`` only,
    each command id at most once, none past its deadline, one lane per peer (in order),
    every failure reported as ``CommandFailed`` on ``media.results``. Subclasses fill
    ``handlers`` (``CommandRunner`` below; the benchmark's stock node, ``bench/sfu_stock_node.py``)."""

    def __init__(self, node_id: str, producer: EventProducer, topics: Topics) -> None:
        self.node_id = node_id
        self._producer = producer
        self._results = topics.name("media.results")
        self._seen: OrderedDict[str, None] = OrderedDict()
        self._queues: dict[str, asyncio.Queue[tuple[NodeCommand, Context | None]]] = {}
        self._workers: dict[str, asyncio.Task[None]] = {}
        self.handlers: dict[type[NodeCommand], Callable[[Any], Awaitable[None]]] = {}

    async def run(self, consumer: EventConsumer) -> None:
        async for received in consumer:
            command = received.event
            if isinstance(command, NodeCommand):
                self.accept(command, tracing.context_of(received.headers))

    def accept(self, command: NodeCommand, trace: Context | None = None) -> None:
        """Queue ``command`` in its lane (``trace``: the context it runs in, tracing on)."""
        if command.node_id != self.node_id:
            return
        key = str(command.event_id)
        if key in self._seen:
            metrics.MEDIA_COMMANDS.labels(command.type, "duplicate").inc()
            return
        self._seen[key] = None
        while len(self._seen) > SEEN_LIMIT:
            self._seen.popitem(last=False)
        if command.deadline < utcnow():
            metrics.MEDIA_COMMANDS.labels(command.type, "expired").inc()
            log.info("expired command ignored", extra={"event_id": key, "room_id": command.room_id})
            return
        lane = getattr(command, "peer_id", None) or f"room:{command.room_id}"
        queue = self._queues.get(lane)
        if queue is None:
            queue = self._queues[lane] = asyncio.Queue()
            self._workers[lane] = asyncio.create_task(self._lane(queue))
        queue.put_nowait((command, trace))

    async def _lane(self, queue: asyncio.Queue[tuple[NodeCommand, Context | None]]) -> None:
        while True:
            command, trace = await queue.get()
            with tracing.span(f"node {command.type}", parent=trace, root=trace is None, event=command):
                await self._run(command)  # its results, a failure too, are the span's children

    async def _run(self, command: NodeCommand) -> None:
        try:
            await self.handlers.get(type(command), self.unhandled)(command)
            metrics.MEDIA_COMMANDS.labels(command.type, "ok").inc()
        except Exception as exc:  # noqa: BLE001 - report every failure as a result
            tracing.failed(exc)
            metrics.MEDIA_COMMANDS.labels(command.type, "failed").inc()
            log.exception("command failed", extra={"room_id": command.room_id, "event_id": str(command.event_id)})
            await self._emit(
                CommandFailed.caused_by(
                    command,
                    room_id=command.room_id,
                    node_id=self.node_id,
                    command_type=command.type,
                    peer_id=getattr(command, "peer_id", None),
                    code=failure_code(exc),
                    message=f"{type(exc).__name__}: {exc}"[:500],
                )
            )

    async def unhandled(self, command: NodeCommand) -> None:
        """A command this executor has no handler for: reported as failed."""
        raise KeyError(command.type)

    async def _emit(self, event: Event) -> None:
        await self._producer.send(self._results, event)


class CommandRunner(CommandLoop):
    """The media node's commands, run on its peers (``media_node/peers.py``)."""

    def __init__(self, node_id: str, producer: EventProducer, topics: Topics, announced_address: str = "") -> None:
        super().__init__(node_id, producer, topics)
        self.peers = Peers(self._track_started, self._offer, announced_address)
        #: what caused a later result: the command, the result's index, its trace (tracing on)
        self._causes: dict[str, tuple[NodeCommand, int, Context | None]] = {}
        self.handlers = {
            OpenPublisher: self.open_publisher,
            OpenSubscriber: self.open_subscriber,
            AddSubscription: self.add_subscription,
            ApplySubscriberAnswer: self.apply_answer,
            RemoveSubscription: self.remove_subscription,
            SetLayer: self.set_layer,
            SetPaused: self.set_paused,
            ClosePeer: self.close_peer,
            CloseRoom: self.close_room,
            RemoveSource: self.remove_source,
        }

    # --- handlers -----------------------------------------------------------------

    async def open_publisher(self, c: OpenPublisher) -> None:
        for index, track in enumerate(c.tracks, start=1):  # track-started results are caused by this command
            self._causes[f"{c.peer_id}/{track.source_id}/{track.layer}"] = (c, index, tracing.current())
        sdp = await self.peers.open_publisher(c.room_id, c.peer_id, c.sdp, c.tracks)
        await self._emit(
            PublisherAnswered.caused_by(c, room_id=c.room_id, peer_id=c.peer_id, node_id=self.node_id, sdp=sdp)
        )

    async def open_subscriber(self, c: OpenSubscriber) -> None:
        self.peers.session(c.room_id, c.peer_id)

    async def add_subscription(self, c: AddSubscription) -> None:
        self._causes[f"offer/{c.peer_id}"] = (c, 0, tracing.current())
        source = self.peers.sources.get((c.publisher_peer_id, c.source_id))
        if c.from_start and source is not None:
            source.from_start_for(c.peer_id)
        await self.peers.add_subscription(c.room_id, c.peer_id, c.publisher_peer_id, c.source_id, c.layer)

    async def apply_answer(self, c: ApplySubscriberAnswer) -> None:
        await self.peers.apply_answer(c.room_id, c.peer_id, c.sdp)

    async def remove_subscription(self, c: RemoveSubscription) -> None:
        await self.peers.remove_subscription(c.peer_id, c.source_id)

    async def remove_source(self, c: RemoveSource) -> None:
        await self.peers.remove_source(c.peer_id, c.source_id)

    async def set_layer(self, c: SetLayer) -> None:
        await self.peers.set_layer(c.peer_id, c.source_id, c.layer)

    async def set_paused(self, c: SetPaused) -> None:
        await self.peers.set_paused(c.peer_id, c.source_id, c.paused)

    async def close_peer(self, c: ClosePeer) -> None:
        await self.peers.close_peer(c.peer_id)

    async def close_room(self, c: CloseRoom) -> None:
        await self.peers.close_room(c.room_id)

    # --- callbacks from the peers ---------------------------------------------------

    async def _track_started(self, session: PeerSession, track: TrackInfo) -> None:
        cause = self._causes.pop(f"{session.peer_id}/{track.source_id}/{track.layer}", None)
        fields: dict[str, Any] = dict(
            room_id=session.room_id, peer_id=session.peer_id, node_id=self.node_id, track=track
        )
        # the track started now, not when the publish was decided: streams take the deadlines of
        # the subscriptions they command from this time (a screen shared 20 s after the publisher
        # connection was negotiated used to carry that older time, and its subscriptions expired)
        fields["occurred_at"] = utcnow()
        event = TrackStarted.caused_by(cause[0], cause[1], **fields) if cause else TrackStarted.new(**fields)
        with tracing.span("node track started", parent=cause[2] if cause else None, event=event):
            await self._emit(event)

    async def _offer(self, session: PeerSession, sdp: str, sources: list[OfferedSource]) -> None:
        cause = self._causes.get(f"offer/{session.peer_id}")
        fields: dict[str, Any] = dict(
            room_id=session.room_id, peer_id=session.peer_id, node_id=self.node_id, sdp=sdp, sources=sources
        )
        # one offer can carry several subscriptions: its id must not collide with an earlier offer's
        event = SubscriberOffered.new(correlation_id=cause[0].correlation_id if cause else None, **fields)
        if cause is not None:
            event = event.model_copy(update={"causation_id": cause[0].event_id})
        with tracing.span("node subscriber offer", parent=cause[2] if cause else None, event=event):
            await self._emit(event)
