"""``GET /v1/asyncapi.json``: the event contract (``producers/asyncapi.py``) for consumers
outside the code. No auth: it describes the log's schema, not its data. Cacheable: the
document changes only with the code, so it carries a strong ``ETag`` (answered ``304``
on ``If-None-Match``) and ``Cache-Control: public``."""

from __future__ import annotations

import hashlib
from functools import cache

from fastapi import APIRouter, Request, Response

from producers import asyncapi

router = APIRouter(tags=["contract"])

CACHE_CONTROL = "public, max-age=300"


@cache
def _document() -> tuple[bytes, str]:
    body = asyncapi.render().encode()
    return body, '"' + hashlib.sha256(body).hexdigest()[:32] + '"'


@router.get("/v1/asyncapi.json", response_class=Response)
async def asyncapi_document(request: Request) -> Response:
    """The AsyncAPI 3.0 document of every topic and event type (the same as docs/asyncapi.json)."""
    body, etag = _document()
    headers = {"ETag": etag, "Cache-Control": CACHE_CONTROL}
    if etag in {tag.strip() for tag in request.headers.get("if-none-match", "").split(",")}:
        return Response(status_code=304, headers=headers)
    return Response(body, media_type="application/json", headers=headers)
