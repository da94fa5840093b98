"""RTP payloads of the recordable video codecs, as bytes: where a frame starts, whether it
is a keyframe, the frame's data without the payload descriptor, its picture size.
Nothing is decoded.

* VP8, RFC 7741: a descriptor per packet; the frame is the concatenated partitions.
* VP9, RFC 9628: a descriptor per packet (B = first packet of a frame, P = inter
  predicted); the frame is the concatenated payloads; the size comes from the
  scalability structure or the keyframe's uncompressed header. One spatial layer.
* H.264, RFC 6184 (packetization-mode 1): single NAL units, STAP-A and FU-A become an
  Annex B byte stream (start codes); a keyframe carries an IDR slice or an SPS; the size
  comes from the SPS.
"""

from __future__ import annotations

from media_node.keyframes import (
    H264_FU_A,
    H264_SPS,
    H264_STAP_A,
    h264_keyframe_start,
    vp8_descriptor_size,
    vp8_keyframe_start,
)

START_CODE = b"\x00\x00\x00\x01"


# --- VP8 ---------------------------------------------------------------------------------


def vp8_frame_start(payload: bytes) -> bool:
    """First packet of a VP8 frame: S bit set on partition 0."""
    return len(payload) > 0 and bool(payload[0] & 0x10) and (payload[0] & 0x0F) == 0


def vp8_size(frame: bytes) -> tuple[int, int] | None:
    """Width and height of a VP8 keyframe (from its uncompressed header)."""
    if len(frame) < 10 or frame[0] & 0x01 or frame[3:6] != b"\x9d\x01\x2a":
        return None
    return int.from_bytes(frame[6:8], "little") & 0x3FFF, int.from_bytes(frame[8:10], "little") & 0x3FFF


def vp8_data(payload: bytes) -> bytes:
    return payload[vp8_descriptor_size(payload) :]


# --- VP9 ---------------------------------------------------------------------------------


def _vp9_descriptor(payload: bytes) -> tuple[int, tuple[int, int] | None]:
    """(descriptor length, size from the scalability structure); length 0 if truncated."""
    if not payload:
        return 0, None
    b0 = payload[0]
    i_bit, p_bit, l_bit, f_bit, v_bit = b0 & 0x80, b0 & 0x40, b0 & 0x20, b0 & 0x10, b0 & 0x02
    pos = 1
    if i_bit:
        if pos >= len(payload):
            return 0, None
        pos += 2 if payload[pos] & 0x80 else 1
    if l_bit:
        pos += 1 if f_bit else 2
    if f_bit and p_bit:
        for _ in range(3):
            if pos >= len(payload):
                return 0, None
            more = payload[pos] & 0x01
            pos += 1
            if not more:
                break
    size = None
    if v_bit:
        if pos >= len(payload):
            return 0, None
        ss = payload[pos]
        pos += 1
        layers, y_bit, g_bit = (ss >> 5) + 1, ss & 0x10, ss & 0x08
        if y_bit:
            for _ in range(layers):
                if pos + 4 > len(payload):
                    return 0, None
                size = int.from_bytes(payload[pos : pos + 2], "big"), int.from_bytes(payload[pos + 2 : pos + 4], "big")
                pos += 4
        if g_bit:
            if pos >= len(payload):
                return 0, None
            groups = payload[pos]
            pos += 1
            for _ in range(groups):
                if pos >= len(payload):
                    return 0, None
                refs = (payload[pos] >> 2) & 0x03
                pos += 1 + refs
    return (pos, size) if pos <= len(payload) else (0, None)


def vp9_frame_start(payload: bytes) -> bool:
    return len(payload) > 0 and bool(payload[0] & 0x08)


def vp9_keyframe_start(payload: bytes) -> bool:
    """B set, P clear (not inter-picture predicted), and not an upper spatial layer."""
    if not vp9_frame_start(payload) or payload[0] & 0x40:
        return False
    if payload[0] & 0x20:  # layer indices: TID(3) U(1) SID(3) D(1)
        pos = 1
        if payload[0] & 0x80:
            pos += 2 if len(payload) > 1 and payload[1] & 0x80 else 1
        return pos < len(payload) and not (payload[pos] >> 1) & 0x07
    return True


def vp9_data(payload: bytes) -> bytes:
    length, _ = _vp9_descriptor(payload)
    return payload[length:] if length else b""


class _Bits:
    def __init__(self, data: bytes) -> None:
        self.data = data
        self.pos = 0

    def bit(self) -> int:
        byte = self.pos >> 3
        if byte >= len(self.data):
            raise ValueError("truncated")
        value = (self.data[byte] >> (7 - (self.pos & 7))) & 1
        self.pos += 1
        return value

    def bits(self, n: int) -> int:
        value = 0
        for _ in range(n):
            value = (value << 1) | self.bit()
        return value

    def ue(self) -> int:
        zeros = 0
        while not self.bit():
            zeros += 1
            if zeros > 31:
                raise ValueError("bad exp-Golomb code")
        return (1 << zeros) - 1 + self.bits(zeros)

    def se(self) -> int:
        k = self.ue()
        return (k + 1) // 2 if k & 1 else -(k // 2)


