"""``python -m observability.dashboards [--check]``: write every generated dashboard
next to this file (``--check``: write nothing, exit 1 if a committed file differs)."""

from __future__ import annotations

import argparse
import sys

from observability.dashboards import DASHBOARDS, HERE, render


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m observability.dashboards", description=__doc__)
    parser.add_argument("--check", action="store_true", help="compare with the committed files only")
    args = parser.parse_args()
    stale = []
    for name in DASHBOARDS:
        path, text = HERE / name, render(name)
        if args.check:
            if not path.exists() or path.read_text() != text:
                stale.append(name)
        else:
            path.write_text(text)
            print(f"wrote {path}")
    if stale:
        print(f"out of date: {', '.join(stale)} (run python -m observability.dashboards)", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
