"""``python -m deploy.k8s.probe``: the exec probe of the services whose only HTTP endpoint is
their Prometheus ``/metrics`` (streams, media node, recorder; asked on 127.0.0.1): exit 0 when it
answers 200 within the timeout, else 1 with the reason on stderr.

``--port N`` names the port; ``--port-base B --ordinal-from VAR`` computes it as B plus the
ordinal at the end of the pod name in ``$VAR`` (StatefulSet pods sharing a host network).
"""

from __future__ import annotations

import argparse
import os
import sys
import urllib.request


def port_from(args: argparse.Namespace) -> int:
    if args.port is not None:
        return int(args.port)
    name = os.environ.get(args.ordinal_from or "", "")
    ordinal = name.rsplit("-", 1)[-1]
    if not ordinal.isdigit():
        raise SystemExit(f"probe: ${args.ordinal_from} = {name!r} does not end in -<ordinal>")
    return int(args.port_base) + int(ordinal)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m deploy.k8s.probe", description=__doc__.split("\n\n")[0])
    parser.add_argument("--port", type=int)
    parser.add_argument("--port-base", type=int)
    parser.add_argument("--ordinal-from", help="env var holding the pod name")
    parser.add_argument("--path", default="/metrics")
    parser.add_argument("--timeout", type=float, default=5.0)
    args = parser.parse_args(argv)
    if args.port is None and (args.port_base is None or not args.ordinal_from):
        parser.error("give --port, or --port-base with --ordinal-from")
    url = f"http://127.0.0.1:{port_from(args)}{args.path}"
    try:
        with urllib.request.urlopen(url, timeout=args.timeout) as resp:  # noqa: S310 - loopback only
            status = resp.status
    except OSError as exc:
        print(f"probe: {url}: {exc}", file=sys.stderr)
        return 1
    if status != 200:
        print(f"probe: {url}: HTTP {status}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
