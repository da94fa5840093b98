"""The station decision: ``handle(state, event, config) -> (state, outputs)``, per station.

Reads ``station.events`` (keyed by station id): registrations and heartbeats from the
gateways, operator requests (``StreamRequested``, ``StationCommandRequested``), what the
edge agent reports (acks, completions, a stream that ended), viewer counts of the
station's rooms (``StationViewersChanged``, from ``streams/stations_viewers.py``) and ticks.

Decides:
- the registry: online on registration (``StationWentOnline``), offline after
  ``missed_heartbeats`` heartbeat intervals without one (``StationWentOffline``), online
  again when heartbeats come back on a live socket;
- commands: ``StationCommand`` with an id and a deadline, delivered to the socket holding
  the station (a ``command`` notification on its gateway); acks and completions are told
  to the operator who asked (``command`` with ``status``); no completion by the deadline
  → ``StationCommandTimedOut`` (one outcome: a late completion is ignored). A request
  with an id already seen is not sent again: the operator gets its current status;
- camera streams: the first request for a camera sends ``start-stream`` (room
  ``station:<station>:<camera>``); its completion → ``StreamReady`` and ``stream-ready``
  to every requester; later requests are answered at once. One stream per camera
  whatever the number of viewers. No viewer for ``idle_stop_s`` → ``stop-stream``
  + ``StreamStopped``. A start that fails or times out, or a stream the agent reports
  ended → ``StreamFailed`` and ``stream-failed`` to its requesters.

Pure: no Kafka, no clock; time comes from events and ticks.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from producers.envelope import Event, derived_id
from producers.rtc import Notification, Tick
from producers.sessions import (
    StationCamera,
    StationCommand,
    StationCommandAcked,
    StationCommandCompleted,
    StationCommandTimedOut,
    StationHeartbeat,
    StationRegistered,
    StationWentOffline,
    StreamReady,
    StreamRequested,
)
from producers.stations import (
    CAMERA_SOURCE,
    StationCommandOutcome,
    StationCommandRejected,
    StationCommandRequested,
    StationStreamEnded,
    StationViewersChanged,
    StationWentOnline,
    StreamFailed,
    StreamStopped,
    station_room,
)
from streams.outputs import Outputs

SEEN_LIMIT = 256
OUTCOME_LIMIT = 256
WATCHER_LIMIT = 64


@dataclass(frozen=True)
class StationConfig:
    #: Heartbeat interval assumed when a registration does not say.
    heartbeat_s: float = 2.0
    #: Offline after this many intervals without a heartbeat.
    missed_heartbeats: int = 3
    #: An operator command (open-gate) must complete within this.
    command_timeout_s: float = 10.0
    #: A start-stream must complete (first packet published) within this.
    stream_start_timeout_s: float = 20.0
    #: A stream nobody watched this long is stopped.
    idle_stop_s: float = 30.0


room_of = station_room
SOURCE_ID = CAMERA_SOURCE


class Reply(BaseModel):
    model_config = ConfigDict(frozen=True, extra="ignore")

    gateway_id: str
    session_id: str


class Pending(BaseModel):
    model_config = ConfigDict(extra="ignore")

    command_id: str
    kind: str
    payload: dict[str, Any] = Field(default_factory=dict)
    deadline: datetime
    acked: bool = False
    reply: Reply | None = None


class CameraStream(BaseModel):
    model_config = ConfigDict(extra="ignore")

    camera_id: str
    status: Literal["starting", "live"] = "starting"
    command_id: str
    room_id: str
    whep_url: str = ""
    #: Requesters: told ``stream-ready`` / ``stream-failed``.
    watchers: list[Reply] = Field(default_factory=list)
    #: Since when nobody watches (None while someone does).
    idle_since: datetime | None = None


class StationState(BaseModel):
    model_config = ConfigDict(extra="ignore")

    station_id: str
    registered: bool = False
    status: Literal["online", "offline"] = "offline"
    name: str = ""
    site: str = ""
    cameras: list[StationCamera] = Field(default_factory=list)
    gates: list[str] = Field(default_factory=list)
    gateway_id: str = ""
    session_id: str = ""
    heartbeat_s: float = 2.0
    last_seen: datetime | None = None
    pending: dict[str, Pending] = Field(default_factory=dict)
    #: Outcomes of finished commands by id (the latest ``OUTCOME_LIMIT``).
    outcomes: dict[str, str] = Field(default_factory=dict)
    streams: dict[str, CameraStream] = Field(default_factory=dict)
    viewers: dict[str, int] = Field(default_factory=dict)
    seen: list[str] = Field(default_factory=list)

    def camera_ids(self) -> list[str]:
        return [c.camera_id for c in self.cameras]


def next_deadline(state: StationState | None, config: StationConfig) -> datetime | None:
    """When a tick must visit this station: heartbeat expiry, a command's deadline, a
    stream's idle stop."""
    if state is None:
        return None
    times: list[datetime] = [p.deadline for p in state.pending.values()]
    if state.status == "online" and state.last_seen is not None:
        times.append(state.last_seen + timedelta(seconds=state.heartbeat_s * config.missed_heartbeats))
    times += [
        s.idle_since + timedelta(seconds=config.idle_stop_s)
        for s in state.streams.values()
        if s.status == "live" and s.idle_since is not None
    ]
    return min(times) if times else None


