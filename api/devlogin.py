"""``POST /v1/dev/login {name}``: a development sign-in for the browser pages.

Enabled only when ``ROOMLOG_API_DEV_MODE=true`` (``make up`` and the browser tests set
it); otherwise the route answers 404 ``not_found`` like any unknown path. A name is
enough: it becomes the identity (lower-cased, reduced to ``[a-z0-9_.-]``), so the same
name signs in as the same user. The token grants join, publish and subscribe for any
room, plus ``admin`` so the lobby can list and create rooms (the REST room routes are
admin-only); ``grants`` narrows that (e.g. ``["join", "subscribe"]`` for a viewer).
The API secret never reaches the browser: the token is minted here, server-side.
"""

from __future__ import annotations

import re
from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, Depends
from pydantic import BaseModel, ConfigDict, Field

from api.errors import InvalidRequest, NotFound
from api.services import Services, services
from observability import metrics
from producers.envelope import utcnow
from producers.fields import Grant

router = APIRouter(prefix="/v1/dev", tags=["development"])

DEV_GRANTS = [Grant.JOIN, Grant.PUBLISH, Grant.SUBSCRIBE, Grant.ADMIN]
DEV_TTL_S = 12 * 3600


class DevLogin(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: Annotated[str, Field(min_length=1, max_length=64)]
    grants: Annotated[list[Grant] | None, Field(min_length=1)] = None


class DevLoginResponse(BaseModel):
    token: str
    identity: str
    name: str
    grants: list[Grant]
    expires_at: datetime


def identity_of(name: str) -> str:
    """The identity a display name signs in as: ``"Ana María"`` → ``"ana-mar-a"``."""
    identity = re.sub(r"[^a-z0-9_.-]+", "-", name.strip().lower()).strip("-")
    if not identity:
        raise InvalidRequest("name must contain at least one letter or digit")
    return identity


@router.post("/login", status_code=201, response_model=DevLoginResponse)
async def dev_login(req: DevLogin, svc: Services = Depends(services)) -> DevLoginResponse:
    """Development sign-in: a name in, a user token out (dev mode only, else 404)."""
    if not svc.settings.dev_mode:
        raise NotFound("Not Found")
    grants = sorted(set(req.grants or DEV_GRANTS))
    extra = [g for g in grants if g not in DEV_GRANTS]
    if extra:
        raise InvalidRequest(f"the development login cannot grant {[g.value for g in extra]}")
    identity = identity_of(req.name)
    ttl_s = min(DEV_TTL_S, svc.settings.max_token_ttl_s)
    token, expires = svc.issuer.mint(
        identity=identity, name=req.name.strip(), room=None, grants=grants, ttl_s=ttl_s, now=utcnow()
    )
    metrics.API_TOKENS_ISSUED.inc()
    return DevLoginResponse(token=token, identity=identity, name=req.name.strip(), grants=grants, expires_at=expires)
