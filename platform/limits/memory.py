"""In-process limiter for a single API process (the embedded `moeplane up` default)."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

from moeplane.limits import bucket
from moeplane.limits.base import Decision, Limiter, check_settle, check_take

__all__ = ["MemoryLimiter"]


class MemoryLimiter(Limiter):
    """Token buckets in a dict behind one lock.

    Limits hold only within this process: with several API processes use
    `RedisLimiter`. One lock is enough because each operation is a few float
    operations; contention is far below request-handling cost.

    `clock` returns seconds and must not go backwards; tests inject a fake one.
    A full bucket is equivalent to a missing one, so full buckets are not
    stored; the dict holds at most one entry per key in use (tenants x 2).
    """

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._lock = threading.Lock()
        # key -> (tokens, updated_at); a missing key is a full bucket.
        self._buckets: dict[str, tuple[float, float]] = {}

    def take(self, key: str, amount: int, per_minute: int) -> Decision:
        check_take(key, amount, per_minute)
        with self._lock:
            now = self._clock()
            tokens = self._level(key, now, per_minute)
            outcome = bucket.decide(tokens, amount, per_minute)
            self._store(key, outcome.tokens, now, per_minute)
        return Decision(outcome.allowed, outcome.retry_after_s, outcome.tokens)

    def settle(self, key: str, reserved: int, actual: int, per_minute: int) -> None:
        check_settle(key, reserved, actual, per_minute)
        if reserved == actual:
            return
        with self._lock:
            now = self._clock()
            tokens = self._level(key, now, per_minute)
            self._store(key, bucket.settle(tokens, reserved, actual, per_minute), now, per_minute)

    def reset(self, key: str) -> None:
        with self._lock:
            self._buckets.pop(key, None)

    def close(self) -> None:
        with self._lock:
            self._buckets.clear()

    def _level(self, key: str, now: float, per_minute: int) -> float:
        state = self._buckets.get(key)
        if state is None:
            return float(per_minute)
        tokens, last = state
        return bucket.refill(tokens, last, now, per_minute)

    def _store(self, key: str, tokens: float, now: float, per_minute: int) -> None:
        if tokens >= per_minute:
            # Full is the default for a missing key; keeping it would only grow the dict.
            self._buckets.pop(key, None)
        else:
            self._buckets[key] = (tokens, now)