class Decision:
    def __init__(self, state: StationState, cause: Event, config: StationConfig) -> None:
        self.state = state
        self.config = config
        self.out = Outputs(cause, f"station:{state.station_id}", cause.occurred_at)
        self.now = cause.now if isinstance(cause, Tick) else cause.occurred_at

    def fact(self, cls: type[Any], **fields: Any) -> Any:
        return self.out.add("station.events", cls, station_id=self.state.station_id, **fields)

    def tell(self, reply: Reply | None, message: dict[str, Any]) -> None:
        if reply is None:
            return
        self.out.add(
            "gateway.notifications",
            Notification,
            gateway_id=reply.gateway_id,
            session_id=reply.session_id,
            message={**message, "station_id": self.state.station_id},
        )

    def send_command(self, command_id: str, kind: str, payload: dict[str, Any], timeout_s: float) -> datetime:
        s = self.state
        deadline = self.now + timedelta(seconds=timeout_s)
        self.out.add(
            "station.commands",
            StationCommand,
            station_id=s.station_id,
            command_id=command_id,
            kind=kind,
            payload=payload,
            gateway_id=s.gateway_id,
            session_id=s.session_id,
            deadline=deadline,
        )
        self.deliver(command_id, kind, payload, deadline)
        return deadline

    def deliver(self, command_id: str, kind: str, payload: dict[str, Any], deadline: datetime) -> None:
        """The ``command`` message to the station's socket."""
        s = self.state
        message = {
            "type": "command",
            "command_id": command_id,
            "kind": kind,
            "payload": payload,
            "deadline": deadline.isoformat(),
        }
        self.out.add(
            "gateway.notifications",
            Notification,
            gateway_id=s.gateway_id,
            session_id=s.session_id,
            message=message,
        )

    def finish(self, command_id: str, outcome: str) -> Pending | None:
        pending = self.state.pending.pop(command_id, None)
        outcomes = {k: v for k, v in self.state.outcomes.items() if k != command_id}
        outcomes[command_id] = outcome
        while len(outcomes) > OUTCOME_LIMIT:
            outcomes.pop(next(iter(outcomes)))
        self.state.outcomes = outcomes
        return pending

    def reject(
        self, command_id: str, kind: str, code: str, message: str, reply: Reply | None, camera_id: str = ""
    ) -> None:
        self.fact(StationCommandRejected, command_id=command_id, kind=kind, code=code, message=message)
        if kind == "start-stream":
            self.tell(reply, {"type": "stream-failed", "camera_id": camera_id, "code": code, "reason": message})
        else:
            self.tell(
                reply, {"type": "command", "command_id": command_id, "kind": kind, "status": "rejected", "code": code}
            )
            self.state.outcomes[command_id] = "rejected"

    def stream_failed(self, camera_id: str, reason: str) -> None:
        stream = self.state.streams.pop(camera_id, None)
        if stream is None:
            return
        self.fact(
            StreamFailed, camera_id=camera_id, reason=reason, room_id=stream.room_id, command_id=stream.command_id
        )
        for reply in stream.watchers:
            self.tell(reply, {"type": "stream-failed", "camera_id": camera_id, "reason": reason})

    def stop_stream(self, camera_id: str, reason: str, *, command: bool) -> None:
        stream = self.state.streams.pop(camera_id, None)
        if stream is None:
            return
        self.fact(StreamStopped, camera_id=camera_id, room_id=stream.room_id, reason=reason)
        if command:
            command_id = f"stop-{derived_id(self.out.cause.event_id, len(self.out.items), camera_id).hex[:16]}"
            self.send_command(command_id, "stop-stream", {"camera_id": camera_id}, self.config.command_timeout_s)
            # nobody waits for a stop: its outcome is not tracked
            self.state.pending.pop(command_id, None)

    def online(self) -> None:
        s = self.state
        s.status = "online"
        self.fact(
            StationWentOnline,
            gateway_id=s.gateway_id,
            name=s.name,
            site=s.site,
            cameras=s.cameras,
            gates=s.gates,
        )


