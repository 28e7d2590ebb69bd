"""Domain errors. Domain code raises these; only the API layer maps them to HTTP."""

from __future__ import annotations

__all__ = [
    "Conflict",
    "DomainError",
    "Forbidden",
    "InvalidRequest",
    "NotFound",
    "PayloadTooLarge",
    "QuotaExceeded",
    "RateLimited",
    "ServiceUnavailable",
    "Unauthenticated",
]


class DomainError(Exception):
    """Base class: ``message`` for people, ``code`` for programs, ``param`` names the field."""

    code = "error"

    def __init__(self, message: str, *, param: str | None = None, code: str | None = None):
        super().__init__(message)
        self.message = message
        self.param = param
        if code is not None:
            self.code = code


class InvalidRequest(DomainError):
    code = "invalid_request"


class NotFound(DomainError):
    code = "not_found"


class Conflict(DomainError):
    code = "conflict"


class Unauthenticated(DomainError):
    code = "invalid_api_key"


class Forbidden(DomainError):
    code = "forbidden"


class PayloadTooLarge(DomainError):
    code = "payload_too_large"


class QuotaExceeded(DomainError):
    """A tenant quota would be exceeded; not retryable until usage drops or the quota rises."""

    code = "quota_exceeded"


class RateLimited(DomainError):
    code = "rate_limit_exceeded"

    def __init__(self, message: str, *, retry_after_s: float, param: str | None = None):
        super().__init__(message, param=param)
        self.retry_after_s = retry_after_s


class ServiceUnavailable(DomainError):
    code = "service_unavailable"
