"""HTTPS for `make up`: `scripts/up.sh cert` makes a self-signed certificate and the api
serves HTTPS and WSS with it (ROOMLOG_API_TLS_CERT / ROOMLOG_API_TLS_KEY)."""

from __future__ import annotations

import json
import os
import ssl
import subprocess
from pathlib import Path

import httpx
import websockets

from producers.topics import Topics
from tests.harness import REPO, Infra, Service, api_service, free_port, wait_for


def self_signed(run_dir: Path) -> tuple[str, str, str]:
    """``scripts/up.sh cert`` into ``run_dir``: (cert path, key path, subjectAltName text)."""
    run = subprocess.run(
        [str(REPO / "scripts/up.sh"), "cert"],
        capture_output=True,
        text=True,
        check=True,
        env={**os.environ, "ROOMLOG_RUN_DIR": str(run_dir), "ROOMLOG_API_TLS_HOSTS": "roomlog.example, 10.1.2.3"},
    )
    cert, key = run.stdout.split()
    assert Path(cert).is_file() and Path(key).stat().st_mode & 0o077 == 0
    san = subprocess.run(
        ["openssl", "x509", "-in", cert, "-noout", "-ext", "subjectAltName"], capture_output=True, text=True, check=True
    ).stdout
    return cert, key, san


async def test_api_serves_https_and_wss_with_a_self_signed_certificate(
    infra: Infra, topics: Topics, prefix: str, services: list[Service], tmp_path: Path
) -> None:
    cert, key, san = self_signed(tmp_path / "run")
    for name in ("DNS:localhost", "IP Address:127.0.0.1", "DNS:roomlog.example", "IP Address:10.1.2.3"):
        assert name in san, san

    port = free_port()
    api = api_service(infra, prefix, tmp_path, port, tls_cert=cert, tls_key=key).start()
    services.append(api)
    context = ssl.create_default_context(cafile=cert)

    async def healthy() -> bool:
        assert api.alive(), api.tail()
        try:
            async with httpx.AsyncClient(verify=context) as client:
                return (await client.get(f"https://127.0.0.1:{port}/healthz", timeout=2)).status_code == 200
        except httpx.HTTPError:
            return False

    try:
        await wait_for(healthy, 60, "the api to answer over HTTPS")
    except AssertionError as exc:
        raise AssertionError(f"{exc}\n--- api log ---\n{api.tail()}") from None
    async with httpx.AsyncClient(verify=context) as client:
        r = await client.get(f"https://localhost:{port}/v1/ice-servers")
        assert r.status_code == 401 and r.json()["error"]["code"] == "unauthorized"
    async with httpx.AsyncClient() as client:  # the system trust store does not know the certificate
        try:
            await client.get(f"https://127.0.0.1:{port}/healthz")
            raise AssertionError("an unknown self-signed certificate was accepted")
        except httpx.ConnectError:
            pass
    async with websockets.connect(f"wss://127.0.0.1:{port}/v1/rtc?token=nope", ssl=context) as ws:
        assert json.loads(await ws.recv())["code"] == "unauthorized"
