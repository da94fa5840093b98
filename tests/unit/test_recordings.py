"""The recording decision and the recorder's hidden peer, with plain data: no Kafka."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from producers.envelope import Event
from producers.fields import Grant, RoomType
from producers.recordings import RecordingAccepted, RecordingRequested, RecordingStopping, RecordingStopRequested
from producers.rtc import (
    JoinRequested,
    LeaveRequested,
    Notification,
    PeerJoined,
    PeerLeft,
    RequestRejected,
    RoomClosed,
    RoomCreated,
    Tick,
)
from producers.sessions import RecordingCompleted, RecordingFailed, RecordingStarted, StartRecording, StopRecording
from streams import recordings
from streams.recordings import RecordingConfig, RoomRecordings, handle
from streams.room_state import RoomState
from streams.rooms import RoomConfig
from streams.rooms import handle as room_handle

T0 = datetime(2026, 1, 1, tzinfo=UTC)
CFG = RecordingConfig(segment_s=10)


def created(room: str = "r1", **metadata: Any) -> RoomCreated:
    return RoomCreated.new(
        room_id=room,
        room_type=RoomType.SFU,
        max_participants=50,
        empty_timeout_s=300,
        creator="alice",
        metadata=metadata,
        occurred_at=T0,
    )


def joined(peer: str, hidden: bool = False) -> PeerJoined:
    return PeerJoined.new(
        room_id="r1",
        peer_id=peer,
        identity=peer,
        session_id=f"s-{peer}",
        gateway_id="gw1",
        hidden=hidden,
        occurred_at=T0,
    )


def run(state: RoomRecordings | None, *events: Event) -> tuple[RoomRecordings | None, list[Event]]:
    out: list[Event] = []
    for event in events:
        state, outputs = handle(state, event, CFG)
        out += [o.event for o in outputs.items]
    return state, out


def of(out: list[Event], cls: type[Any]) -> list[Any]:
    return [e for e in out if isinstance(e, cls)]


def test_start_on_an_open_room_records_a_fact_commands_the_recorder_and_tells_visible_peers() -> None:
    state, out = run(None, created(), joined("p1"), joined("rec", hidden=True))
    assert out == []
    state, out = run(state, RecordingRequested.new(room_id="r1", recording_id="rec1", requested_by="alice"))
    assert [type(e) for e in out] == [RecordingAccepted, StartRecording, Notification]
    assert of(out, StartRecording)[0].segment_s == 10
    note = of(out, Notification)[0]
    assert note.peer_id == "p1" and note.message["active"] is True and note.message["recording_ids"] == ["rec1"]
    assert state is not None and state.active["rec1"].status == "accepted"


def test_start_on_a_closed_or_unknown_room_is_rejected_and_writes_nothing_else() -> None:
    _, out = run(None, RecordingRequested.new(room_id="r1", recording_id="rec1"))
    assert [(type(e), getattr(e, "code", None)) for e in out] == [(RequestRejected, "room_not_found")]
    _, out = run(
        None,
        created(),
        RoomClosed.new(room_id="r1", reason="deleted"),
        RecordingRequested.new(room_id="r1", recording_id="rec1"),
    )
    assert [(type(e), getattr(e, "code", None)) for e in out] == [(RequestRejected, "room_not_found")]


def test_a_second_recording_is_refused_unless_concurrent_and_a_repeated_request_is_ignored() -> None:
    state, _ = run(None, created(), RecordingRequested.new(room_id="r1", recording_id="rec1"))
    _, out = run(state, RecordingRequested.new(room_id="r1", recording_id="rec2"))
    assert [getattr(e, "code", None) for e in out] == ["recording_active"]
    _, out = run(state, RecordingRequested.new(room_id="r1", recording_id="rec1"))
    assert out == []
    state, out = run(state, RecordingRequested.new(room_id="r1", recording_id="rec2", concurrent=True))
    assert of(out, StartRecording)[0].recording_id == "rec2"
    assert state is not None and sorted(state.active) == ["rec1", "rec2"]


def test_stop_then_completed_ends_the_recording_and_tells_peers() -> None:
    state, _ = run(
        None,
        created(),
        joined("p1"),
        RecordingRequested.new(room_id="r1", recording_id="rec1"),
        RecordingStarted.new(room_id="r1", recording_id="rec1"),
    )
    assert state is not None and state.active["rec1"].status == "recording"
    state, out = run(state, RecordingStopRequested.new(room_id="r1", recording_id="rec1"))
    assert [type(e) for e in out] == [RecordingStopping, StopRecording]
    _, again = run(state, RecordingStopRequested.new(room_id="r1", recording_id="rec1"))
    assert again == []  # already stopping
    state, out = run(state, RecordingCompleted.new(room_id="r1", recording_id="rec1", duration_s=3, size_bytes=9))
    assert state is not None and state.active == {}
    assert [n.message["active"] for n in of(out, Notification)] == [False]
    _, out = run(state, RecordingStopRequested.new(room_id="r1", recording_id="rec1"))
    assert [getattr(e, "code", None) for e in out] == ["recording_not_found"]


def test_room_close_stops_its_recordings_and_a_failure_ends_one() -> None:
    state, _ = run(
        None,
        created(),
        RecordingRequested.new(room_id="r1", recording_id="rec1"),
        RecordingRequested.new(room_id="r1", recording_id="rec2", concurrent=True),
    )
    state, out = run(state, RecordingFailed.new(room_id="r1", recording_id="rec2", error="minio"))
    assert state is not None and list(state.active) == ["rec1"]
    _, out = run(state, RoomClosed.new(room_id="r1", reason="deleted"))
    assert [(type(e), getattr(e, "reason", None)) for e in out] == [
        (RecordingStopping, "room-closed"),
        (StopRecording, "room-closed"),
    ]


def test_auto_record_starts_at_creation_and_a_late_joiner_is_told() -> None:
    state, out = run(None, created(auto_record=True))
    assert len(of(out, StartRecording)) == 1
    _, out = run(state, joined("p2"))
    assert [n.message["active"] for n in of(out, Notification)] == [True]


def test_replayed_inputs_are_ignored_and_state_is_the_fold() -> None:
    start = RecordingRequested.new(room_id="r1", recording_id="rec1")
    state, out = run(None, created(), start)
    again, out2 = run(state, start)
    assert out2 == [] and again is state
    facts = [created(), *[e for e in out if isinstance(e, RecordingAccepted)]]
    folded: RoomRecordings | None = None
    for fact in facts:
        folded = recordings.evolve(folded, fact)
    assert folded is not None and state is not None and folded.view() == state.view()


# --- the recorder in the room decision -----------------------------------------------


def test_a_recorder_is_hidden_from_peers_and_does_not_keep_the_room_open() -> None:
    cfg = RoomConfig()
    state: RoomState | None = None
    outs: list[Event] = []

    def apply(event: Event) -> None:
        nonlocal state
        state, out = room_handle(state, event, cfg, room_id="r1")
        outs.extend(o.event for o in out.items)

    apply(
        JoinRequested.new(
            room_id="r1",
            peer_id="p1",
            identity="alice",
            session_id="s1",
            gateway_id="gw",
            grants=[Grant.JOIN, Grant.PUBLISH, Grant.SUBSCRIBE],
            occurred_at=T0,
        )
    )
    outs.clear()
    apply(
        JoinRequested.new(
            room_id="r1",
            peer_id="rec",
            identity="recorder",
            session_id="s2",
            gateway_id="gw",
            grants=[Grant.JOIN, Grant.SUBSCRIBE, Grant.RECORD],
            occurred_at=T0,
        )
    )
    joined_fact = of(outs, PeerJoined)[0]
    assert joined_fact.hidden is True
    assert not [n for n in of(outs, Notification) if n.message.get("type") == "peer-joined"]
    apply(
        JoinRequested.new(
            room_id="r1",
            peer_id="p3",
            identity="carol",
            session_id="s3",
            gateway_id="gw",
            grants=[Grant.JOIN, Grant.SUBSCRIBE],
            occurred_at=T0,
        )
    )
    assert state is not None and [p.peer_id for p in state.visible_peers()] == ["p1", "p3"]
    for peer in ("p1", "p3"):
        apply(LeaveRequested.new(room_id="r1", peer_id=peer, occurred_at=T0))
    assert state is not None and state.empty_since is not None and "rec" in state.peers
    outs.clear()
    apply(Tick.new(now=T0 + timedelta(seconds=301), occurred_at=T0 + timedelta(seconds=301)))
    assert of(outs, RoomClosed) and ("rec" in {e.peer_id for e in of(outs, PeerLeft)})


def test_a_composite_is_rendered_only_from_a_completed_recording() -> None:
    from producers.recordings import CompositeAccepted, CompositeRequested, RenderComposite

    state, _ = run(None, created(), RecordingRequested.new(room_id="r1", recording_id="rec1"))
    _, out = run(state, CompositeRequested.new(room_id="r1", recording_id="rec1"))
    assert [getattr(e, "code", None) for e in out] == ["recording_not_completed"]
    state, _ = run(state, RecordingFailed.new(room_id="r1", recording_id="rec1", error="x"))
    _, out = run(state, CompositeRequested.new(room_id="r1", recording_id="rec1"))
    assert [getattr(e, "code", None) for e in out] == ["recording_not_completed"]
    state, _ = run(
        state,
        RecordingRequested.new(room_id="r1", recording_id="rec2"),
        RecordingCompleted.new(room_id="r1", recording_id="rec2", duration_s=1, size_bytes=1),
    )
    _, out = run(state, CompositeRequested.new(room_id="r1", recording_id="rec2", layout="speaker"))
    assert [type(e) for e in out] == [CompositeAccepted, RenderComposite] and out[1].layout == "speaker"
