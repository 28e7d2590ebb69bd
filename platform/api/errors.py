"""The one mapping from domain errors to HTTP: ``{"error": {message, type, param, code}}``."""

from __future__ import annotations

import logging
import math

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from moeplane import errors

__all__ = ["error_response", "install_error_handlers"]

log = logging.getLogger(__name__)

# (HTTP status, OpenAI error type) for each domain error
_STATUS: dict[type[errors.DomainError], tuple[int, str]] = {
    errors.InvalidRequest: (422, "invalid_request_error"),
    errors.Unauthenticated: (401, "authentication_error"),
    errors.Forbidden: (403, "permission_error"),
    errors.NotFound: (404, "not_found_error"),
    errors.Conflict: (409, "conflict_error"),
    errors.PayloadTooLarge: (413, "invalid_request_error"),
    errors.QuotaExceeded: (429, "quota_exceeded_error"),
    errors.RateLimited: (429, "rate_limit_error"),
    errors.ServiceUnavailable: (503, "service_unavailable_error"),
}
_HTTP_TYPES = {401: "authentication_error", 403: "permission_error", 404: "not_found_error"}


def error_response(
    status: int,
    message: str,
    *,
    type_: str,
    param: str | None = None,
    code: str | None = None,
    headers: dict[str, str] | None = None,
) -> JSONResponse:
    body = {"error": {"message": message, "type": type_, "param": param, "code": code}}
    return JSONResponse(body, status_code=status, headers=headers)


def _domain(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, errors.DomainError)
    status, type_ = next(
        (v for cls, v in _STATUS.items() if isinstance(exc, cls)), (400, "invalid_request_error")
    )
    headers = None
    if isinstance(exc, errors.RateLimited):
        headers = {"Retry-After": str(max(1, math.ceil(exc.retry_after_s)))}
    return error_response(
        status, exc.message, type_=type_, param=exc.param, code=exc.code, headers=headers
    )


def _param_of(loc: tuple) -> str | None:
    parts = [str(p) for p in loc if p not in ("body", "query", "path", "header")]
    return ".".join(parts) or None


def _validation(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    first = exc.errors()[0] if exc.errors() else {"loc": (), "msg": "Invalid request"}
    param = _param_of(tuple(first.get("loc", ())))
    message = f"{param}: {first['msg']}" if param else first["msg"]
    return error_response(422, message, type_="invalid_request_error", param=param, code="invalid")


def _http(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    type_ = _HTTP_TYPES.get(exc.status_code, "invalid_request_error")
    return error_response(
        exc.status_code, str(exc.detail), type_=type_, headers=getattr(exc, "headers", None)
    )


def _unexpected(_: Request, exc: Exception) -> JSONResponse:
    log.exception("unhandled error", exc_info=exc)
    return error_response(500, "Internal server error", type_="api_error", code="internal")


def install_error_handlers(app: FastAPI) -> None:
    app.add_exception_handler(errors.DomainError, _domain)
    app.add_exception_handler(RequestValidationError, _validation)
    app.add_exception_handler(StarletteHTTPException, _http)
    app.add_exception_handler(Exception, _unexpected)
