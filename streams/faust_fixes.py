"""Work-arounds for faust-streaming 0.15.3 bugs that break at-least-once.

roomlog's handlers are idempotent by event id, so delivering a message twice is
harmless while skipping one is not. Three defects in faust's consumer let a message
be skipped for good (all in ``faust/transport/consumer.py``):

1. **Read offset.** The consumer remembers a per-partition read offset and drops
   fetched messages below it (``DROPPED MESSAGE ROFF``). When flow is suspended
   (recovery, rebalance) while a message is handed to a stream, the read offset still
   advances although the message was never delivered; after the seek back to the
   committed offset the re-fetched message is dropped (faust-streaming #596, #34).
   Fixed by :class:`DeliverEverything`: no read offset, every fetched message is offered.
2. **Holes in delivery.** ``getmany`` stops yielding a fetched batch when flow stops or
   a partition is paused in between, and ``_drain_messages`` cancels a delivery that is
   waiting for room in a stream buffer when flow is suspended — in both cases the
   aiokafka position has already moved past the messages, and nothing seeks back
   unless a rebalance follows. Fixed by :class:`DeliveryLedger`: it knows the next
   offset each source partition must deliver; a message past it means a hole, so the
   partition is sought back to the hole and the message is held back (it comes again).
3. **Commit past the head.** ``Consumer._new_offset`` commits the first run of acked
   offsets when ``min(acked) - committed <= 1``. The committed offset is the *next*
   offset to read, so a run starting at ``committed + 1`` skips the message at
   ``committed`` (one message per partition: the "4 of 5,951 facts missing" seen in the
   restart-with-backlog test, 4 partitions); and a committed offset of 0 disables the
   check. Fixed by :func:`_new_offset`: nothing is committed until the message at the
   committed offset is acked.

Every repair is logged at WARNING with the partition and offsets, so a run shows
where faust would have lost a message.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from faust.transport import consumer as faust_consumer
from faust.utils.functional import consecutive_numbers

log = logging.getLogger(__name__)


class DeliverEverything(dict[Any, Any]):
    """A read-offset map that never reports a read offset (defect 1)."""

    def __getitem__(self, key: Any) -> None:
        return None

    def get(self, key: Any, default: Any = None) -> None:
        return None


class DeliveryLedger:
    """Next offset to deliver per source partition; holes are sought back (defect 2).

    ``expected[tp]`` is the offset of the next message that must reach the streams.
    It is set from the committed offsets whenever faust seeks to them, and advanced
    only when a delivery completes. Changelog partitions (table recovery) are left to
    faust, which reads them up to their high-water mark.
    """

    def __init__(self, consumer: Any) -> None:
        self._consumer = consumer
        self.expected: dict[Any, int] = {}
        self._sought: dict[Any, int] = {}  # partitions sought back and not yet re-delivered
        self.rewinds = 0

    def reset(self, committed: Mapping[Any, int | None]) -> None:
        """Faust sought every partition to its committed offset."""
        self.expected = {tp: off for tp, off in committed.items() if off is not None and off >= 0}
        self._sought.clear()

    def wrap(self, deliver: Callable[[Any], Awaitable[None]]) -> Callable[[Any], Awaitable[None]]:
        async def checked(message: Any) -> None:
            tp, offset = message.tp, message.offset
            if self._consumer._is_changelog_tp(tp):
                await deliver(message)
                return
            want = self.expected.get(tp)
            if want is not None and offset > want:
                await self._rewind(tp, want, offset)
                return
            await deliver(message)
            self.expected[tp] = offset + 1
            self._sought.pop(tp, None)
        return checked

    async def _rewind(self, tp: Any, want: int, got: int) -> None:
        if self._sought.get(tp) == want:
            return  # already sought back: the rest of the old batch is held back
        self.rewinds += 1
        log.warning("faust skipped offsets %s..%s of %s; seeking back to %s", want, got - 1, tp, want)
        if tp in self._consumer.assignment():
            self._sought[tp] = want
            await self._consumer._thread.seek_wait({tp: want})


def _new_offset(self: Any, tp: Any) -> int | None:
    """Faust's ``Consumer._new_offset`` without the off-by-one at the head (defect 3)."""
    acked: list[int] = self._acked[tp]
    if not acked:
        return None
    max_offset = max(acked)
    gap_for_tp = self._gap[tp]
    if gap_for_tp:  # transaction markers / compaction; unused by roomlog, kept as faust has it
        candidates = sorted(gap_for_tp.overlap(0, max_offset), key=lambda x: x.begin)
        if candidates:
            extra: list[int] = []
            for entry in candidates:
                extra.extend(range(entry.begin, entry.end))
            acked.extend(extra)
            gap_for_tp.chop(0, max(extra[-1], max_offset + 1))
    acked.sort()
    committed = self._committed_offset[tp]
    if committed is not None and acked[0] > committed:
        if acked[0] == committed + 1:  # faust 0.15.3 would commit here and skip `committed`
            log.warning("holding the commit of %s at %s: that offset is not acked yet", tp, committed)
        return None  # the message at the committed offset is not acked yet
    batch = next(consecutive_numbers(acked))
    acked[: len(batch)] = []
    self._acked_index[tp].difference_update(batch)
    return int(batch[-1]) + 1


_patched = False


def install() -> None:
    """Patch faust's base consumer class. Idempotent."""
    global _patched
    if _patched:
        return
    cls = faust_consumer.Consumer
    delegate = faust_consumer.ThreadDelegateConsumer  # the aiokafka driver's base
    original_init = cls.__init__
    original_seek_to_committed = delegate.seek_to_committed

    def __init__(self: Any, *args: Any, **kwargs: Any) -> None:
        original_init(self, *args, **kwargs)
        self._read_offset = DeliverEverything()
        self._delivery = DeliveryLedger(self)
        self.callback = self._delivery.wrap(self.callback)

    async def seek_to_committed(self: Any) -> Mapping[Any, int]:
        committed: Mapping[Any, int] = await original_seek_to_committed(self)
        self._delivery.reset(committed)
        return committed

    cls.__init__ = __init__  # type: ignore[method-assign]
    delegate.seek_to_committed = seek_to_committed  # type: ignore[method-assign]
    cls._new_offset = _new_offset  # type: ignore[method-assign]
    _patched = True
