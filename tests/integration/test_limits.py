"""Rate limiters (moeplane.limits): one behaviour suite run against both backends.

The Redis cases need a real server: set MOEPLANE_TEST_REDIS_URL (for example
redis://127.0.0.1:6379/15). Every test uses its own uuid key, so tests and
concurrent runs never share a bucket.
"""

from __future__ import annotations

import multiprocessing
import os
import random
import threading
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import pytest

from moeplane.limits import (
    Decision,
    Limiter,
    LimiterUnavailable,
    LimitTooSmall,
    MemoryLimiter,
    RedisLimiter,
    bucket,
    make_limiter,
)
from moeplane.limits.redis_backend import KEY_PREFIX

REDIS_URL = os.environ.get("MOEPLANE_TEST_REDIS_URL")
needs_redis = pytest.mark.skipif(
    not REDIS_URL, reason="MOEPLANE_TEST_REDIS_URL is not set (e.g. redis://127.0.0.1:6379/15)"
)


class FakeClock:
    """A monotonic clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture
def key() -> str:
    return f"test-{uuid.uuid4().hex}:tpm"


@pytest.fixture
def redis_limiter() -> Iterator[RedisLimiter]:
    if not REDIS_URL:
        pytest.skip("MOEPLANE_TEST_REDIS_URL is not set (e.g. redis://127.0.0.1:6379/15)")
    limiter = RedisLimiter(REDIS_URL)
    yield limiter
    limiter.close()


@pytest.fixture(params=["memory", pytest.param("redis", marks=pytest.mark.redis)])
def limiter(request: pytest.FixtureRequest) -> Iterator[Limiter]:
    if request.param == "memory":
        # A frozen clock: nothing refills, so the memory cases check exact books.
        yield MemoryLimiter(clock=FakeClock())
    else:
        yield request.getfixturevalue("redis_limiter")


# ---------------------------------------------------------------- behaviour, both backends


def test_fresh_bucket_admits_up_to_capacity_then_denies(limiter: Limiter, key: str):
    decisions = [limiter.take(key, 1, 10) for _ in range(11)]
    assert [d.allowed for d in decisions] == [True] * 10 + [False]
    assert decisions[0] == Decision(True, 0.0, pytest.approx(9.0, abs=0.01))
    denied = decisions[-1]
    # ~1 token short at 10/60 tokens per second.
    assert denied.retry_after_s == pytest.approx(6.0, abs=0.1)
    assert denied.remaining == pytest.approx(0.0, abs=0.02)


def test_denial_takes_nothing(limiter: Limiter, key: str):
    assert limiter.take(key, 1500, 2000).allowed
    denied = limiter.take(key, 600, 2000)
    assert not denied.allowed
    assert denied.remaining == pytest.approx(500, abs=1)
    # The 500 left are still there for a request that fits.
    assert limiter.take(key, 500, 2000).allowed


def test_amount_above_capacity_raises_limit_too_small(limiter: Limiter, key: str):
    with pytest.raises(LimitTooSmall) as raised:
        limiter.take(key, 2001, 2000)
    assert (raised.value.amount, raised.value.per_minute) == (2001, 2000)
    assert raised.value.code == "request_too_large"
    # Nothing was taken.
    assert limiter.take(key, 2000, 2000).allowed


def test_amount_equal_to_capacity_is_admitted_from_a_full_bucket(limiter: Limiter, key: str):
    assert limiter.take(key, 2000, 2000).allowed


@pytest.mark.parametrize(
    ("amount", "per_minute", "error"),
    [(1, 0, ValueError), (1, -5, ValueError), (-1, 10, ValueError), (1.0, 10, TypeError)],
)
def test_bad_arguments_are_rejected(limiter: Limiter, key: str, amount, per_minute, error):
    with pytest.raises(error):
        limiter.take(key, amount, per_minute)


def test_empty_key_is_rejected(limiter: Limiter):
    with pytest.raises(ValueError, match="key"):
        limiter.take("", 1, 10)


def test_settle_refunds_unused_reservation(limiter: Limiter, key: str):
    assert limiter.take(key, 300, 2000).allowed
    limiter.settle(key, reserved=300, actual=100, per_minute=2000)
    assert limiter.take(key, 0, 2000).remaining == pytest.approx(1900, abs=1)


def test_settle_refund_is_capped_at_capacity(limiter: Limiter, key: str):
    assert limiter.take(key, 10, 2000).allowed
    limiter.settle(key, reserved=500, actual=0, per_minute=2000)
    assert limiter.take(key, 0, 2000).remaining == 2000


def test_settle_overrun_puts_the_bucket_in_debt(limiter: Limiter, key: str):
    assert limiter.take(key, 100, 100).allowed
    limiter.settle(key, reserved=100, actual=160, per_minute=100)
    denied = limiter.take(key, 1, 100)
    assert not denied.allowed
    assert denied.remaining == pytest.approx(-60, abs=0.1)
    # 61 tokens at 100/60 per second.
    assert denied.retry_after_s == pytest.approx(61 * 0.6, abs=0.1)


def test_settle_exact_cost_changes_nothing(limiter: Limiter, key: str):
    assert limiter.take(key, 50, 100).allowed
    limiter.settle(key, reserved=50, actual=50, per_minute=100)
    assert limiter.take(key, 0, 100).remaining == pytest.approx(50, abs=0.1)


def test_reset_refills(limiter: Limiter, key: str):
    assert limiter.take(key, 10, 10).allowed
    limiter.reset(key)
    assert limiter.take(key, 10, 10).allowed


def test_buckets_are_independent(limiter: Limiter, key: str):
    assert limiter.take(key, 10, 10).allowed
    assert limiter.take(key + "-other", 10, 10).allowed
    assert not limiter.take(key, 1, 10).allowed


# ---------------------------------------------------------------- concurrency, both backends


def _refill_bound(limiter: Limiter, started: float, per_minute: int) -> float:
    """Most a bucket can have refilled since `started` (plus float slack).

    Zero for the memory backend, whose clock is frozen in these tests; Redis
    uses server time, which keeps running during a burst.
    """
    if isinstance(limiter, MemoryLimiter):
        return 0.0
    return (time.monotonic() - started) * per_minute / 60 + 1e-6 * per_minute


def _fire(limiter: Limiter, key: str, amounts: list[int], per_minute: int) -> list[Decision]:
    """Start every take at the same instant, one thread each."""
    barrier = threading.Barrier(len(amounts))

    def one(amount: int) -> Decision:
        barrier.wait()
        return limiter.take(key, amount, per_minute)

    with ThreadPoolExecutor(max_workers=len(amounts)) as pool:
        return list(pool.map(one, amounts))


def test_50_simultaneous_requests_at_rpm_10_admit_exactly_10(limiter: Limiter):
    key = f"test-{uuid.uuid4().hex}:rpm"
    decisions = _fire(limiter, key, [1] * 50, per_minute=10)
    # The bucket refills 1/6 token per second, so the burst cannot earn an 11th.
    assert sum(d.allowed for d in decisions) == 10
    assert all(d.retry_after_s > 0 for d in decisions if not d.allowed)


def test_concurrent_token_reservations_never_exceed_tpm(limiter: Limiter, key: str):
    rng = random.Random(1234)
    amounts = [rng.randint(50, 300) for _ in range(40)]
    started = time.monotonic()
    decisions = _fire(limiter, key, amounts, per_minute=2000)
    admitted = sum(a for a, d in zip(amounts, decisions, strict=True) if d.allowed)
    # Strictly 2000 when time stands still; on Redis the bucket also earns
    # 33 tokens/s while the burst runs (a few tokens), whereas a racy
    # read-then-write limiter would overshoot by whole reservations.
    refilled = _refill_bound(limiter, started, 2000)
    assert admitted <= 2000 + refilled
    # And the bucket's books balance: what is left is what was not admitted,
    # plus what refilled during the test.
    assert 2000 - admitted <= limiter.take(key, 0, 2000).remaining <= 2000 - admitted + refilled
    # Denials happened only for reservations that did not fit.
    assert 2000 - admitted < max(
        a for a, d in zip(amounts, decisions, strict=True) if not d.allowed
    )


def test_concurrent_reserve_and_settle_balance(limiter: Limiter, key: str):
    """Reserve, then settle with the real cost, from many threads: the books balance."""
    rng = random.Random(99)
    jobs = [(rng.randint(50, 300), rng.randint(0, 400)) for _ in range(40)]
    started = time.monotonic()
    barrier = threading.Barrier(len(jobs))

    def one(job: tuple[int, int]) -> int:
        reserved, actual = job
        barrier.wait()
        if not limiter.take(key, reserved, 100_000).allowed:
            return 0
        limiter.settle(key, reserved, actual, 100_000)
        return actual

    with ThreadPoolExecutor(max_workers=len(jobs)) as pool:
        spent = sum(pool.map(one, jobs))
    remaining = limiter.take(key, 0, 100_000).remaining
    assert (
        100_000 - spent <= remaining <= 100_000 - spent + _refill_bound(limiter, started, 100_000)
    )


# ---------------------------------------------------------------- in-process only (fake clock)


def test_memory_refills_with_time():
    clock = FakeClock()
    limiter = MemoryLimiter(clock=clock)
    assert limiter.take("t:rpm", 10, 10).allowed
    assert not limiter.take("t:rpm", 1, 10).allowed
    clock.advance(6.0)  # one token at 10/min
    assert limiter.take("t:rpm", 1, 10).allowed
    assert not limiter.take("t:rpm", 1, 10).allowed


def test_memory_refill_is_capped_at_capacity():
    clock = FakeClock()
    limiter = MemoryLimiter(clock=clock)
    assert limiter.take("t:rpm", 5, 10).allowed
    clock.advance(3600)
    assert limiter.take("t:rpm", 10, 10).allowed
    assert not limiter.take("t:rpm", 1, 10).allowed


def test_memory_waiting_retry_after_is_enough():
    clock = FakeClock()
    limiter = MemoryLimiter(clock=clock)
    assert limiter.take("t:tpm", 1000, 1000).allowed
    limiter.settle("t:tpm", reserved=1000, actual=1300, per_minute=1000)
    denied = limiter.take("t:tpm", 250, 1000)
    assert not denied.allowed
    assert denied.retry_after_s == pytest.approx(550 * 60 / 1000)
    clock.advance(denied.retry_after_s * 0.99)
    assert not limiter.take("t:tpm", 250, 1000).allowed
    clock.advance(denied.retry_after_s * 0.01)
    assert limiter.take("t:tpm", 250, 1000).allowed


def test_memory_debt_is_paid_off_before_admitting():
    clock = FakeClock()
    limiter = MemoryLimiter(clock=clock)
    assert limiter.take("t:tpm", 60, 60).allowed
    limiter.settle("t:tpm", reserved=60, actual=120, per_minute=60)  # 60 in debt
    clock.advance(60)  # refills 60: back to zero
    assert not limiter.take("t:tpm", 1, 60).allowed
    clock.advance(1)
    assert limiter.take("t:tpm", 1, 60).allowed


def test_memory_does_not_keep_full_buckets():
    clock = FakeClock()
    limiter = MemoryLimiter(clock=clock)
    limiter.take("t:rpm", 0, 10)
    limiter.take("t:tpm", 5, 10)
    limiter.settle("t:tpm", reserved=5, actual=0, per_minute=10)
    assert limiter._buckets == {}


# ---------------------------------------------------------------- Redis only


@needs_redis
def test_redis_refills_with_server_time(redis_limiter: RedisLimiter, key: str):
    # 600/min = 10 tokens/s, so the wait is ~0.1 s.
    assert redis_limiter.take(key, 600, 600).allowed
    denied = redis_limiter.take(key, 1, 600)
    assert not denied.allowed
    assert 0.0 < denied.retry_after_s <= 0.1
    time.sleep(denied.retry_after_s + 0.02)
    assert redis_limiter.take(key, 1, 600).allowed


@needs_redis
def test_redis_state_is_a_prefixed_hash_that_expires_when_full(
    redis_limiter: RedisLimiter, key: str
):
    assert redis_limiter.take(key, 30, 60).allowed  # 30 s to refill at 1 token/s
    raw = redis_limiter._client
    assert set(raw.hgetall(KEY_PREFIX + key)) == {b"tokens", b"ts"}
    assert 30_000 < raw.pttl(KEY_PREFIX + key) <= 31_000 + 100
    redis_limiter.settle(key, reserved=30, actual=90, per_minute=60)  # 30 in debt: 90 s
    assert 90_000 < raw.pttl(KEY_PREFIX + key) <= 91_000 + 100
    redis_limiter.reset(key)
    assert not raw.exists(KEY_PREFIX + key)


@needs_redis
def test_redis_limiters_share_state(key: str):
    first, second = RedisLimiter(REDIS_URL), RedisLimiter(REDIS_URL)
    try:
        assert first.take(key, 7, 10).allowed
        assert second.take(key, 3, 10).allowed
        assert not first.take(key, 1, 10).allowed
    finally:
        first.close()
        second.close()


@needs_redis
@pytest.mark.parametrize(
    ("tokens", "amount", "per_minute"),
    [
        (float(t), a, p)
        for t, a, p in [(10, 3, 10), (0.5, 2, 60), (-20, 10, 120), (1 - 1e-12, 1, 10)]
    ]
    + [
        (random.Random(seed).uniform(-3 * p, p), random.Random(seed + 1).randint(0, p), p)
        for seed, p in enumerate([1, 7, 60, 2000, 1_000_000])
    ],
)
def test_redis_script_mirrors_bucket_decide(
    redis_limiter: RedisLimiter, key, tokens, amount, per_minute
):
    """The Lua take makes the same decision as `bucket.decide` for a given level."""
    # A timestamp in the future freezes refill (clock-went-backwards rule), so
    # the script decides on exactly `tokens`.
    redis_limiter._client.hset(KEY_PREFIX + key, mapping={"tokens": repr(tokens), "ts": "9e12"})
    got = redis_limiter.take(key, amount, per_minute)
    want = bucket.decide(tokens, amount, per_minute)
    assert (got.allowed, got.remaining, got.retry_after_s) == (
        want.allowed,
        pytest.approx(want.tokens, rel=1e-12, abs=1e-9),
        pytest.approx(want.retry_after_s, rel=1e-12),
    )


def _take_in_process(url: str, key: str, takes: int, barrier, results) -> None:
    """Child process: its own limiter and connection, like a separate API process."""
    limiter = RedisLimiter(url)
    barrier.wait()
    results.put(sum(limiter.take(key, 1, 10).allowed for _ in range(takes)))
    limiter.close()


@needs_redis
def test_four_processes_share_one_rpm_limit():
    key = f"test-{uuid.uuid4().hex}:rpm"
    ctx = multiprocessing.get_context("fork")
    barrier, results = ctx.Barrier(4), ctx.Queue()
    procs = [
        ctx.Process(target=_take_in_process, args=(REDIS_URL, key, 25, barrier, results))
        for _ in range(4)
    ]
    for proc in procs:
        proc.start()
    admitted = [results.get(timeout=20) for _ in procs]
    for proc in procs:
        proc.join(timeout=20)
        assert proc.exitcode == 0
    assert sum(admitted) <= 10
    assert sum(admitted) == 10  # and the limit is not stricter than asked


def test_unreachable_redis_raises_limiter_unavailable():
    limiter = RedisLimiter("redis://127.0.0.1:1/0", timeout_s=0.5)
    with pytest.raises(LimiterUnavailable) as raised:
        limiter.take("t:rpm", 1, 10)
    assert raised.value.code == "rate_limiter_unavailable"
    with pytest.raises(LimiterUnavailable):
        limiter.settle("t:tpm", 10, 20, 100)
    with pytest.raises(LimiterUnavailable):
        limiter.reset("t:rpm")
    limiter.close()


# ---------------------------------------------------------------- factory


def test_make_limiter_without_url_is_in_process():
    assert isinstance(make_limiter(None), MemoryLimiter)
    assert isinstance(make_limiter(""), MemoryLimiter)


def test_make_limiter_with_url_is_redis_and_connects_lazily():
    limiter = make_limiter("redis://127.0.0.1:1/0")
    assert isinstance(limiter, RedisLimiter)
    limiter.close()
