"""Redis limiter: limits hold across every API process that shares the Redis.

Each operation is ONE Lua script, so the read-refill-decide-write cycle is
atomic on the server (no INCR-then-EXPIRE race, no WATCH retries). The scripts
mirror `moeplane.limits.bucket` line for line. Time comes from Redis ``TIME``
inside the script, so the clocks of the API hosts do not matter. State is a
hash ``{tokens, ts}`` under ``moeplane:rl:<key>`` whose PEXPIRE is the time
the bucket needs to refill completely (plus a margin): a vanished key and a
full bucket are the same thing, so Redis never keeps idle tenants' state.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from moeplane.limits.base import (
    Decision,
    Limiter,
    LimiterUnavailable,
    check_settle,
    check_take,
)
from moeplane.limits.bucket import EPSILON

__all__ = ["KEY_PREFIX", "RedisLimiter"]

KEY_PREFIX = "moeplane:rl:"

# Kept after the bucket would be full again, so a key never expires while a
# concurrent script still counts on its level.
_EXPIRY_MARGIN_MS = 1000

# Shared Lua prelude: read the bucket and refill it to Redis's "now".
# ARGV[1] = per_minute. Mirrors bucket.refill; a missing key is a full bucket.
_LOAD_AND_REFILL = """
local per_minute = tonumber(ARGV[1])
local rate = per_minute / 60.0
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local state = redis.call('HMGET', KEYS[1], 'tokens', 'ts')
local tokens = tonumber(state[1])
local last = tonumber(state[2])
if tokens == nil or last == nil then
  tokens = per_minute
  last = now
end
local elapsed = now - last
if elapsed < 0 then elapsed = 0 end
tokens = math.min(per_minute, tokens + elapsed * rate)
"""

# Write the level back with an expiry equal to the time to refill fully
# (bucket.seconds_until_full) plus a margin. %.17g round-trips a double.
_STORE = """
redis.call('HSET', KEYS[1], 'tokens', string.format('%.17g', tokens),
           'ts', string.format('%.6f', now))
local full_in_ms = math.ceil(math.max(0, per_minute - tokens) / rate * 1000)
redis.call('PEXPIRE', KEYS[1], full_in_ms + tonumber(ARGV[3]))
"""

# ARGV: per_minute, amount, margin_ms, epsilon. Returns {allowed, tokens, retry_after_s};
# floats travel as strings because Redis truncates Lua numbers to integers.
_TAKE = (
    _LOAD_AND_REFILL
    + """
local amount = tonumber(ARGV[2])
local allowed = 0
local retry_after = 0
if tokens + tonumber(ARGV[4]) * per_minute >= amount then
  allowed = 1
  tokens = tokens - amount
else
  retry_after = (amount - tokens) / rate
end
"""
    + _STORE
    + """
return {allowed, string.format('%.17g', tokens), string.format('%.17g', retry_after)}
"""
)

# ARGV: per_minute, reserved - actual, margin_ms. Mirrors bucket.settle.
_SETTLE = (
    _LOAD_AND_REFILL
    + """
tokens = math.min(per_minute, tokens + tonumber(ARGV[2]))
"""
    + _STORE
)


class RedisLimiter(Limiter):
    """Token buckets in Redis, shared by every process using the same server.

    `timeout_s` bounds each round trip: a slow Redis must fail a request with
    503 quickly rather than hold it. A dropped connection is retried once at
    once (a pooled connection that died when Redis restarted); timeouts are not
    retried, because the script may already have run and a retry would charge
    twice. Redis connection errors and timeouts raise `LimiterUnavailable`.
    """

    def __init__(self, url: str, *, timeout_s: float = 1.0, key_prefix: str = KEY_PREFIX):
        self._prefix = key_prefix
        self._client = redis.Redis.from_url(
            url,
            socket_timeout=timeout_s,
            socket_connect_timeout=timeout_s,
            retry=Retry(NoBackoff(), 1, supported_errors=(redis.exceptions.ConnectionError,)),
        )
        self._take = self._client.register_script(_TAKE)
        self._settle = self._client.register_script(_SETTLE)

    def take(self, key: str, amount: int, per_minute: int) -> Decision:
        check_take(key, amount, per_minute)
        with _unavailable_on_redis_errors():
            allowed, tokens, retry_after = self._take(
                keys=[self._prefix + key],
                args=[per_minute, amount, _EXPIRY_MARGIN_MS, repr(EPSILON)],
            )
        return Decision(bool(allowed), float(retry_after), float(tokens))

    def settle(self, key: str, reserved: int, actual: int, per_minute: int) -> None:
        check_settle(key, reserved, actual, per_minute)
        if reserved == actual:
            return
        with _unavailable_on_redis_errors():
            self._settle(
                keys=[self._prefix + key],
                args=[per_minute, reserved - actual, _EXPIRY_MARGIN_MS],
            )

    def reset(self, key: str) -> None:
        with _unavailable_on_redis_errors():
            self._client.delete(self._prefix + key)

    def close(self) -> None:
        self._client.close()


@contextmanager
def _unavailable_on_redis_errors() -> Iterator[None]:
    """Turn "Redis is unreachable" into the domain error; other Redis errors are bugs."""
    try:
        yield
    except (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError) as exc:
        raise LimiterUnavailable(f"rate limiter unavailable: {exc}") from exc
