"""The faust-streaming consumer repairs: commit offsets and delivery holes."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

from intervaltree import IntervalTree

from streams import faust_fixes
from streams.faust_fixes import DeliveryLedger, _new_offset

TP = ("rtc.intents", 0)
CHANGELOG = ("app-rooms-changelog", 0)


@dataclass
class Offsets:
    """The attributes faust's ``Consumer._new_offset`` reads."""

    committed: int | None
    acked: list[int]
    _acked: dict[Any, list[int]] = field(default_factory=dict)
    _acked_index: dict[Any, set[int]] = field(default_factory=lambda: defaultdict(set))
    _gap: dict[Any, IntervalTree] = field(default_factory=lambda: defaultdict(IntervalTree))
    _committed_offset: dict[Any, int | None] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self._acked[TP] = list(self.acked)
        self._acked_index[TP] = set(self.acked)
        self._committed_offset[TP] = self.committed


def test_commit_waits_for_the_message_at_the_committed_offset() -> None:
    # committed = 31 is the next offset to read: 31 is not acked, so nothing may be committed
    # (faust 0.15.3 commits 35 here and skips 31 for good)
    assert _new_offset(Offsets(committed=31, acked=[32, 33, 34]), TP) is None


def test_commit_from_offset_zero_checks_the_head_too() -> None:
    assert _new_offset(Offsets(committed=0, acked=[3, 4]), TP) is None


def test_commit_advances_over_the_first_run() -> None:
    offsets = Offsets(committed=31, acked=[33, 31, 32, 36])
    assert _new_offset(offsets, TP) == 34
    assert offsets._acked[TP] == [36]
    assert _new_offset(Offsets(committed=None, acked=[5, 6]), TP) == 7


class FakeThread:
    def __init__(self) -> None:
        self.seeks: list[dict[Any, int]] = []

    async def seek_wait(self, partitions: dict[Any, int]) -> None:
        self.seeks.append(dict(partitions))


class FakeConsumer:
    def __init__(self) -> None:
        self._thread = FakeThread()

    def _is_changelog_tp(self, tp: Any) -> bool:
        return tp == CHANGELOG

    def assignment(self) -> set[Any]:
        return {TP, CHANGELOG}


@dataclass
class Message:
    tp: Any
    offset: int


async def test_a_hole_in_delivery_seeks_back_once_and_holds_the_rest() -> None:
    consumer = FakeConsumer()
    ledger = DeliveryLedger(consumer)
    delivered: list[int] = []

    async def deliver(message: Any) -> None:
        delivered.append(message.offset)

    checked = ledger.wrap(deliver)
    ledger.reset({TP: 10})
    for offset in (10, 11, 13, 14, 15):  # 12 was fetched and dropped
        await checked(Message(TP, offset))
    assert delivered == [10, 11]
    assert consumer._thread.seeks == [{TP: 12}]
    for offset in (12, 13, 14):  # fetched again after the seek
        await checked(Message(TP, offset))
    assert delivered == [10, 11, 12, 13, 14]
    assert ledger.rewinds == 1


async def test_redelivery_below_the_expected_offset_passes_and_changelogs_are_untouched() -> None:
    consumer = FakeConsumer()
    ledger = DeliveryLedger(consumer)
    delivered: list[tuple[Any, int]] = []

    async def deliver(message: Any) -> None:
        delivered.append((message.tp, message.offset))

    checked = ledger.wrap(deliver)
    ledger.reset({TP: 5, CHANGELOG: None})
    for m in (Message(TP, 5), Message(TP, 6), Message(TP, 4), Message(CHANGELOG, 0), Message(CHANGELOG, 9)):
        await checked(m)
    assert delivered == [(TP, 5), (TP, 6), (TP, 4), (CHANGELOG, 0), (CHANGELOG, 9)]
    assert consumer._thread.seeks == []


async def test_a_cancelled_delivery_is_not_counted_as_delivered() -> None:
    consumer = FakeConsumer()
    ledger = DeliveryLedger(consumer)

    async def suspended(message: Any) -> None:
        raise RuntimeError("flow suspended")  # stands for the cancellation faust does

    checked = ledger.wrap(suspended)
    ledger.reset({TP: 7})
    try:
        await checked(Message(TP, 7))
    except RuntimeError:
        pass
    assert ledger.expected[TP] == 7


def test_read_offsets_never_cause_a_drop() -> None:
    read = faust_fixes.DeliverEverything()
    read.update({"tp": 150})
    read["tp2"] = 3
    # faust drops a fetched message when `offset < read_offset[tp]`; None means deliver
    assert read["tp"] is None and read.get("tp2") is None


def test_install_patches_the_consumer_classes() -> None:
    from faust.transport import consumer

    faust_fixes.install()
    faust_fixes.install()  # idempotent
    assert "DeliverEverything" in consumer.Consumer.__init__.__code__.co_names
    assert consumer.Consumer._new_offset is faust_fixes._new_offset
    assert consumer.ThreadDelegateConsumer.seek_to_committed.__module__ == "streams.faust_fixes"
