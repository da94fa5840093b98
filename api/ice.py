"""ICE servers for a client: STUN entries, and TURN entries with ephemeral credentials.

The credentials follow the TURN REST API that coturn implements with
``use-auth-secret``: ``username = "<expiry unix time>:<identity>"`` and
``credential = base64(HMAC-SHA1(static-auth-secret, username))``. coturn recomputes
the credential from its copy of the secret and refuses an expired username, so the
gateway needs no shared store and the secret never leaves the server side. Neither
the secret nor a credential goes into the log (DESIGN.md): ``GET /v1/ice-servers`` and
the gateway's ``joined``/``resumed`` messages both call ``ice_servers`` here.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import time
from typing import Any

from fastapi import APIRouter, Depends
from pydantic import BaseModel

from api.services import Services, claims, services
from api.settings import ApiSettings
from api.tokens import Claims

router = APIRouter(prefix="/v1", tags=["ice"])


def turn_credential(secret: str, identity: str, expires_at: int) -> tuple[str, str]:
    """The (username, credential) pair coturn accepts until ``expires_at`` (unix seconds)."""
    username = f"{expires_at}:{identity}"
    digest = hmac.new(secret.encode(), username.encode(), hashlib.sha1).digest()
    return username, base64.b64encode(digest).decode("ascii")


def turn_urls(url: str) -> list[str]:
    """``turn:host:port`` without a transport stands for both UDP and TCP."""
    if "?transport=" in url or url.startswith("turns:"):
        return [url]
    return [f"{url}?transport=udp", f"{url}?transport=tcp"]


def ice_servers(settings: ApiSettings, identity: str, now: float | None = None) -> list[dict[str, Any]]:
    """The ICE servers for ``identity``: STUN, TURN (credentials valid ``turn_ttl_s``), extras."""
    servers: list[dict[str, Any]] = []
    if settings.stun_urls:
        servers.append({"urls": list(settings.stun_urls)})
    if settings.turn_urls and settings.turn_secret is not None:
        expires_at = int(time.time() if now is None else now) + settings.turn_ttl_s
        username, credential = turn_credential(settings.turn_secret.get_secret_value(), identity, expires_at)
        urls = [u for url in settings.turn_urls for u in turn_urls(url)]
        servers.append({"urls": urls, "username": username, "credential": credential})
    servers.extend(settings.ice_servers)
    return servers


class IceServer(BaseModel):
    urls: list[str]
    username: str | None = None
    credential: str | None = None


class IceServersResponse(BaseModel):
    ice_servers: list[IceServer]
    #: How long the TURN credentials stay valid, in seconds.
    ttl_s: int


@router.get("/ice-servers", response_model=IceServersResponse, response_model_exclude_none=True)
async def get_ice_servers(
    who: Claims = Depends(claims),
    svc: Services = Depends(services),
) -> IceServersResponse:
    """STUN/TURN servers for an RTCPeerConnection, with TURN credentials for the token's identity."""
    servers = [
        IceServer(
            urls=s["urls"] if isinstance(s["urls"], list) else [s["urls"]],
            username=s.get("username"),
            credential=s.get("credential"),
        )
        for s in ice_servers(svc.settings, who.identity)
    ]
    return IceServersResponse(ice_servers=servers, ttl_s=svc.settings.turn_ttl_s)
