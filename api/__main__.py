"""``python -m api``: run the api gateway (uvicorn)."""

from __future__ import annotations

import argparse
import sys

import uvicorn

from api.app import create_app
from api.settings import ApiSettings
from observability import logs


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m api",
        description="Run the roomlog api gateway. Configured by ROOMLOG_API_* env vars, "
        "KAFKA_BOOTSTRAP and DATABASE_URL.")
    parser.add_argument("--host", help="override ROOMLOG_API_HOST")
    parser.add_argument("--port", type=int, help="override ROOMLOG_API_PORT")
    args = parser.parse_args(argv)
    settings = ApiSettings()
    if args.host:
        settings.host = args.host
    if args.port:
        settings.port = args.port
    logs.setup("api", settings.log_level)
    uvicorn.run(create_app(settings), host=settings.host, port=settings.port,
                log_config=None, access_log=False, ws_max_size=64 * 1024)
    return 0


if __name__ == "__main__":
    sys.exit(main())
