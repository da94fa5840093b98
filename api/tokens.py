"""Access tokens: JWT (HS256) with grants, an optional room and a TTL."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import jwt

from api.errors import Forbidden, TokenExpired, Unauthorized
from producers.fields import Grant


@dataclass(frozen=True)
class Claims:
    identity: str
    name: str
    room: str | None
    grants: frozenset[Grant]
    expires_at: datetime
    token_id: str
    #: A station token (``station`` grant) is bound to this station id.
    station: str | None = None

    def require(self, grant: Grant, room: str | None = None) -> None:
        """Raise ``Forbidden`` unless the token grants ``grant`` (for ``room``)."""
        if Grant.ADMIN in self.grants and (self.room is None or room in (None, self.room)):
            return
        if grant not in self.grants:
            raise Forbidden(f"token does not grant {grant.value}")
        if room is not None and self.room is not None and room != self.room:
            raise Forbidden(f"token is for room {self.room!r}, not {room!r}")

    def has(self, grant: Grant) -> bool:
        return grant in self.grants or Grant.ADMIN in self.grants


class TokenIssuer:
    def __init__(self, secret: str, issuer: str) -> None:
        self._secret = secret
        self._issuer = issuer

    def mint(
        self,
        *,
        identity: str,
        name: str,
        room: str | None,
        grants: list[Grant],
        ttl_s: int,
        now: datetime,
        station: str | None = None,
    ) -> tuple[str, datetime]:
        expires = now + timedelta(seconds=ttl_s)
        payload: dict[str, Any] = {
            "iss": self._issuer,
            "sub": identity,
            "name": name,
            "jti": uuid.uuid4().hex,
            "iat": int(now.timestamp()),
            "exp": int(expires.timestamp()),
            "grants": sorted(g.value for g in set(grants)),
        }
        if room is not None:
            payload["room"] = room
        if station is not None:
            payload["station"] = station
        return jwt.encode(payload, self._secret, algorithm="HS256"), expires

    def verify(self, token: str) -> Claims:
        try:
            payload = jwt.decode(
                token,
                self._secret,
                algorithms=["HS256"],
                issuer=self._issuer,
                options={"require": ["exp", "sub", "iss"]},
            )
        except jwt.ExpiredSignatureError as exc:
            raise TokenExpired("token expired") from exc
        except jwt.PyJWTError as exc:
            raise Unauthorized(f"invalid token: {exc}") from exc
        try:
            grants = frozenset(Grant(g) for g in payload.get("grants", []))
        except ValueError as exc:
            raise Unauthorized("token carries an unknown grant") from exc
        from datetime import UTC

        return Claims(
            identity=str(payload["sub"]),
            name=str(payload.get("name", "")),
            room=payload.get("room"),
            grants=grants,
            expires_at=datetime.fromtimestamp(payload["exp"], UTC),
            token_id=str(payload.get("jti", "")),
            station=str(payload["station"]) if payload.get("station") else None,
        )
