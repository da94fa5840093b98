"""Work-arounds for faust-streaming 0.15.3 bugs that would break at-least-once.

Faust's consumer remembers a per-partition "read offset" and silently drops fetched
messages below it (``DROPPED MESSAGE ROFF``). When flow is suspended (recovery,
rebalance) while a message is being handed to a stream, the read offset still advances
although the message was never delivered; after the seek back to the committed
offset the re-fetched message is then dropped for good (faust-streaming issues #596,
#34; seen here as intents without any output after a worker restart). roomlog's
handlers are idempotent by event id, so delivering a message twice is harmless while
dropping one is not: the read offset is disabled and every fetched message is
delivered.
"""

from __future__ import annotations

from typing import Any

from faust.transport import consumer as faust_consumer


class DeliverEverything(dict[Any, Any]):
    """A read-offset map that never reports a read offset."""

    def __getitem__(self, key: Any) -> None:
        return None

    def get(self, key: Any, default: Any = None) -> None:
        return None


_patched = False


def install() -> None:
    """Patch faust's base consumer so every instance gets the map above. Idempotent."""
    global _patched
    if _patched:
        return
    original = faust_consumer.Consumer.__init__

    def __init__(self: Any, *args: Any, **kwargs: Any) -> None:
        original(self, *args, **kwargs)
        self._read_offset = DeliverEverything()

    faust_consumer.Consumer.__init__ = __init__  # type: ignore[method-assign]
    _patched = True
