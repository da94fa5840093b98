"""Announce a public address in the node's SDP (aiortc has no ``announcedIp``).

Behind NAT or in a container the node binds a private address; clients must be told
the public one. ``announce(sdp, address)`` rewrites every host candidate and the
connection lines to ``address`` (ports unchanged: the NAT must map them 1:1).
"""

from __future__ import annotations

import re

_CANDIDATE = re.compile(r"^(a=candidate:\S+ \d+ \S+ \d+ )(\S+)( \d+ typ host.*)$")
_CONNECTION = re.compile(r"^c=IN IP4 \S+$")


def announce(sdp: str, address: str) -> str:
    if not address:
        return sdp
    lines = []
    for line in sdp.split("\r\n"):
        match = _CANDIDATE.match(line)
        if match:
            line = f"{match.group(1)}{address}{match.group(3)}"
        elif _CONNECTION.match(line) and not line.endswith(" 0.0.0.0"):
            line = f"c=IN IP4 {address}"
        lines.append(line)
    return "\r\n".join(lines)
