"""Run ``python -m streams`` under a profiler: ``python -m bench.profile_worker --out DIR``.

``--profiler cprofile`` (the standard library; deterministic, slows the worker about
2x) writes ``worker.prof`` and ``worker-top.txt``. ``--profiler pyinstrument``
(sampling, ~1 ms, needs pyinstrument importable, e.g. on an extra PYTHONPATH entry;
it is not a project dependency) writes ``worker-pyinstrument.txt`` (library frames
folded), ``worker-pyinstrument-all.txt``, ``worker-pyinstrument-flat.txt`` (self time)
and ``worker.pyisession``. The profile is written when the worker stops (SIGTERM →
Faust shuts down → this wrapper dumps).
"""

from __future__ import annotations

import argparse
import io
import pstats
import sys
from pathlib import Path


def _write_pstats(prof_path: Path, out: Path) -> None:
    buf = io.StringIO()
    stats = pstats.Stats(str(prof_path), stream=buf)
    stats.sort_stats("tottime").print_stats(45)
    stats.sort_stats("cumulative").print_stats(70)
    out.write_text(buf.getvalue())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.profile_worker", description="Run the streams worker under a profiler."
    )
    parser.add_argument("--out", type=Path, required=True, help="directory for the profile files")
    parser.add_argument("--profiler", choices=("cprofile", "pyinstrument"), default="cprofile")
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    sys.argv = ["streams"]
    from streams.__main__ import main as streams_main

    if args.profiler == "pyinstrument":
        from pyinstrument import Profiler

        profiler = Profiler(interval=0.001, async_mode="disabled")
        profiler.start()
        try:
            streams_main([])
        except SystemExit:
            pass
        finally:
            profiler.stop()
            session = profiler.last_session
            if session is not None:
                session.save(str(args.out / "worker.pyisession"))
            text = profiler.output_text(unicode=False, color=False, show_all=False)
            (args.out / "worker-pyinstrument.txt").write_text(text)
            (args.out / "worker-pyinstrument-all.txt").write_text(
                profiler.output_text(unicode=False, color=False, show_all=True)
            )
            (args.out / "worker-pyinstrument-flat.txt").write_text(
                profiler.output_text(unicode=False, color=False, flat=True, flat_time="self")
            )
        return 0

    import cProfile

    prof = cProfile.Profile()
    prof.enable()
    try:
        streams_main([])
    except SystemExit:
        pass
    finally:
        prof.disable()
        prof_path = args.out / "worker.prof"
        prof.dump_stats(str(prof_path))
        _write_pstats(prof_path, args.out / "worker-top.txt")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
