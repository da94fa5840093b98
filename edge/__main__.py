"""``python -m edge --config station.toml``: run the station agent (edge/agent.py).

The one place the agent is wired: config, structured logs, the sqlite command store, the
gate drivers, the camera streams, the health endpoint, signals.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import signal
import sys
from pathlib import Path

from edge.agent import EdgeAgent
from edge.cameras import Cameras, rtsp_factory
from edge.config import EdgeConfig, load
from edge.errors import ConfigError
from edge.gates import build as build_gates
from edge.health import serve
from edge.store import CommandStore
from observability import logs, tracing
from producers.settings import TracingSettings

log = logging.getLogger("edge")


async def run(config: EdgeConfig) -> int:
    store = CommandStore(Path(config.station.state_dir) / f"{config.station.id}-commands.sqlite")
    agent: EdgeAgent | None = None

    async def on_ended(camera_id: str, reason: str) -> None:
        if agent is not None:
            await agent.stream_ended(camera_id, reason)

    cameras = Cameras(config.cameras, config.api_url(), rtsp_factory, on_ended)
    agent = EdgeAgent(config, store, build_gates(config.gates), cameras)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    server = None
    if config.health.port:
        server = await serve(config.health.host, config.health.port, agent.health)
    log.info("edge agent starting", extra={"station_id": config.station.id})
    try:
        await agent.run(stop)
    finally:
        if server is not None:
            server.close()
            with contextlib.suppress(Exception):
                await server.wait_closed()
        store.close()
    log.info("edge agent stopped")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m edge",
        description="Run a roomlog station agent: keeps a WebSocket to the api (/v1/station), "
        "registers the station's cameras and gates, runs gate commands at most once "
        "(sqlite store in state_dir) and publishes camera streams on demand. "
        "Env overrides: ROOMLOG_EDGE_TOKEN, ROOMLOG_EDGE_API_URL.",
    )
    parser.add_argument("--config", required=True, help="the station's TOML file (see edge/config.py)")
    args = parser.parse_args(argv)
    try:
        config = load(args.config)
        config.token()
    except ConfigError as exc:
        print(f"python -m edge: {exc.message}", file=sys.stderr)
        return 2
    logs.setup("edge", config.log.level)
    tracing.setup("edge", TracingSettings(), instance=config.station.id)
    if config.media.forbid_codecs:
        from edge.rtsp import forbid_codecs  # the RTSP piece: every codec factory raises

        forbid_codecs()
    return asyncio.run(run(config))


if __name__ == "__main__":
    sys.exit(main())
