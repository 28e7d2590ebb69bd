"""Token-bucket arithmetic as pure functions.

Both limiters use this math: `MemoryLimiter` calls these functions directly and
the Lua scripts in `redis_backend` mirror them line for line (a test runs the
same cases through both). Keeping the decision pure means it is unit-tested
without a clock, a lock or a Redis server.

A bucket of capacity ``per_minute`` refills continuously at ``per_minute / 60``
tokens per second. Its level may be negative: `settle` charges the real cost of
a request after the fact, and the resulting debt makes later requests wait.
"""

from __future__ import annotations

from typing import NamedTuple

__all__ = [
    "EPSILON",
    "Outcome",
    "decide",
    "rate_per_second",
    "refill",
    "seconds_until_full",
    "settle",
    "validate_per_minute",
]

# Float slack, relative to capacity, when comparing a refilled level with a
# request: a client that sleeps exactly `retry_after_s` must not be refused for
# a rounding shortfall. Relative, because rounding grows with the level
# (a 10M-token tpm bucket has an ulp of ~2e-9); 1e-9 of capacity admits nothing
# a caller could notice.
EPSILON = 1e-9


class Outcome(NamedTuple):
    """What `decide` returns: whether to admit, the new level, and how long to wait."""

    allowed: bool
    tokens: float
    retry_after_s: float


def validate_per_minute(per_minute: int) -> None:
    """Reject limits below one: "unlimited" is the caller's business (it skips the limiter)."""
    if isinstance(per_minute, bool) or not isinstance(per_minute, int):
        raise TypeError(f"per_minute must be an int, got {type(per_minute).__name__}")
    if per_minute < 1:
        raise ValueError(f"per_minute must be >= 1, got {per_minute}")


def rate_per_second(per_minute: int) -> float:
    """Refill rate of a bucket whose capacity is `per_minute`."""
    return per_minute / 60.0


def refill(tokens: float, last: float, now: float, per_minute: int) -> float:
    """Level at `now` of a bucket that held `tokens` at `last` (seconds), capped at capacity.

    A clock that went backwards (Redis failover onto a host whose clock lags)
    refills nothing rather than draining the bucket.
    """
    elapsed = max(0.0, now - last)
    return min(float(per_minute), tokens + elapsed * rate_per_second(per_minute))


def decide(tokens: float, amount: int, per_minute: int) -> Outcome:
    """Admit `amount` from a bucket at level `tokens` (already refilled), or say how long to wait.

    A refused request takes nothing. The caller guarantees ``amount <=
    per_minute``: a larger request could never be admitted, so the limiters
    raise `LimitTooSmall` for it instead of returning a wait that never ends.
    """
    if tokens + EPSILON * per_minute >= amount:
        return Outcome(True, tokens - amount, 0.0)
    return Outcome(False, tokens, (amount - tokens) / rate_per_second(per_minute))


def settle(tokens: float, reserved: int, actual: int, per_minute: int) -> float:
    """Level after a reservation of `reserved` turned out to cost `actual`.

    A refund never lifts the bucket above capacity; an overrun is charged in
    full even if that takes the level below zero (debt), because the tokens
    were already spent.
    """
    return min(float(per_minute), tokens + (reserved - actual))


def seconds_until_full(tokens: float, per_minute: int) -> float:
    """Time for a bucket at `tokens` to refill to capacity (how long its state is worth keeping)."""
    return max(0.0, (per_minute - tokens) / rate_per_second(per_minute))
