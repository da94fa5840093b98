"""What an RTP payload says about keyframes and VP8 picture ids: pure functions on bytes.

The forwarder starts a subscriber, or moves it to another layer, only at the first packet
of a keyframe; it never decodes. References: VP8 RFC 7741 §4.2-4.3, H.264 RFC 6184 §5.
"""

from __future__ import annotations

from collections.abc import Callable

H264_IDR = 5
H264_SPS = 7
H264_STAP_A = 24
H264_FU_A = 28


def vp8_descriptor_size(payload: bytes) -> int:
    """Length of the VP8 payload descriptor at the start of ``payload`` (0 if truncated)."""
    if not payload:
        return 0
    if not payload[0] & 0x80:
        return 1
    if len(payload) < 2:
        return 0
    ext = payload[1]
    size = 2
    if ext & 0x80:  # I: PictureID, 7 or 15 bits
        if len(payload) < 3:
            return 0
        size += 2 if payload[2] & 0x80 else 1
    if ext & 0x40:  # L: TL0PICIDX
        size += 1
    if ext & 0x30:  # T or K: TID/Y/KEYIDX
        size += 1
    return size if len(payload) >= size else 0


def vp8_keyframe_start(payload: bytes) -> bool:
    """First packet of a VP8 keyframe: S=1, PID=0 and the payload header's P bit is 0."""
    if len(payload) < 2 or not payload[0] & 0x10 or payload[0] & 0x0F:
        return False
    size = vp8_descriptor_size(payload)
    return 0 < size < len(payload) and not payload[size] & 0x01


def h264_keyframe_start(payload: bytes) -> bool:
    """An IDR slice or an SPS: alone, inside a STAP-A, or starting an FU-A."""
    if not payload:
        return False
    nal_type = payload[0] & 0x1F
    if nal_type in (H264_IDR, H264_SPS):
        return True
    if nal_type == H264_STAP_A:
        pos = 1
        while pos + 2 < len(payload):
            size = (payload[pos] << 8) | payload[pos + 1]
            if size == 0 or pos + 2 + size > len(payload):
                return False
            if payload[pos + 2] & 0x1F in (H264_IDR, H264_SPS):
                return True
            pos += 2 + size
        return False
    if nal_type == H264_FU_A and len(payload) >= 2:
        fu_header = payload[1]
        return bool(fu_header & 0x80) and fu_header & 0x1F in (H264_IDR, H264_SPS)
    return False


def always(payload: bytes) -> bool:
    """Audio (Opus) has no keyframes: every packet is a starting point."""
    return True


KEYFRAME_START: dict[str, Callable[[bytes], bool]] = {
    "vp8": vp8_keyframe_start,
    "h264": h264_keyframe_start,
    "opus": always,
}


def keyframe_detector(codec_name: str) -> Callable[[bytes], bool]:
    """The keyframe test for a codec name as aiortc spells it (``VP8``, ``H264``, ``opus``).

    Codecs the node cannot parse start at any packet, as audio does.
    """
    return KEYFRAME_START.get(codec_name.lower(), always)


def vp8_picture_id(payload: bytes) -> tuple[int, int] | None:
    """The VP8 PictureID and its width in bits (7 or 15), or None when absent."""
    if len(payload) < 3 or not payload[0] & 0x80 or not payload[1] & 0x80:
        return None
    if payload[2] & 0x80:
        if len(payload) < 4:
            return None
        return ((payload[2] & 0x7F) << 8) | payload[3], 15
    return payload[2] & 0x7F, 7


def vp8_with_picture_id(payload: bytes, picture_id: int) -> bytes:
    """``payload`` with its PictureID replaced (same width, value wrapped to that width)."""
    found = vp8_picture_id(payload)
    if found is None:
        return payload
    if found[1] == 15:
        picture_id &= 0x7FFF
        return payload[:2] + bytes(((picture_id >> 8) | 0x80, picture_id & 0xFF)) + payload[4:]
    return payload[:2] + bytes((picture_id & 0x7F,)) + payload[3:]
