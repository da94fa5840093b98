"""``client.aiortc_glue``: the client's only use of aiortc private names. The recovering
jitter buffer is driven with synthetic VP8 packets and a clock that is a variable."""

from __future__ import annotations

from typing import Any

from aiortc import RTCPeerConnection
from aiortc.jitterbuffer import JitterBuffer
from aiortc.rtcrtpparameters import RTCRtpCodecParameters
from aiortc.rtp import RtpPacket

from client.aiortc_glue import RecoveringJitterBuffer, check_internals, keyframe_test, recover_losses

VP8 = RTCRtpCodecParameters(mimeType="video/VP8", clockRate=90000, payloadType=96)
H264 = RTCRtpCodecParameters(mimeType="video/H264", clockRate=90000, payloadType=102)
VP9 = RTCRtpCodecParameters(mimeType="video/VP9", clockRate=90000, payloadType=98)
CODECS = {96: VP8, 102: H264, 98: VP9}


def vp8(keyframe: bool) -> bytes:
    """A one-packet VP8 frame: descriptor with S=1, then the payload header (P bit)."""
    return bytes((0x10, 0x00 if keyframe else 0x01)) + bytes(10)


def packet(seq: int, keyframe: bool = False, pt: int = 96) -> RtpPacket:
    p = RtpPacket(
        payload_type=pt,
        sequence_number=seq & 0xFFFF,
        timestamp=(seq * 3000) & 0xFFFFFFFF,
        ssrc=7,
        payload=vp8(keyframe),
    )
    p._data = p.payload  # type: ignore[attr-defined]  # what aiortc's depayloader would set
    return p


class Rig:
    def __init__(self) -> None:
        self.now = 10.0
        self.nacks: list[tuple[int, list[int]]] = []
        self.buffer = RecoveringJitterBuffer(
            keyframe_test(CODECS), lambda ssrc, seqs: self.nacks.append((ssrc, seqs)), clock=lambda: self.now
        )
        self.frames: list[int] = []  # timestamps of the frames handed to the decoder
        self.plis: list[float] = []

    def add(self, seq: int, keyframe: bool = False, pt: int = 96, after_s: float = 0.0) -> None:
        self.now += after_s
        pli, frame = self.buffer.add(packet(seq, keyframe, pt))
        if pli:
            self.plis.append(self.now)
        if frame is not None:
            self.frames.append(frame.timestamp // 3000)


def test_a_hole_is_nacked_again_then_a_keyframe_is_asked_for_and_skipped_to() -> None:
    rig = Rig()
    for seq in range(100, 104):
        rig.add(seq, keyframe=seq == 100, after_s=0.066)
    assert rig.frames == [100, 101, 102]  # a frame is complete when the next one starts
    rig.add(105, after_s=0.066)  # 104 is lost: aiortc's NACK generator NACKs it once
    rig.add(106, after_s=0.066)
    assert rig.frames == [100, 101, 102] and rig.nacks == [] and rig.plis == []  # 103 ends at 104
    rig.add(107, after_s=0.066)  # 0.13 s behind the hole: NACK again
    assert rig.nacks == [(7, [104])] and rig.plis == []
    for seq in range(108, 111):
        rig.add(seq, after_s=0.066)
    assert rig.plis == [rig.now] and len(rig.nacks) == 2  # 0.33 s: ask for a keyframe
    for seq in range(111, 127):
        rig.add(seq, after_s=0.066)
    assert len(rig.plis) == 2  # one per second while still stuck
    assert rig.frames == [100, 101, 102]
    rig.add(127, keyframe=True, after_s=0.066)
    rig.add(128, after_s=0.066)
    rig.add(129, after_s=0.066)
    assert rig.frames == [100, 101, 102, 127, 128] and rig.buffer.skips == 1
    rig.add(130, after_s=2)
    assert len(rig.plis) == 2 and rig.buffer.renacks == len(rig.nacks)


def test_a_hole_repaired_in_time_needs_nothing() -> None:
    rig = Rig()
    for seq in (1, 2, 4, 5):
        rig.add(seq, keyframe=seq == 1, after_s=0.066)
    rig.add(3, after_s=0.05)  # the retransmission
    rig.add(6, after_s=0.016)
    assert rig.nacks == [] and rig.plis == [] and rig.buffer.skips == 0
    assert rig.frames == [1, 2, 3]  # aiortc hands out at most one frame per packet added


def test_keyframes_without_a_hole_and_other_codecs_do_not_skip() -> None:
    rig = Rig()
    for seq in range(1, 6):
        rig.add(seq, keyframe=True, after_s=0.066)
    assert rig.frames == [1, 2, 3, 4] and rig.buffer.skips == 0
    vp9 = Rig()
    for seq in (1, 2, 4, 5):
        vp9.add(seq, keyframe=True, pt=98, after_s=0.066)  # VP9 payloads are not parsed: never a keyframe
    assert vp9.frames == [1] and vp9.buffer.skips == 0


def test_the_keyframe_test_reads_the_codec_from_the_payload_type() -> None:
    h264 = keyframe_test(CODECS)
    idr = RtpPacket(payload_type=102, payload=b"\x65" + bytes(8))
    non_idr = RtpPacket(payload_type=102, payload=b"\x41" + bytes(8))
    unknown = RtpPacket(payload_type=55, payload=b"\x65" + bytes(8))
    assert h264(idr) and not h264(non_idr) and not h264(unknown)


def test_the_wrap_of_sequence_numbers() -> None:
    rig = Rig()
    for seq in (65533, 65534, 0, 1, 2):  # 65535 lost
        rig.add(seq, keyframe=seq == 65533, after_s=0.15)
    assert rig.nacks == [(7, [65535])] * 2 and rig.plis == [rig.now]
    rig.add(3, keyframe=True, after_s=0.066)
    rig.add(4, after_s=0.066)
    assert rig.frames[-1] == 3 and rig.buffer.skips == 1


async def test_recover_losses_installs_into_video_receivers_only() -> None:
    pc = RTCPeerConnection()
    video = pc.addTransceiver("video", direction="recvonly").receiver
    audio = pc.addTransceiver("audio", direction="recvonly").receiver
    check_internals(video)
    buffer = recover_losses(video)
    assert isinstance(buffer, RecoveringJitterBuffer) and buffer.capacity == 512
    assert recover_losses(video) is buffer and recover_losses(audio) is None
    vars(audio)["_RTCRtpReceiver__kind"] = "video"  # a receiver that already got packets keeps its buffer
    used: Any = vars(audio)["_RTCRtpReceiver__jitter_buffer"]
    assert isinstance(used, JitterBuffer)
    used.add(packet(1))
    assert recover_losses(audio) is None
    await pc.close()


def test_nacks_again_at_most_three_times_per_packet_and_32_packets_at_a_time() -> None:
    rig = Rig()
    rig.add(1, keyframe=True)
    for seq in range(42, 50):  # 2..41 lost in a burst
        rig.add(seq, after_s=0.11)
    assert [len(seqs) for _, seqs in rig.nacks] == [32, 32, 32, 8, 8, 8]
    assert rig.nacks[0][1] == list(range(2, 34)) and rig.nacks[3][1] == list(range(34, 42))
    rig.add(50, after_s=0.11)
    assert len(rig.nacks) == 6  # each lost packet was NACKed again three times: now only a keyframe helps
    assert rig.plis