def _requester(gateway_id: str | None, session_id: str | None) -> Reply | None:
    return Reply(gateway_id=gateway_id, session_id=session_id) if gateway_id and session_id else None


def on_registered(d: Decision, e: StationRegistered) -> None:
    s = d.state
    s.registered = True
    s.name, s.site, s.gates = e.name, e.site, list(e.gates)
    s.cameras = list(e.camera_info) or [StationCamera(camera_id=c) for c in e.cameras]
    s.gateway_id, s.session_id = e.gateway_id, e.session_id or ""
    s.heartbeat_s = e.heartbeat_s or d.config.heartbeat_s
    s.last_seen = e.occurred_at
    d.online()
    # streams the agent no longer runs (it restarted) are over
    for camera_id in sorted(set(s.streams) - set(e.live_cameras)):
        d.stream_failed(camera_id, "the station reconnected without this stream")
    # commands still in time go to the new socket: the agent runs each id at most once
    for p in sorted(s.pending.values(), key=lambda p: p.command_id):
        d.deliver(p.command_id, p.kind, p.payload, p.deadline)


def on_heartbeat(d: Decision, e: StationHeartbeat) -> None:
    s = d.state
    if not s.registered:
        return
    s.last_seen = max(s.last_seen or e.occurred_at, e.occurred_at)
    if s.status == "offline" and e.gateway_id and e.session_id:
        s.gateway_id, s.session_id = e.gateway_id, e.session_id
        d.online()


def on_command_requested(d: Decision, e: StationCommandRequested) -> None:
    s, reply = d.state, _requester(e.gateway_id, e.session_id)
    if e.command_id in s.pending:
        p = s.pending[e.command_id]
        if p.reply is None:
            p.reply = reply
        d.tell(reply, _status(e.command_id, p.kind, "acked" if p.acked else "sent"))
        return
    if e.command_id in s.outcomes:
        d.tell(reply, _status(e.command_id, e.kind, s.outcomes[e.command_id]))
        return
    gate_id = str(e.payload.get("gate_id", ""))
    if not s.registered:
        d.reject(e.command_id, e.kind, "station_not_found", f"station {s.station_id} is not registered", reply)
    elif gate_id not in s.gates:
        d.reject(e.command_id, e.kind, "gate_not_found", f"station {s.station_id} has no gate {gate_id!r}", reply)
    elif s.status != "online":
        d.reject(e.command_id, e.kind, "station_offline", f"station {s.station_id} is offline", reply)
    else:
        payload = {**e.payload, "requested_by": e.requested_by}
        deadline = d.send_command(e.command_id, e.kind, payload, d.config.command_timeout_s)
        s.pending[e.command_id] = Pending(
            command_id=e.command_id, kind=e.kind, payload=payload, deadline=deadline, reply=reply
        )
        d.tell(reply, _status(e.command_id, e.kind, "sent"))


