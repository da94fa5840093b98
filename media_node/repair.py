"""Loss repair on a publisher leg: which packets are missing, when to NACK them again,
and when to give up and ask for a keyframe instead. Pure: the clock comes in as ``now``.

The node's receiver (``aiortc_glue.InboundTap``) NACKs a gap once, when it sees it. The
publisher's retransmission can be lost too, or never sent (its history is short); then
every subscriber is left with a hole the node cannot fill, and a decoder behind a hole
waits for a keyframe. So, as mediasoup's and libwebrtc's NACK modules do, a missing packet
is NACKed again every ``retry_s`` and given up after ``give_up_s``; the forwarder then
requests a keyframe for the subscribers (unless one already started after the hole).

References: RFC 4585 §6.2.1 (Generic NACK), §6.3.1 (PLI).
"""

from __future__ import annotations

from dataclasses import dataclass

#: A jump larger than this is a new stream (or a publisher restart), not a loss.
MAX_GAP = 512
#: At most this many packets are tracked; older ones are given up first.
MAX_TRACKED = 1024


@dataclass
class Missing:
    """One packet the node has not received: when the gap appeared, when it was NACKed."""

    detected_at: float
    nacked_at: float
    nacks: int = 1


def seq_newer(a: int, b: int) -> bool:
    """``a`` comes after ``b`` in 16-bit sequence space."""
    return a != b and (a - b) & 0xFFFF < 0x8000


class LossRepair:
    """The missing sequence numbers of one incoming stream (after RTX unwrap)."""

    def __init__(self, retry_s: float = 0.05, give_up_s: float = 0.2) -> None:
        self.retry_s = retry_s
        self.give_up_s = give_up_s
        self.max_seq: int | None = None
        self.missing: dict[int, Missing] = {}
        #: totals, for tests and logs
        self.detected = 0
        self.repaired = 0
        self.given_up = 0
        self.retries = 0

    def received(self, seq: int, now: float) -> bool:
        """Note packet ``seq``; returns True when it filled a known hole (a retransmission)."""
        if self.max_seq is None:
            self.max_seq = seq
            return False
        if seq_newer(seq, self.max_seq):
            gap = (seq - self.max_seq) & 0xFFFF
            if gap > MAX_GAP:
                self.missing.clear()  # a new stream: nothing before it can be repaired
            else:
                for lost in range(self.max_seq + 1, self.max_seq + gap):
                    # the receiver NACKed these when it saw the gap: that counts as the first try
                    self.missing[lost & 0xFFFF] = Missing(now, now)
                self.detected += gap - 1
                self._bound()
            self.max_seq = seq
            return False
        if self.missing.pop(seq, None) is not None:
            self.repaired += 1
            return True
        return False

    def pending(self, seq: int) -> bool:
        """Whether ``seq`` is missing and still being repaired (a retransmission may come)."""
        return seq in self.missing

    def due(self, now: float) -> tuple[list[int], list[int]]:
        """(sequence numbers to NACK again now, sequence numbers given up now)."""
        retry: list[int] = []
        lost: list[int] = []
        for seq, entry in list(self.missing.items()):
            if now - entry.detected_at >= self.give_up_s:
                del self.missing[seq]
                lost.append(seq)
            elif now - entry.nacked_at >= self.retry_s:
                entry.nacked_at = now
                entry.nacks += 1
                retry.append(seq)
        self.given_up += len(lost)
        self.retries += len(retry)
        return retry, lost

    def _bound(self) -> None:
        excess = len(self.missing) - MAX_TRACKED
        if excess > 0:
            for seq in list(self.missing)[:excess]:  # insertion order: the oldest first
                del self.missing[seq]
            self.given_up += excess
