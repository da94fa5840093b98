"""A closed segment is durable before it counts as closed: what a SIGKILLed recorder
leaves in the shared spool is found, in order, by the instance that takes over; only the
open segment is lost."""

from __future__ import annotations

from pathlib import Path

from aiortc.rtp import RtpPacket

from recorder.frames import FrameAssembler
from recorder.segments import Segment, TrackWriter, write_json_atomic
from recorder.spool import recover, track_dir
from tests.unit.test_recorder_segments import packetize, vp8_frames


def test_closed_segments_survive_the_writer_and_are_recovered_in_order(tmp_path: Path) -> None:
    spool = tmp_path / "rec-1"
    directory = track_dir(spool, "p1/cam")
    directory.mkdir(parents=True)
    write_json_atomic(spool / "recording.json", {"started_at": 1.0})
    write_json_atomic(directory / "track.json", {"track_id": "p1/cam", "codec": "vp8"})
    closed: list[Segment] = []
    asm = FrameAssembler("vp8")
    writer = TrackWriter("p1/cam", "vp8", directory, 1.0, 0, closed.append)
    packets: list[RtpPacket] = packetize(vp8_frames(80), 3000)
    for n, p in enumerate(packets):
        for f in asm.add(p, n * 0.01):
            writer.write(f)
    # the writer "dies" here: segments 0 and 1 closed (never uploaded), segment 2 open
    assert [s.index for s in closed] == [0, 1]
    assert sorted(p.name for p in directory.iterdir()) == [
        "0.json",
        "0.webm",
        "1.json",
        "1.webm",
        "2.webm.part",
        "track.json",
    ]
    uploads = recover(spool, "rec-1", "recordings/room/rec-1/")
    assert [u.object_key for u in uploads] == [
        "recordings/room/rec-1/recording.json",
        "recordings/room/rec-1/p1/cam/track.json",
        "recordings/room/rec-1/p1/cam/0.webm",
        "recordings/room/rec-1/p1/cam/1.webm",
    ]
    assert [u.meta["segment"] for u in uploads[2:]] == closed  # described as they were closed
    assert uploads[2].meta["track"]["codec"] == "vp8"
    assert not (directory / "2.webm.part").exists()  # the open segment is the gap
    uploads[2].done()
    assert not (directory / "0.webm").exists() and not (directory / "0.json").exists()
    assert (spool / "recording.json").exists() and (directory / "track.json").exists()  # kept
