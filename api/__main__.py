"""``python -m api``: run the api gateway (uvicorn)."""

from __future__ import annotations

import argparse
import sys

import uvicorn
from pydantic import ValidationError

from api.app import create_app
from api.settings import ApiSettings
from observability import logs, tracing


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m api",
        description="Run the roomlog api gateway. Configured by ROOMLOG_API_* env vars, "
        "KAFKA_BOOTSTRAP and DATABASE_URL. Serves HTTPS when ROOMLOG_API_TLS_CERT and "
        "ROOMLOG_API_TLS_KEY name a PEM certificate chain and key.",
    )
    parser.add_argument("--host", help="override ROOMLOG_API_HOST")
    parser.add_argument("--port", type=int, help="override ROOMLOG_API_PORT")
    args = parser.parse_args(argv)
    try:
        settings = ApiSettings()
    except ValidationError as exc:  # no input values: they may hold secrets
        for error in exc.errors(include_input=False, include_url=False):
            where = ".".join(str(p) for p in error["loc"]) or "settings"
            print(f"python -m api: invalid setting {where}: {error['msg']}", file=sys.stderr)
        return 2
    if args.host:
        settings.host = args.host
    if args.port:
        settings.port = args.port
    logs.setup("api", settings.log_level)
    tracing.setup("api", settings)
    uvicorn.run(
        create_app(settings),
        host=settings.host,
        port=settings.port,
        log_config=None,
        access_log=False,
        ws_max_size=64 * 1024,
        ssl_certfile=settings.tls_cert,
        ssl_keyfile=settings.tls_key,
    )
    tracing.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
