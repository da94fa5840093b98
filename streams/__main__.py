"""``python -m streams``: run one streams worker (Faust)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import faust
import mode.loop

from observability import logs, metrics, tracing
from streams.app import build
from streams.settings import StreamsSettings


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m streams",
        description="Run a roomlog streams worker: room agent, node registry, projection. "
        "Configured by ROOMLOG_STREAMS_* env vars, KAFKA_BOOTSTRAP and DATABASE_URL.",
    )
    parser.parse_args(argv)
    settings = StreamsSettings()
    mode.loop.use("uvloop")  # before faust creates its loop: less per-message overhead
    logs.setup("streams", settings.log_level)
    tracing.setup("streams", settings, instance=settings.app_id)
    metrics.serve(settings.metrics_port, settings.metrics_host)
    Path(settings.data_dir).mkdir(parents=True, exist_ok=True)
    worker = build(settings)
    if settings.trace_file:
        worker.trace = open(settings.trace_file, "a", buffering=1)  # noqa: SIM115
    faust_worker = faust.Worker(
        worker.app, worker.driver, loglevel=settings.log_level.upper(), quiet=True, override_logging=False
    )
    faust_worker.execute_from_commandline()
    return 0


if __name__ == "__main__":
    sys.exit(main())
