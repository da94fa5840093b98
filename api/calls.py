"""``POST /v1/calls``: place a call (the Kurento plan's invite flow).

The gateway writes ``CallRequested`` to ``session.events`` keyed by the caller: the one
partition that sees all of the caller's attempts, whichever gateway took them, decides
the rate limit (10 per minute). The request waits (``call_wait_s``) for that decision,
which streams address to this gateway as a notification for a one-shot reply session:
201 with the call, or 429 ``rate_limited`` with ``Retry-After``. If the decision is late
the answer is 202 ``pending`` and the outcome arrives on the caller's sockets.
"""

from __future__ import annotations

import asyncio
import math
import uuid
from datetime import datetime, timedelta
from typing import Any, Literal

from fastapi import APIRouter, Depends, Response
from pydantic import BaseModel, ConfigDict

from api.errors import ApiError, Forbidden, InvalidRequest, RateLimited
from api.services import Services, claims, request_id, services
from api.sessions import is_user_id
from api.tokens import Claims
from producers.envelope import utcnow
from producers.fields import Grant, Id
from producers.sessions import CallRequested

router = APIRouter(prefix="/v1", tags=["calls"])


class CallRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    callee: Id


class CallView(BaseModel):
    call_id: str
    caller: str
    callee: str
    #: ``inviting``: streams let the call through and ring the callee; ``pending``: the
    #: decision did not arrive within ``call_wait_s`` (watch the socket for ``call-*``).
    status: Literal["inviting", "pending"]
    expires_at: datetime


def check_caller(who: Claims, callee: str) -> None:
    if not who.has(Grant.JOIN):
        raise Forbidden("token does not grant join")
    if who.room is not None:
        raise Forbidden(f"token is bound to room {who.room!r}; calls need a user token without a room")
    if not is_user_id(who.identity):
        raise InvalidRequest("this identity cannot place calls: user ids match ^[A-Za-z0-9_.:-]{1,64}$")
    if callee == who.identity:
        raise InvalidRequest("a user cannot call themself")


@router.post(
    "/calls", status_code=201, response_model=CallView, responses={202: {"model": CallView}, 400: {}, 403: {}, 429: {}}
)
async def create_call(
    req: CallRequest,
    response: Response,
    who: Claims = Depends(claims),
    svc: Services = Depends(services),
    rid: str | None = Depends(request_id),
) -> CallView:
    """Call ``callee`` (a user id). Every session of the callee rings; the outcome comes as
    ``call-*`` messages on the WebSocket of both parties."""
    check_caller(who, req.callee)
    call_id, reply = f"C{uuid.uuid4().hex[:16]}", f"R{uuid.uuid4().hex[:16]}"
    now = utcnow()
    expires_at = now + timedelta(seconds=svc.settings.invite_ttl_s)
    decided: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()

    async def on_reply(message: dict[str, Any]) -> None:
        if not decided.done():
            decided.set_result(message)

    svc.hub.register(reply, on_reply)
    try:
        await svc.publish(
            "session.events",
            CallRequested.new(
                user_id=who.identity,
                call_id=call_id,
                callee=req.callee,
                expires_at=expires_at,
                name=who.name[:128],
                gateway_id=svc.settings.gateway_id,
                reply_session_id=reply,
                occurred_at=now,
                correlation_id=rid,
            ),
        )
        message = await asyncio.wait_for(decided, svc.settings.call_wait_s)
    except TimeoutError:
        response.status_code = 202
        return CallView(
            call_id=call_id, caller=who.identity, callee=req.callee, status="pending", expires_at=expires_at
        )
    finally:
        svc.hub.unregister(reply)
    if message.get("type") == "error":
        raise _refusal(message)
    return CallView(call_id=call_id, caller=who.identity, callee=req.callee, status="inviting", expires_at=expires_at)


def _refusal(message: dict[str, Any]) -> ApiError:
    text = str(message.get("message", "call refused"))
    if message.get("code") == "rate_limited":
        retry = float(message.get("retry_after_s", 60))
        return RateLimited(
            text,
            details={"call_id": message.get("call_id"), "retry_after_s": retry},
            headers={"Retry-After": str(max(1, math.ceil(retry)))},
        )
    return InvalidRequest(text)
