"""A real RTSP camera for the tests: GStreamer's RTSP server streaming H.264.

``python -m tests.rtsp_server --port 8554 --http-port 8555`` serves ``rtsp://HOST:PORT/cam1``
(and ``/cam2``, ... with ``--cameras N``): a 320x180 test pattern at 15 fps, encoded by
x264 (constrained baseline, zerolatency, no B-frames, a keyframe every second), payloaded by
``rtph264pay`` with SPS/PPS before every IDR. Every frame carries the camera's code (its
number) and a frame counter drawn exactly as ``client.synthetic.encode_pattern`` draws them,
so ``decode_pattern`` reads them back after decoding (``tests/e2e/media.py`` Watcher).

One pipeline per camera is shared by all RTSP clients (``set_shared``). The counter keeps
counting across sessions. ``GET http://HOST:HTTP_PORT/sessions`` answers
``{"sessions": N, "paths": {"/cam1": N1, ...}}``: the RTSP sessions the server holds now
(a session closes on TEARDOWN or when its TCP connection drops).

It needs the system's ``python3-gi`` with GStreamer's RTSP server (Debian
``gstreamer1.0-rtsp gir1.2-gst-rtsp-server-1.0 gstreamer1.0-plugins-ugly``, installed by
``scripts/infra.sh install``). The project venv does not see the system ``gi``: run it with
``/usr/bin/python3`` (``RtspCamera`` below does, as a subprocess). It imports nothing else
from the project, so it runs without the venv.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

WIDTH, HEIGHT, FPS = 320, 180, 15
BITS, BLOCK = 32, 10  # as client.synthetic
SYSTEM_PYTHON = "/usr/bin/python3"


def pattern_i420(code: int, counter: int, width: int = WIDTH, height: int = HEIGHT) -> bytes:
    """One I420 frame, byte for byte ``client.synthetic.encode_pattern`` (without numpy)."""
    gradient = bytes(((x + counter * 3) % 200 + 28) for x in range(width))
    rows = [bytearray(b"\x80" * width) for _ in range(BLOCK * 3)]
    value = ((code & 0xFF) << 24) | (counter & 0xFFFFFF)
    per_row = width // BLOCK
    for bit in range(BITS):
        row, col = divmod(bit, per_row)
        on = (value >> (BITS - 1 - bit)) & 1
        for r in range(row * BLOCK, (row + 1) * BLOCK):
            rows[r][col * BLOCK : (col + 1) * BLOCK] = (b"\xeb" if on else b"\x10") * BLOCK
    y = b"".join(bytes(r) for r in rows) + gradient * (height - BLOCK * 3)
    return y + b"\x80" * (width * height // 2)


def launch_line(width: int = WIDTH, height: int = HEIGHT, fps: int = FPS) -> str:
    caps = f"video/x-raw,format=I420,width={width},height={height},framerate={fps}/1"
    return (
        f"( appsrc name=src is-live=true format=time do-timestamp=true caps={caps} "
        "! x264enc tune=zerolatency speed-preset=ultrafast threads=1 sliced-threads=false aud=false "
        f"key-int-max={fps} bframes=0 bitrate=600 "
        "! video/x-h264,profile=constrained-baseline,stream-format=byte-stream "
        "! h264parse ! rtph264pay name=pay0 pt=96 config-interval=-1 )"
    )


def serve(port: int, http_port: int, cameras: int, address: str) -> None:  # pragma: no cover - system python
    import gi

    gi.require_version("Gst", "1.0")
    gi.require_version("GstRtspServer", "1.0")
    from gi.repository import GLib, Gst, GstRtspServer

    Gst.init(None)
    server = GstRtspServer.RTSPServer()
    server.set_address(address)
    server.set_service(str(port))
    counters = {n: 0 for n in range(1, cameras + 1)}
    sessions: dict[str, int] = {}
    lock = threading.Lock()

    def feeder(n: int, appsrc: Any) -> Any:
        def push() -> bool:
            data = pattern_i420(n, counters[n])
            counters[n] += 1
            buffer = Gst.Buffer.new_wrapped(data)
            buffer.duration = Gst.SECOND // FPS
            return bool(appsrc.emit("push-buffer", buffer) == Gst.FlowReturn.OK)

        return push

    def on_configure(factory: Any, media: Any, n: int) -> None:
        appsrc = media.get_element().get_child_by_name("src")
        timer = GLib.timeout_add(1000 // FPS, feeder(n, appsrc))
        media.connect("unprepared", lambda _m: GLib.source_remove(timer))

    mounts = server.get_mount_points()
    for n in range(1, cameras + 1):
        factory = GstRtspServer.RTSPMediaFactory()
        factory.set_launch(launch_line())
        factory.set_shared(True)
        factory.connect("media-configure", on_configure, n)
        mounts.add_factory(f"/cam{n}", factory)

    def count() -> bool:
        pool = server.get_session_pool()
        pool.cleanup()
        paths: dict[str, int] = {}
        for session in pool.filter(None, None):
            for path in [f"/cam{n}" for n in range(1, cameras + 1)]:
                media, _ = session.get_media(path)
                if media is not None:
                    paths[path] = paths.get(path, 0) + 1
        with lock:
            sessions.clear()
            sessions.update(paths)
            sessions["*"] = pool.get_n_sessions()
        return True

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 - http.server's name
            if self.path != "/sessions":
                self.send_error(404)
                return
            with lock:
                body = json.dumps(
                    {"sessions": sessions.get("*", 0), "paths": {k: v for k, v in sessions.items() if k != "*"}}
                ).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *_: Any) -> None:
            pass

    http = ThreadingHTTPServer((address, http_port), Handler)
    threading.Thread(target=http.serve_forever, daemon=True).start()
    server.attach(None)
    count()
    GLib.timeout_add(200, count)
    loop = GLib.MainLoop()
    signal.signal(signal.SIGTERM, lambda *_: loop.quit())
    print(f"rtsp ready rtsp://{address}:{port}/cam1 sessions http://{address}:{http_port}/sessions", flush=True)
    loop.run()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


class RtspCamera:
    """Runs this module under the system python as a subprocess (tests' handle).

    ``url(n)`` is camera n's RTSP URL; ``sessions()`` the server's session count; ``stop()``
    SIGKILLs it (a camera that drops); ``start()`` again on the same ports (it comes back).
    """

    def __init__(
        self, host: str = "127.0.0.2", port: int | None = None, http_port: int | None = None, cameras: int = 1
    ) -> None:
        self.host = host
        self.port = port or free_port()
        self.http_port = http_port or free_port()
        self.cameras = cameras
        self.proc: subprocess.Popen[bytes] | None = None

    def url(self, n: int = 1) -> str:
        return f"rtsp://{self.host}:{self.port}/cam{n}"

    def start(self, timeout: float = 20.0) -> None:
        root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
        args = [SYSTEM_PYTHON, "-m", "tests.rtsp_server", "--port", str(self.port)]
        args += ["--http-port", str(self.http_port), "--cameras", str(self.cameras), "--address", self.host]
        self.proc = subprocess.Popen(args, cwd=root, stdout=subprocess.PIPE)
        assert self.proc.stdout is not None
        deadline = time.monotonic() + timeout
        line = self.proc.stdout.readline().decode()
        if "rtsp ready" not in line:
            raise RuntimeError(f"the RTSP server did not start (rc {self.proc.poll()}): {line!r}")
        while time.monotonic() < deadline:
            with contextlib.suppress(OSError):
                self.sessions()
                return
            time.sleep(0.1)
        raise RuntimeError("the RTSP server's /sessions does not answer")

    def sessions(self, path: str | None = None) -> int:
        with urllib.request.urlopen(f"http://{self.host}:{self.http_port}/sessions", timeout=5) as response:
            body = json.loads(response.read())
        return int(body["sessions"] if path is None else body["paths"].get(path, 0))

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)
        self.proc = None


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--port", type=int, default=8554)
    parser.add_argument("--http-port", type=int, default=0, help="session count endpoint (default: port + 1)")
    parser.add_argument("--cameras", type=int, default=1)
    parser.add_argument("--address", default="0.0.0.0")
    args = parser.parse_args(argv)
    serve(args.port, args.http_port or args.port + 1, args.cameras, args.address)


if __name__ == "__main__":
    if sys.executable != SYSTEM_PYTHON and not os.environ.get("ROOMLOG_RTSP_ANY_PYTHON"):
        os.execv(SYSTEM_PYTHON, [SYSTEM_PYTHON, "-m", "tests.rtsp_server", *sys.argv[1:]])
    main()
