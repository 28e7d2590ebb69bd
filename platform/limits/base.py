"""The `Limiter` contract shared by the in-process and Redis backends, and its errors."""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass

from moeplane.errors import QuotaExceeded, ServiceUnavailable
from moeplane.limits.bucket import validate_per_minute

__all__ = ["Decision", "LimitTooSmall", "Limiter", "LimiterUnavailable"]


@dataclass(frozen=True)
class Decision:
    """Result of `Limiter.take`.

    ``retry_after_s`` is 0.0 when allowed, otherwise the seconds until the
    bucket holds `amount` again (finite; the API rounds it up for
    ``Retry-After``). ``remaining`` is the level after the decision and is
    negative while the bucket is in debt.
    """

    allowed: bool
    retry_after_s: float
    remaining: float


class LimiterUnavailable(ServiceUnavailable):
    """The shared limiter state (Redis) cannot be reached; the API answers 503.

    Failing closed is deliberate: admitting everyone while Redis is down would
    let one tenant take the whole cluster.
    """

    code = "rate_limiter_unavailable"


class LimitTooSmall(QuotaExceeded):
    """One request needs more than a full bucket, so waiting would never help.

    Raised instead of a denial with a retry time, because a client honouring
    ``Retry-After`` would retry forever. Not retryable: the request must shrink
    (fewer ``max_tokens``) or the tenant's limit must rise.
    """

    code = "request_too_large"

    def __init__(self, key: str, amount: int, per_minute: int):
        super().__init__(
            f"request needs {amount} units but the limit {key!r} allows at most "
            f"{per_minute} per minute",
        )
        self.key = key
        self.amount = amount
        self.per_minute = per_minute


def check_take(key: str, amount: int, per_minute: int) -> None:
    """Validate `take` arguments the same way for every backend."""
    _check_key(key)
    validate_per_minute(per_minute)
    _check_count("amount", amount)
    if amount > per_minute:
        raise LimitTooSmall(key, amount, per_minute)


def check_settle(key: str, reserved: int, actual: int, per_minute: int) -> None:
    """Validate `settle` arguments the same way for every backend."""
    _check_key(key)
    validate_per_minute(per_minute)
    _check_count("reserved", reserved)
    _check_count("actual", actual)


def _check_key(key: str) -> None:
    if not isinstance(key, str) or not key:
        raise ValueError("limiter key must be a non-empty string")


def _check_count(name: str, value: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int, got {type(value).__name__}")
    if value < 0:
        raise ValueError(f"{name} must be >= 0, got {value}")


class Limiter(ABC):
    """Per-key token buckets; thread-safe, and (Redis) shared across processes.

    Every method validates its arguments: ``per_minute`` must be >= 1 (an
    unlimited tenant is the caller's business: it does not call the limiter),
    counts must be non-negative ints, keys non-empty.
    """

    @abstractmethod
    def take(self, key: str, amount: int, per_minute: int) -> Decision:
        """Atomically take `amount` from bucket `key` (capacity `per_minute`,
        refilling at per_minute/60 per second). Takes nothing when denied.

        Raises `LimitTooSmall` when ``amount > per_minute``.
        """

    @abstractmethod
    def settle(self, key: str, reserved: int, actual: int, per_minute: int) -> None:
        """After a reservation of `reserved`, the real cost was `actual`: refund the
        difference (capped at capacity) or charge the overrun unconditionally (the
        bucket may go negative, so later requests wait)."""

    @abstractmethod
    def reset(self, key: str) -> None:
        """Forget bucket `key` so it is full again (tests, admin)."""

    @abstractmethod
    def close(self) -> None:
        """Release connections; the limiter must not be used afterwards."""