def _status(command_id: str, kind: str, status: str, **extra: Any) -> dict[str, Any]:
    return {"type": "command", "command_id": command_id, "kind": kind, "status": status, **extra}


def on_stream_requested(d: Decision, e: StreamRequested) -> None:
    s, reply, camera = d.state, _requester(e.gateway_id, e.session_id), e.camera_id
    refusal = (
        ("station_not_found", f"station {s.station_id} is not registered")
        if not s.registered
        else ("camera_not_found", f"station {s.station_id} has no camera {camera!r}")
        if camera not in s.camera_ids()
        else ("station_offline", f"station {s.station_id} is offline")
        if s.status != "online"
        else None
    )
    if refusal is not None:
        d.reject(e.command_id, "start-stream", refusal[0], refusal[1], reply, camera_id=camera)
        return
    stream = s.streams.get(camera)
    if stream is not None:
        if reply is not None and reply not in stream.watchers:
            stream.watchers = [*stream.watchers[-(WATCHER_LIMIT - 1) :], reply]
        if stream.status == "live":
            d.tell(reply, _ready(stream))
        return
    room_id = room_of(s.station_id, camera)
    payload = {"camera_id": camera, "room_id": room_id, "source_id": SOURCE_ID}
    deadline = d.send_command(e.command_id, "start-stream", payload, d.config.stream_start_timeout_s)
    s.pending[e.command_id] = Pending(command_id=e.command_id, kind="start-stream", payload=payload, deadline=deadline)
    s.streams[camera] = CameraStream(
        camera_id=camera,
        command_id=e.command_id,
        room_id=room_id,
        whep_url=f"/v1/whep/{room_id}/{SOURCE_ID}",
        watchers=[reply] if reply else [],
    )


def _ready(stream: CameraStream) -> dict[str, Any]:
    return {
        "type": "stream-ready",
        "camera_id": stream.camera_id,
        "room": stream.room_id,
        "source_id": SOURCE_ID,
        "whep_url": stream.whep_url,
    }


def on_acked(d: Decision, e: StationCommandAcked) -> None:
    p = d.state.pending.get(e.command_id)
    if p is None or p.acked:
        return
    p.acked = True
    d.fact(StationCommandOutcome, command_id=p.command_id, kind=p.kind, status="acked")
    d.tell(p.reply, _status(p.command_id, p.kind, "acked"))


def on_completed(d: Decision, e: StationCommandCompleted) -> None:
    s = d.state
    p = s.pending.get(e.command_id)
    if p is None:
        return  # already finished, timed out, or never ours: one outcome per command
    outcome: Literal["succeeded", "failed"] = "succeeded" if e.ok else "failed"
    d.finish(e.command_id, outcome)
    d.fact(StationCommandOutcome, command_id=p.command_id, kind=p.kind, status=outcome, error=e.error, result=e.result)
    if p.kind == "start-stream":
        camera = str(p.payload.get("camera_id", ""))
        stream = s.streams.get(camera)
        if stream is None or stream.command_id != e.command_id:
            return
        if not e.ok:
            d.stream_failed(camera, e.error or "the camera stream did not start")
            return
        stream.status = "live"
        stream.idle_since = None if s.viewers.get(camera, 0) > 0 else e.occurred_at
        d.fact(
            StreamReady,
            camera_id=camera,
            room_id=stream.room_id,
            source_id=SOURCE_ID,
            whep_url=stream.whep_url,
            command_id=e.command_id,
        )
        for reply in stream.watchers:
            d.tell(reply, _ready(stream))
        return
    extra: dict[str, Any] = {"result": e.result}
    if e.error:
        extra["error"] = e.error
    d.tell(p.reply, _status(p.command_id, p.kind, outcome, **extra))


