"""Our errors as HTTP answers: the right status and one message, in OpenAI's error shape, never a stack trace."""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException

from indexes.errors import (
    ConfigError,
    ConflictError,
    DatabaseUnavailableError,
    MissingDependencyError,
    NotFoundError,
    RagError,
    StoreError,
)
from rag.serve.gate import Busy

log = logging.getLogger(__name__)


class TooLarge(ConfigError):
    """A request over a size limit (HTTP 413); the message says the limit."""


_STATUS = {
    DatabaseUnavailableError: 503,
    TooLarge: 413,
    NotFoundError: 404,
    ConflictError: 409,
    ConfigError: 400,
    MissingDependencyError: 501,
    StoreError: 409,
}
_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    409: "conflict_error",
    413: "invalid_request_error",
    415: "invalid_request_error",
    422: "invalid_request_error",
    429: "rate_limit_error",
    501: "server_error",
    503: "server_error",
    500: "server_error",
}


def error_body(status: int, message: str, param: str | None = None) -> dict:
    """OpenAI's error object (``{"error": {message, type, param, code}}``), used by every route."""
    return {
        "error": {
            "message": message,
            "type": _TYPES.get(status, "invalid_request_error"),
            "param": param,
            "code": status,
        }
    }


def status_of(exc: RagError) -> int:
    for cls in type(exc).__mro__:
        if cls in _STATUS:
            return _STATUS[cls]
    return 400


def install(app: FastAPI) -> None:
    @app.exception_handler(RagError)
    async def _rag(request: Request, exc: RagError) -> JSONResponse:
        return JSONResponse(error_body(status_of(exc), str(exc)), status_code=status_of(exc))

    @app.exception_handler(Busy)
    async def _busy(request: Request, exc: Busy) -> JSONResponse:
        return JSONResponse(error_body(429, str(exc)), status_code=429, headers={"Retry-After": str(exc.retry_after)})

    @app.exception_handler(HTTPException)
    async def _http(request: Request, exc: HTTPException) -> JSONResponse:
        return JSONResponse(
            error_body(exc.status_code, str(exc.detail)), status_code=exc.status_code, headers=exc.headers
        )

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        parts = []
        for e in exc.errors()[:5]:
            where = ".".join(str(x) for x in e.get("loc", ()) if x != "body")
            parts.append(f"{where}: {e.get('msg')}" if where else str(e.get("msg")))
        first = exc.errors()[0].get("loc", ()) if exc.errors() else ()
        status = 400 if request.url.path.startswith("/v1/") else 422  # OpenAI answers 400; its clients expect it
        return JSONResponse(
            error_body(status, "invalid request: " + "; ".join(parts), ".".join(str(x) for x in first[1:]) or None),
            status_code=status,
        )

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unexpected error on %s %s", request.method, request.url.path)
        return JSONResponse(
            error_body(500, f"internal error ({type(exc).__name__}); the server log has the details"), status_code=500
        )
