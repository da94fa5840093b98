"""``python -m recorder``: run one recorder instance (the wiring point)."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import signal
import sys

from media_node.aiortc_glue import register_vp9
from media_node.guard import forbid_codecs
from observability import logs, metrics, tracing
from producers.kafka import EventProducer
from producers.topics import Topics
from recorder.service import Recorder
from recorder.settings import RecorderSettings
from recorder.uploads import minio_client

log = logging.getLogger("recorder")


async def run(settings: RecorderSettings) -> None:
    topics = Topics(settings.topic_prefix)
    minio = minio_client(
        settings.minio_endpoint,
        settings.minio_access_key,
        settings.minio_secret_key.get_secret_value(),
        settings.minio_secure,
    )
    async with EventProducer(settings.kafka_bootstrap, client_id=settings.recorder_id) as producer:
        recorder = Recorder(settings, producer, topics, minio)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        task = asyncio.create_task(recorder.run())
        print(
            f"recorder {settings.recorder_id} consuming {topics.name('recording.commands')}",
            file=sys.stderr,
            flush=True,
        )
        done, _ = await asyncio.wait([task, asyncio.create_task(stop.wait())], return_when=asyncio.FIRST_COMPLETED)
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        if task in done and task.exception() is not None:
            raise task.exception()  # type: ignore[misc]
        log.info("stopped", extra={"recorder_id": settings.recorder_id})


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m recorder",
        description="Run a roomlog recorder: executes StartRecording/StopRecording from recording.commands. "
        "Configured by ROOMLOG_RECORDER_* env vars, KAFKA_BOOTSTRAP and MINIO_*.",
    )
    parser.add_argument("--recorder-id", help="override ROOMLOG_RECORDER_RECORDER_ID")
    args = parser.parse_args(argv)
    settings = RecorderSettings()
    if args.recorder_id:
        settings.recorder_id = args.recorder_id
    logs.setup("recorder", settings.log_level)
    tracing.setup("recorder", settings, instance=settings.recorder_id)
    if settings.forbid_codecs:
        forbid_codecs()
    register_vp9()  # forwarded/recorded as is: aiortc negotiates it, never codes it
    metrics.serve(settings.metrics_port, settings.metrics_host)
    asyncio.run(run(settings))
    return 0


if __name__ == "__main__":
    sys.exit(main())
