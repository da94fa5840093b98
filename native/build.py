"""Generate the cffi glue of the native core: ``python native/build.py OUT.c``.

``scripts/native.sh`` compiles it with ``rn_core.c`` against Debian's libsrtp2 into
``native/_rn_core<EXT_SUFFIX>`` (cffi's API mode, out of line: no setuptools needed, and
cffi releases the GIL around every call into C).
"""

from __future__ import annotations

import sys
from pathlib import Path

from cffi import FFI

HERE = Path(__file__).resolve().parent


def cdef() -> str:
    """The declarations between the CDEF markers of ``src/rn_core.h``."""
    header = (HERE / "src" / "rn_core.h").read_text()
    return header.split("/* CDEF-BEGIN */", 1)[1].split("/* CDEF-END */", 1)[0]


def main(out: str) -> None:
    ffi = FFI()
    ffi.cdef(cdef())
    ffi.set_source("native._rn_core", '#include "rn_core.h"\n')
    ffi.emit_c_code(out)


if __name__ == "__main__":
    main(sys.argv[1])
