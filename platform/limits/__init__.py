"""Per-tenant rate limits: requests-per-minute and tokens-per-minute token buckets.

Callers (the API's limits dependency) own the key naming convention, one
bucket per tenant and dimension::

    limiter.take(f"{tenant_id}:rpm", 1, quotas.rpm)
    limiter.take(f"{tenant_id}:tpm", estimate, quotas.tpm)   # reserve ...
    limiter.settle(f"{tenant_id}:tpm", estimate, actual, quotas.tpm)  # ... then settle

Tokens are *reserved, then settled*: reserve the estimate (prompt tokens +
``max_tokens``) before the model runs, and settle with the real count after,
which refunds the unused part or charges an overrun as debt. A tenant without
a limit (quota ``None``) simply does not call the limiter; ``per_minute`` must
be >= 1.

Errors: a denial is a `Decision` with ``allowed=False`` and a finite
``retry_after_s`` (the API answers 429 with ``Retry-After``). A request larger
than the whole bucket raises `LimitTooSmall` (it could never pass, so no retry
time is offered). An unreachable Redis raises `LimiterUnavailable` (503).

`make_limiter` picks the backend: Redis (shared by all API processes) when a
URL is configured, otherwise an in-process limiter.
"""

from __future__ import annotations

from moeplane.limits.base import Decision, Limiter, LimiterUnavailable, LimitTooSmall
from moeplane.limits.memory import MemoryLimiter
from moeplane.limits.redis_backend import RedisLimiter

__all__ = [
    "Decision",
    "LimitTooSmall",
    "Limiter",
    "LimiterUnavailable",
    "MemoryLimiter",
    "RedisLimiter",
    "make_limiter",
]


def make_limiter(redis_url: str | None) -> Limiter:
    """`RedisLimiter` when a Redis URL is configured, else `MemoryLimiter`.

    An empty string counts as unset, because an env var set to "" usually means
    "not configured". Nothing connects here: redis-py connects lazily, so a
    Redis that is down shows up as `LimiterUnavailable` on first use.
    """
    if redis_url:
        return RedisLimiter(redis_url)
    return MemoryLimiter()
