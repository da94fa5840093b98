"""API errors: small named classes with a code a client can act on, mapped to
HTTP statuses in one place (``install``)."""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from observability import metrics


class ApiError(Exception):
    status = 400
    code = "invalid_request"

    def __init__(self, message: str, details: Any = None, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.details = details
        self.headers = headers


class InvalidRequest(ApiError):
    pass


class UnsupportedRoomType(ApiError):
    code = "unsupported_room_type"


class Unauthorized(ApiError):
    status = 401
    code = "unauthorized"


class TokenExpired(Unauthorized):
    code = "token_expired"


class Forbidden(ApiError):
    status = 403
    code = "forbidden"


class NotFound(ApiError):
    status = 404
    code = "not_found"


class RoomNotFound(NotFound):
    code = "room_not_found"


class RoomExists(ApiError):
    status = 409
    code = "room_exists"


class RateLimited(ApiError):
    status = 429
    code = "rate_limited"


class Unavailable(ApiError):
    status = 503
    code = "unavailable"


def body(code: str, message: str, details: Any = None) -> dict[str, Any]:
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
        metrics.API_ERRORS.labels("invalid_request").inc()
        details = [{"loc": list(e.get("loc", ())), "msg": e.get("msg", "")} for e in exc.errors()]
        return JSONResponse(body("invalid_request", "request validation failed", details), status_code=400)

    @app.exception_handler(StarletteHTTPException)
    async def _http(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
        metrics.API_ERRORS.labels(code).inc()
        return JSONResponse(body(code, str(exc.detail)), status_code=exc.status_code)


class RecordingNotFound(NotFound):
    code = "recording_not_found"


class RecordingActive(ApiError):
    status = 409
    code = "recording_active"


class RecordingEnded(ApiError):
    status = 409
    code = "recording_ended"