def vp9_size(frame: bytes, first_payload: bytes = b"") -> tuple[int, int] | None:
    """Width and height of a VP9 keyframe: the scalability structure, else its header."""
    if first_payload:
        _, size = _vp9_descriptor(first_payload)
        if size is not None:
            return size
    try:
        r = _Bits(frame)
        if r.bits(2) != 2:
            return None
        profile = r.bit() | (r.bit() << 1)
        if profile == 3:
            r.bit()
        if r.bit():  # show_existing_frame
            return None
        if r.bit():  # frame_type 1: not a keyframe
            return None
        r.bits(2)  # show_frame, error_resilient_mode
        if r.bits(24) != 0x498342:
            return None
        if profile >= 2:
            r.bit()  # ten_or_twelve_bit
        if r.bits(3) != 7:  # color_space other than sRGB
            r.bit()
            if profile in (1, 3):
                r.bits(3)
        elif profile in (1, 3):
            r.bit()
        return r.bits(16) + 1, r.bits(16) + 1
    except ValueError:
        return None


# --- H.264 -------------------------------------------------------------------------------


def h264_frame_start(payload: bytes) -> bool:
    """A packet that begins a NAL unit (single NAL, STAP-A, or the first FU-A fragment)."""
    if not payload:
        return False
    nal_type = payload[0] & 0x1F
    if nal_type == H264_FU_A:
        return len(payload) > 1 and bool(payload[1] & 0x80)
    return 1 <= nal_type <= H264_STAP_A


def h264_data(payload: bytes) -> bytes:
    """One packet as Annex B: start code + NAL for each NAL unit it carries or begins."""
    if not payload:
        return b""
    nal_type = payload[0] & 0x1F
    if nal_type == H264_STAP_A:
        out, pos = [], 1
        while pos + 2 <= len(payload):
            size = int.from_bytes(payload[pos : pos + 2], "big")
            pos += 2
            if size == 0 or pos + size > len(payload):
                break
            out.append(START_CODE + payload[pos : pos + size])
            pos += size
        return b"".join(out)
    if nal_type == H264_FU_A:
        if len(payload) < 2:
            return b""
        if payload[1] & 0x80:  # first fragment: rebuild the NAL header
            return START_CODE + bytes([(payload[0] & 0xE0) | (payload[1] & 0x1F)]) + payload[2:]
        return payload[2:]
    return START_CODE + payload


def h264_keyframe(payloads: list[bytes]) -> bool:
    return any(h264_keyframe_start(p) for p in payloads)


def _nal_units(stream: bytes) -> list[bytes]:
    return [n.lstrip(b"\x00") for n in stream.split(b"\x00\x00\x01") if n.strip(b"\x00")]


def _unescape(nal: bytes) -> bytes:
    return nal.replace(b"\x00\x00\x03", b"\x00\x00")


def h264_size(frame: bytes) -> tuple[int, int] | None:
    """Width and height from the SPS of an Annex B access unit (ITU-T H.264 §7.3.2.1.1)."""
    sps = next((n for n in _nal_units(frame) if n and n[0] & 0x1F == H264_SPS), None)
    if sps is None:
        return None
    try:
        r = _Bits(_unescape(sps[1:]))
        profile = r.bits(8)
        r.bits(16)  # constraint flags, level
        r.ue()  # seq_parameter_set_id
        chroma = 1
        if profile in (100, 110, 122, 244, 44, 83, 86, 118, 128, 138, 139, 134, 135):
            chroma = r.ue()
            if chroma == 3:
                r.bit()
            r.ue(), r.ue()  # bit depths
            r.bit()
            if r.bit():  # seq_scaling_matrix_present_flag
                for i in range(8 if chroma != 3 else 12):
                    if r.bit():
                        last = nxt = 8
                        for _ in range(16 if i < 6 else 64):
                            if nxt:
                                nxt = (last + r.se() + 256) % 256
                            last = nxt or last
        r.ue()  # log2_max_frame_num_minus4
        poc_type = r.ue()
        if poc_type == 0:
            r.ue()
        elif poc_type == 1:
            r.bit()
            r.se(), r.se()
            for _ in range(r.ue()):
                r.se()
        r.ue()  # max_num_ref_frames
        r.bit()
        width_mbs, height_units = r.ue() + 1, r.ue() + 1
        frame_mbs_only = r.bit()
        if not frame_mbs_only:
            r.bit()
        r.bit()  # direct_8x8_inference_flag
        left = right = top = bottom = 0
        if r.bit():
            left, right, top, bottom = r.ue(), r.ue(), r.ue(), r.ue()
        crop_x = 2 if chroma in (1, 2) else 1
        crop_y = (2 if chroma == 1 else 1) * (2 - frame_mbs_only)
        width = width_mbs * 16 - crop_x * (left + right)
        height = (2 - frame_mbs_only) * height_units * 16 - crop_y * (top + bottom)
    except ValueError:
        return None
    return width, height


__all__ = [
    "h264_data",
    "h264_frame_start",
    "h264_keyframe",
    "h264_size",
    "vp8_data",
    "vp8_frame_start",
    "vp8_keyframe_start",
    "vp8_size",
    "vp9_data",
    "vp9_frame_start",
    "vp9_keyframe_start",
    "vp9_size",
]
