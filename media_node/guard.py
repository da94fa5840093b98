"""Passthrough guard: make any codec construction in this process raise.

With ``ROOMLOG_NODE_FORBID_CODECS=true`` the node replaces aiortc's codec factories
(``get_encoder`` / ``get_decoder``, where aiortc looks them up) with functions that
raise, so a test can prove forwarding never decodes or encodes.
"""

from __future__ import annotations

from typing import Any, NoReturn

import aiortc.codecs
import aiortc.rtcrtpreceiver
import aiortc.rtcrtpsender


class CodecForbidden(RuntimeError):
    pass


def _refuse(*_: Any, **__: Any) -> NoReturn:
    raise CodecForbidden("this media node forwards without decoding or encoding")


def forbid_codecs() -> None:
    for module in (aiortc.codecs, aiortc.rtcrtpreceiver, aiortc.rtcrtpsender):
        for name in ("get_encoder", "get_decoder"):
            if hasattr(module, name):
                setattr(module, name, _refuse)
