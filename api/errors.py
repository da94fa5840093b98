"""API errors: the codes of both client surfaces, and small named classes with a code a
client can act on, mapped to HTTP statuses in one place (``install``).

``RestError`` lists every ``error.code`` of a REST response (docs/api.md); ``SocketError``
every ``code`` of a signaling ``error`` message (docs/protocol.md): the gateway's own, the
refusals streams send on (``streams.errors.Rejection``) and the node's failures
(``media_node.errors.NodeError``). A unit test checks the docs list exactly these.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from api.messages import SocketError as SocketError  # the socket's codes live with its messages
from observability import metrics


class RestError(StrEnum):
    INVALID_REQUEST = "invalid_request"
    INVALID_SINCE = "invalid_since"
    UNSUPPORTED_ROOM_TYPE = "unsupported_room_type"
    UNAUTHORIZED = "unauthorized"
    TOKEN_EXPIRED = "token_expired"
    FORBIDDEN = "forbidden"
    NOT_FOUND = "not_found"
    ROOM_NOT_FOUND = "room_not_found"
    RECORDING_NOT_FOUND = "recording_not_found"
    METHOD_NOT_ALLOWED = "method_not_allowed"
    ROOM_EXISTS = "room_exists"
    RECORDING_ACTIVE = "recording_active"
    RECORDING_ENDED = "recording_ended"
    RECORDING_NOT_COMPLETED = "recording_not_completed"
    RATE_LIMITED = "rate_limited"
    UNAVAILABLE = "unavailable"
    HTTP_ERROR = "http_error"
    INVALID_SDP = "invalid_sdp"
    NO_VIDEO = "no_video"
    UNSUPPORTED_CODEC = "unsupported_codec"
    UNSUPPORTED_MEDIA_TYPE = "unsupported_media_type"
    SOURCE_NOT_FOUND = "source_not_found"
    RESOURCE_NOT_FOUND = "resource_not_found"
    MEDIA_REFUSED = "media_refused"


class ApiError(Exception):
    status = 400
    code = RestError.INVALID_REQUEST

    def __init__(self, message: str, details: Any = None, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.details = details
        self.headers = headers


class InvalidRequest(ApiError):
    pass


class UnsupportedRoomType(ApiError):
    code = RestError.UNSUPPORTED_ROOM_TYPE


class Unauthorized(ApiError):
    status = 401
    code = RestError.UNAUTHORIZED


class TokenExpired(Unauthorized):
    code = RestError.TOKEN_EXPIRED


class Forbidden(ApiError):
    status = 403
    code = RestError.FORBIDDEN


class NotFound(ApiError):
    status = 404
    code = RestError.NOT_FOUND


class RoomNotFound(NotFound):
    code = RestError.ROOM_NOT_FOUND


class RoomExists(ApiError):
    status = 409
    code = RestError.ROOM_EXISTS


class RateLimited(ApiError):
    status = 429
    code = RestError.RATE_LIMITED


class Unavailable(ApiError):
    status = 503
    code = RestError.UNAVAILABLE


def body(code: RestError | str, message: str, details: Any = None) -> dict[str, Any]:
    error: dict[str, Any] = {"code": code, "message": message}
    if details is not None:
        error["details"] = details
    return {"error": error}


def install(app: FastAPI) -> None:
    @app.exception_handler(ApiError)
    async def _api_error(_: Request, exc: ApiError) -> JSONResponse:
        metrics.API_ERRORS.labels(exc.code).inc()
        return JSONResponse(body(exc.code, exc.message, exc.details), status_code=exc.status, headers=exc.headers)

    @app.exception_handler(RequestValidationError)
    async def _validation(_: Request, exc: RequestValidationError) -> JSONResponse:
        metrics.API_ERRORS.labels(RestError.INVALID_REQUEST).inc()
        details = [{"loc": list(e.get("loc", ())), "msg": e.get("msg", "")} for e in exc.errors()]
        return JSONResponse(body(RestError.INVALID_REQUEST, "request validation failed", details), status_code=400)

    @app.exception_handler(StarletteHTTPException)
    async def _http(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = {404: RestError.NOT_FOUND, 405: RestError.METHOD_NOT_ALLOWED}.get(exc.status_code, RestError.HTTP_ERROR)
        metrics.API_ERRORS.labels(code).inc()
        return JSONResponse(body(code, str(exc.detail)), status_code=exc.status_code)


class RecordingNotFound(NotFound):
    code = RestError.RECORDING_NOT_FOUND


class RecordingActive(ApiError):
    status = 409
    code = RestError.RECORDING_ACTIVE


class RecordingEnded(ApiError):
    status = 409
    code = RestError.RECORDING_ENDED


class InvalidSdp(ApiError):
    code = RestError.INVALID_SDP


class NoVideo(ApiError):
    code = RestError.NO_VIDEO


class UnsupportedCodec(ApiError):
    code = RestError.UNSUPPORTED_CODEC


class UnsupportedMediaType(ApiError):
    status = 415
    code = RestError.UNSUPPORTED_MEDIA_TYPE


class SourceNotFound(NotFound):
    code = RestError.SOURCE_NOT_FOUND


class ResourceNotFound(NotFound):
    code = RestError.RESOURCE_NOT_FOUND


class MediaRefused(ApiError):
    """Streams refused a WHEP/WHIP peer's join or publish; ``details.code`` is streams' code."""

    status = 409
    code = RestError.MEDIA_REFUSED
