"""``python -m bench.sfu_node_lossy``: the media node dropping 2 % of forwarded packets.

A check of the harness, not of the node (``bench.sfu_forwarding --experiment lossy-2pct``):
every subscriber leg drops a random 2 % of the packets it would send, through
``OutboundLeg.drop`` (the test hook: the packet is kept for retransmission, so decoding
canaries recover it by NACK). The counting subscribers must report about 2 % loss and the
first step must fail on loss.
"""

from __future__ import annotations

import random
import sys
from typing import Any

from media_node import aiortc_glue

DROP_SHARE = 0.02


def install() -> None:
    original_init = aiortc_glue.OutboundLeg.__init__

    def init(self: aiortc_glue.OutboundLeg, *args: Any, **kwargs: Any) -> None:
        original_init(self, *args, **kwargs)
        self.drop = lambda _packet: random.random() < DROP_SHARE

    aiortc_glue.OutboundLeg.__init__ = init  # type: ignore[method-assign]


if __name__ == "__main__":
    install()
    from media_node.__main__ import main

    sys.exit(main())
