"""The native forwarding core as Python sees it: typed wrappers over ``native._rn_core``.

A :class:`Core` owns sockets (fds handed over from Python, not closed by it), legs (one
DTLS-SRTP association each: both SRTP sessions), in streams (a publisher's encodings) and
out streams (a subscriber's rewritten copy of one in stream). ``run_once`` reads every
readable socket with ``recvmmsg``, forwards, and writes with ``sendmmsg``; whatever it does
not handle (STUN, DTLS, RTCP other than NACKs, unknown SSRCs) comes back from ``events``.
Build it with ``make native`` (``scripts/native.sh``); :func:`available` says whether it is.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, NamedTuple

try:
    from native._rn_core import ffi, lib  # type: ignore[import-not-found,unused-ignore]
except ImportError:  # not built (``make native``)
    ffi = lib = None

#: libsrtp profile numbers, as aiortc's SRTPProtectionProfile.libsrtp_profile / pylibsrtp.Policy
PROFILE_AES128_CM_SHA1_80 = 1
PROFILE_AEAD_AES_128_GCM = 7
PROFILE_AEAD_AES_256_GCM = 8
CODECS = {"vp8": 1, "h264": 2, "opus": 3}
EV_RAW, EV_RTCP, EV_RTP, EV_KEYFRAME, EV_NACK_MISS, EV_GAP = range(6)
ERRORS = {-1: "invalid argument", -2: "srtp failure", -3: "table full", -4: "system call failed", -5: "parse error"}
CORE_STATS = (
    "datagrams_in rtp_in rtcp_in raw_in srtp_errors parse_errors unknown_ssrc forwarded sent send_errors "
    "events_dropped sendmmsg_calls recvmmsg_calls"
).split()
LEG_STATS = "rx_datagrams rx_bytes rtp_in rtcp_in srtp_errors tx_packets tx_bytes rtcp_sent".split()
IN_STATS = (
    "packets bytes lost expected highest_seq keyframes gaps rtx_packets bad_rtx keyframe_requests jitter"
).split()
OUT_STATS = (
    "packets payload_bytes wire_bytes nacked retransmitted nack_misses switches last_rtp_ts last_ntp before_switch "
    "nacked_distinct"
).split()
OUT_STATE = (
    "cur tgt next_seq next_ts seq_offset ts_offset switch_seq switch_out_seq max_seq last_ts last_sent_at_us "
    "pic_offset last_pic frame_open paused"
).split()


class NativeError(RuntimeError):
    """A call into the native core failed; ``code`` is one of :data:`ERRORS`."""

    def __init__(self, what: str, code: int) -> None:
        super().__init__(f"{what}: {ERRORS.get(code, code)}")
        self.code = code


def available() -> bool:
    """Whether the compiled module is importable (``make native`` built it)."""
    return lib is not None


def _check(what: str, result: int) -> int:
    if result < 0:
        raise NativeError(what, result)
    return result


class Event(NamedTuple):
    """Something the core hands back to Python (kind: ``EV_*``)."""

    kind: int
    sock: int
    leg: int
    id: int
    addr: tuple[str, int] | None
    data: bytes


@dataclass
class Core:
    """One native forwarding core; ``close`` frees it (sockets stay open)."""

    _c: Any = None

    def __post_init__(self) -> None:
        if lib is None:
            raise NativeError("native core not built (make native)", -1)
        self._c = lib.rn_core_new()
        if self._c == ffi.NULL:
            raise NativeError("rn_core_new", -2)
        self._event_buf = ffi.new("uint8_t[]", 4096)
        self._host = ffi.new("char[]", 64)
        self._ints = ffi.new("int[5]")

    def close(self) -> None:
        """Free the core. A thread running :meth:`run_once` must have stopped first."""
        if self._c is not None:
            lib.rn_core_free(self._c)
            self._c = None

    @property
    def epoll_fd(self) -> int:
        """Readable when a socket of the core is (``loop.add_reader`` then ``run_once(0)``)."""
        return int(lib.rn_epoll_fd(self._c))

    @property
    def event_fd(self) -> int:
        """Readable while :meth:`events` has something (when ``run_once`` runs on another thread)."""
        return int(lib.rn_event_fd(self._c))

    def set_clock(self, mono: float, ntp: int) -> None:
        """Freeze the core's clocks (tests); ``mono < 0`` returns to the real ones."""
        lib.rn_set_clock(self._c, mono, ntp)

    def add_socket(self, fd: int) -> int:
        return _check("add_socket", lib.rn_add_socket(self._c, fd))

    def remove_socket(self, sock: int) -> None:
        _check("remove_socket", lib.rn_remove_socket(self._c, sock))

    def add_leg(self, sock: int, remote: tuple[str, int] | None, profile: int, rx_key: bytes, tx_key: bytes) -> int:
        """A DTLS-SRTP association: keys are master key + salt (aiortc's get_key_and_salt)."""
        host, port = remote if remote is not None else ("", 0)
        return _check(
            "add_leg",
            lib.rn_add_leg(self._c, sock, host.encode(), port, profile, rx_key, len(rx_key), tx_key, len(tx_key)),
        )

    def remove_leg(self, leg: int) -> None:
        _check("remove_leg", lib.rn_remove_leg(self._c, leg))

    def set_roc(self, leg: int, tx: bool, ssrc: int, roc: int) -> None:
        _check("set_roc", lib.rn_set_roc(self._c, leg, int(tx), ssrc, roc))

    def add_in(
        self,
        leg: int,
        ssrc: int,
        codec: str,
        clock_rate: int,
        *,
        rtx_ssrc: int = 0,
        rtx_pt: int = -1,
        audio_level_id: int = 0,
    ) -> int:
        """A publisher's encoding on ``leg`` (codec as aiortc spells it: VP8, H264, opus...)."""
        code = CODECS.get(codec.lower(), 0)
        return _check("add_in", lib.rn_add_in(self._c, leg, ssrc, rtx_ssrc, rtx_pt, code, clock_rate, audio_level_id))

    def remove_in(self, in_id: int) -> None:
        """Remove an in stream and every out stream reading it (or switching to it)."""
        _check("remove_in", lib.rn_remove_in(self._c, in_id))

    def add_out(
        self,
        leg: int,
        in_id: int,
        ssrc: int,
        payload_type: int,
        *,
        rtx_ssrc: int = 0,
        rtx_pt: int = -1,
        rtx_seq: int = 0,
        mid_id: int = 0,
        mid: str = "",
        abs_send_time_id: int = 0,
        audio_level_id: int = 0,
        initial_seq: int = 0,
        initial_ts: int = 0,
    ) -> int:
        """A subscriber's copy of ``in_id``: starts at its next keyframe (forwarder.Downstream)."""
        return _check(
            "add_out",
            lib.rn_add_out(
                self._c,
                leg,
                in_id,
                ssrc,
                payload_type,
                rtx_ssrc,
                rtx_pt,
                rtx_seq,
                mid_id,
                mid.encode(),
                abs_send_time_id,
                audio_level_id,
                initial_seq,
                initial_ts,
            ),
        )

    def remove_out(self, out: int) -> None:
        _check("remove_out", lib.rn_remove_out(self._c, out))

    def retarget(self, out: int, in_id: int) -> None:
        _check("retarget", lib.rn_out_retarget(self._c, out, in_id))

    def pause(self, out: int, paused: bool) -> None:
        _check("pause", lib.rn_out_pause(self._c, out, int(paused)))

    def out_state(self, out: int) -> dict[str, int]:
        values = ffi.new("int64_t[]", len(OUT_STATE))
        _check("out_state", lib.rn_out_get_state(self._c, out, values, len(OUT_STATE)))
        return dict(zip(OUT_STATE, list(values), strict=True))

    def set_out_state(self, out: int, state: dict[str, int]) -> None:
        values = ffi.new("int64_t[]", [state[k] for k in OUT_STATE])
        _check("set_out_state", lib.rn_out_set_state(self._c, out, values, len(OUT_STATE)))

    def run_once(self, timeout_ms: int = 0) -> int:
        """Read, forward and send what is ready (waits up to ``timeout_ms``, GIL released)."""
        return _check("run_once", lib.rn_run_once(self._c, timeout_ms))

    def feed(self, sock: int, data: bytes, remote: tuple[str, int] | None = None) -> None:
        """Process ``data`` as if ``sock`` had received it (tests); ``flush`` sends the result."""
        host, port = remote if remote is not None else ("", 0)
        _check("feed", lib.rn_feed(self._c, sock, host.encode(), port, data, len(data)))

    def flush(self) -> int:
        return _check("flush", lib.rn_flush(self._c))

    def send_rtcp(self, leg: int, data: bytes) -> None:
        """Protect plain RTCP with the leg's SRTCP session and send it (the leg's only RTCP sender)."""
        _check("send_rtcp", lib.rn_send_rtcp(self._c, leg, data, len(data)))

    def protect(self, leg: int, data: bytes, rtcp: bool = False) -> bytes:
        buf = ffi.new("uint8_t[]", len(data) + 256)
        buf[0 : len(data)] = data
        n = _check("protect", lib.rn_protect(self._c, leg, int(rtcp), buf, len(data), len(data) + 256))
        return bytes(ffi.buffer(buf, n))

    def unprotect(self, leg: int, data: bytes, rtcp: bool = False) -> bytes:
        buf = ffi.new("uint8_t[]", len(data))
        buf[0 : len(data)] = data
        n = _check("unprotect", lib.rn_unprotect(self._c, leg, int(rtcp), buf, len(data)))
        return bytes(ffi.buffer(buf, n))

    def events(self) -> list[Event]:
        """Everything queued for Python, oldest first (one consumer: it reuses its buffers)."""
        out: list[Event] = []
        i = self._ints
        while True:
            n = lib.rn_next_event(self._c, i + 0, i + 1, i + 2, i + 3, self._host, i + 4, self._event_buf, 4096)
            if n < 0:
                return out
            host = ffi.string(self._host).decode()
            addr = (host, int(i[4])) if host else None
            out.append(Event(int(i[0]), int(i[1]), int(i[2]), int(i[3]), addr, bytes(ffi.buffer(self._event_buf, n))))

    def _stats(self, fn: Any, names: list[str], *args: int) -> dict[str, int]:
        values = ffi.new("uint64_t[]", len(names))
        _check("stats", fn(self._c, *args, values, len(names)))
        return dict(zip(names, list(values), strict=True))

    def stats(self) -> dict[str, int]:
        return self._stats(lib.rn_core_stats, CORE_STATS)

    def leg_stats(self, leg: int) -> dict[str, int]:
        return self._stats(lib.rn_leg_stats, LEG_STATS, leg)

    def in_stats(self, in_id: int) -> dict[str, int]:
        return self._stats(lib.rn_in_stats, IN_STATS, in_id)

    def out_stats(self, out: int) -> dict[str, int]:
        return self._stats(lib.rn_out_stats, OUT_STATS, out)