def on_stream_ended(d: Decision, e: StationStreamEnded) -> None:
    d.stream_failed(e.camera_id, e.reason or "the camera stream ended")


def on_viewers(d: Decision, e: StationViewersChanged) -> None:
    s = d.state
    s.viewers = {**s.viewers, e.camera_id: e.viewers}
    stream = s.streams.get(e.camera_id)
    if stream is None:
        return
    if e.viewers > 0:
        stream.idle_since = None
    elif stream.idle_since is None:
        stream.idle_since = e.occurred_at


def on_tick(d: Decision, tick: Tick) -> None:
    s, now = d.state, tick.now
    if s.status == "online" and s.last_seen is not None:
        if now >= s.last_seen + timedelta(seconds=s.heartbeat_s * d.config.missed_heartbeats):
            s.status = "offline"
            d.fact(StationWentOffline, reason="heartbeats-missed")
            for camera_id in sorted(s.streams):
                if s.streams[camera_id].status == "live":
                    d.stop_stream(camera_id, "station-offline", command=False)
    for p in sorted(s.pending.values(), key=lambda p: p.command_id):
        if p.deadline <= now:
            d.finish(p.command_id, "timed-out")
            d.fact(StationCommandTimedOut, command_id=p.command_id)
            if p.kind == "start-stream":
                d.stream_failed(str(p.payload.get("camera_id", "")), "the station did not start the stream in time")
            else:
                d.tell(p.reply, _status(p.command_id, p.kind, "timed-out"))
    idle = timedelta(seconds=d.config.idle_stop_s)
    for camera_id, stream in sorted(s.streams.items()):
        if stream.status == "live" and stream.idle_since is not None and stream.idle_since + idle <= now:
            d.stop_stream(camera_id, "idle", command=s.status == "online")


HANDLERS: dict[type[Event], Callable[[Decision, Any], None]] = {
    StationRegistered: on_registered,
    StationHeartbeat: on_heartbeat,
    StationCommandRequested: on_command_requested,
    StreamRequested: on_stream_requested,
    StationCommandAcked: on_acked,
    StationCommandCompleted: on_completed,
    StationStreamEnded: on_stream_ended,
    StationViewersChanged: on_viewers,
    Tick: on_tick,
}


def handle(
    state: StationState | None, event: Event, config: StationConfig, station_id: str | None = None
) -> tuple[StationState | None, Outputs]:
    """Apply one input to one station. Its own facts (and anything else it does not
    use) leave the state as is."""
    key = station_id or str(getattr(event, "station_id", ""))
    handler = HANDLERS.get(type(event))
    if handler is None or (state is None and isinstance(event, Tick)):
        return state, Outputs(event, f"station:{key}", event.occurred_at)
    if isinstance(event, StationHeartbeat) and state is not None and state.registered and state.status == "online":
        # most of a registry's input: only ``last_seen`` moves (a shallow copy; no one mutates
        # a stored state, every other input works on a deep copy)
        last = max(state.last_seen or event.occurred_at, event.occurred_at)
        out = Outputs(event, f"station:{key}", event.occurred_at)
        return (state if last == state.last_seen else state.model_copy(update={"last_seen": last})), out
    current = (state or StationState(station_id=key)).model_copy(deep=True)
    d = Decision(current, event, config)
    event_id = str(event.event_id)
    if event_id in current.seen:
        return state, d.out
    handler(d, event)
    if not isinstance(event, IDEMPOTENT):
        d.state.seen = [*d.state.seen[-(SEEN_LIMIT - 1) :], event_id]
    return d.state, d.out


#: Inputs whose second application changes nothing (a heartbeat moves ``last_seen`` to the
#: max; a tick finds its work done), so they take no room in ``seen``: heartbeats are most
#: of a station's inputs, and each stored id is changelog bytes.
IDEMPOTENT = (StationHeartbeat, Tick)
