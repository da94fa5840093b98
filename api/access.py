"""POST /v1/tokens: mint access tokens (guarded by the API secret)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, Depends
from pydantic import BaseModel, ConfigDict, Field

from api.errors import InvalidRequest
from api.services import Services, api_secret, services
from observability import metrics
from producers.envelope import utcnow
from producers.fields import Grant, Id

router = APIRouter(prefix="/v1", tags=["tokens"])


class TokenRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    identity: Annotated[str, Field(min_length=1, max_length=128)]
    name: Annotated[str, Field(max_length=128)] = ""
    room: Id | None = None
    grants: Annotated[list[Grant], Field(min_length=1)]
    ttl_s: Annotated[int, Field(ge=10)] = 3600
    #: The station a ``station`` token is bound to (required with that grant, refused without).
    station_id: Id | None = None


class TokenResponse(BaseModel):
    token: str
    identity: str
    room: str | None
    grants: list[Grant]
    expires_at: datetime
    station_id: str | None = None


def check_station_grant(req: TokenRequest) -> None:
    """A ``station`` token names one station and grants nothing else (an edge agent
    neither joins rooms nor commands other stations)."""
    if Grant.STATION in req.grants:
        if req.station_id is None:
            raise InvalidRequest("a station token needs station_id")
        if set(req.grants) != {Grant.STATION} or req.room is not None:
            raise InvalidRequest("a station token grants only station (no other grant, no room)")
    elif req.station_id is not None:
        raise InvalidRequest("station_id goes with the station grant")


@router.post("/tokens", status_code=201, response_model=TokenResponse, dependencies=[Depends(api_secret)])
async def create_token(req: TokenRequest, svc: Services = Depends(services)) -> TokenResponse:
    """Mint a JWT access token with grants for one identity (optionally one room)."""
    if req.ttl_s > svc.settings.max_token_ttl_s:
        raise InvalidRequest(f"ttl_s must be at most {svc.settings.max_token_ttl_s}")
    check_station_grant(req)
    token, expires = svc.issuer.mint(
        identity=req.identity,
        name=req.name,
        room=req.room,
        grants=req.grants,
        ttl_s=req.ttl_s,
        now=utcnow(),
        station=req.station_id,
    )
    metrics.API_TOKENS_ISSUED.inc()
    return TokenResponse(
        token=token,
        identity=req.identity,
        room=req.room,
        grants=sorted(set(req.grants)),
        expires_at=expires,
        station_id=req.station_id,
    )
