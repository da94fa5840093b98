"""The browser client: ``web/`` served as static files under ``/web/``, ``/`` redirects
to the sign-in page, and the development login (``api/devlogin.py``).

The SDK (``/web/sdk/*.js``) and the pages (``/web/*.html``) are plain ES modules, no
build step. Mounted under ``/web`` (not ``/``) so unknown API paths keep the api's
``{"error": {"code": "not_found"}}`` answer.
"""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter, FastAPI
from fastapi.responses import RedirectResponse
from fastapi.staticfiles import StaticFiles

from api import devlogin

WEB_DIR = Path(__file__).resolve().parents[1] / "web"

router = APIRouter(tags=["web"])


@router.get("/", include_in_schema=False)
async def index() -> RedirectResponse:
    return RedirectResponse("/web/", status_code=307)


def install(app: FastAPI, web_dir: Path = WEB_DIR) -> None:
    """Add the pages, the static SDK and the development login to ``app``."""
    app.include_router(devlogin.router)
    app.include_router(router)
    app.mount("/web", StaticFiles(directory=web_dir, html=True), name="web")
