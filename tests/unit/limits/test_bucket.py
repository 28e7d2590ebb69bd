"""Token-bucket math (moeplane.limits.bucket), no clock and no Redis."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from moeplane.limits import bucket


def test_refill_adds_per_minute_over_sixty_per_second():
    assert bucket.refill(0.0, last=100.0, now=103.0, per_minute=60) == pytest.approx(3.0)
    assert bucket.refill(2.0, last=0.0, now=1.5, per_minute=120) == pytest.approx(5.0)


def test_refill_caps_at_capacity():
    assert bucket.refill(5.0, last=0.0, now=3600.0, per_minute=10) == 10.0


def test_refill_pays_off_debt_before_admitting():
    # 30 tokens in debt at 1 token/s: after 20 s still 10 in debt.
    assert bucket.refill(-30.0, last=0.0, now=20.0, per_minute=60) == pytest.approx(-10.0)


def test_refill_ignores_a_clock_that_went_backwards():
    assert bucket.refill(4.0, last=50.0, now=40.0, per_minute=60) == 4.0


def test_decide_admits_and_takes():
    assert bucket.decide(10.0, 3, 10) == (True, 7.0, 0.0)


def test_decide_admits_the_last_token_exactly():
    assert bucket.decide(1.0, 1, 10).allowed


def test_decide_tolerates_float_dust_below_the_amount():
    # A client sleeping exactly retry_after_s may find 0.9999999999999 tokens.
    assert bucket.decide(1.0 - 1e-12, 1, 10).allowed


def test_decide_denies_without_taking_and_says_when():
    outcome = bucket.decide(0.5, 2, 60)  # 1 token/s, 1.5 short
    assert outcome == (False, 0.5, pytest.approx(1.5))


def test_retry_after_includes_debt():
    # 20 in debt, needs 10: 30 tokens at 2 tokens/s.
    outcome = bucket.decide(-20.0, 10, 120)
    assert not outcome.allowed
    assert outcome.retry_after_s == pytest.approx(15.0)
    assert outcome.tokens == -20.0


def test_waiting_retry_after_is_enough():
    denied = bucket.decide(0.25, 7, 13)
    later = bucket.refill(denied.tokens, 0.0, denied.retry_after_s, 13)
    assert bucket.decide(later, 7, 13).allowed


def test_settle_refunds_the_unused_reservation():
    assert bucket.settle(1700.0, reserved=300, actual=120, per_minute=2000) == 1880.0


def test_settle_refund_is_capped_at_capacity():
    assert bucket.settle(1990.0, reserved=300, actual=0, per_minute=2000) == 2000.0


def test_settle_charges_an_overrun_as_debt():
    assert bucket.settle(10.0, reserved=50, actual=100, per_minute=100) == -40.0


def test_seconds_until_full():
    assert bucket.seconds_until_full(-60.0, 60) == pytest.approx(120.0)
    assert bucket.seconds_until_full(60.0, 60) == 0.0


@pytest.mark.parametrize("bad", [0, -1])
def test_per_minute_below_one_is_rejected(bad):
    with pytest.raises(ValueError, match="per_minute"):
        bucket.validate_per_minute(bad)


@pytest.mark.parametrize("bad", [1.5, "10", True, None])
def test_per_minute_must_be_an_int(bad):
    with pytest.raises(TypeError):
        bucket.validate_per_minute(bad)


@given(
    per_minute=st.integers(1, 100_000),
    level=st.floats(-100.0, 1.0),  # debt of up to 100 full buckets
    amount_fraction=st.floats(0.0, 1.0),
)
def test_decide_never_overdraws_and_denials_are_finite(per_minute, level, amount_fraction):
    tokens = level * per_minute
    amount = int(per_minute * amount_fraction)
    slack = bucket.EPSILON * per_minute
    outcome = bucket.decide(tokens, amount, per_minute)
    if outcome.allowed:
        assert outcome.tokens >= -slack
        assert outcome.tokens == pytest.approx(tokens - amount)
        assert outcome.retry_after_s == 0.0
    else:
        assert outcome.tokens == tokens
        assert 0.0 < outcome.retry_after_s < float("inf")
        refilled = bucket.refill(tokens, 0.0, outcome.retry_after_s, per_minute)
        assert refilled + slack >= amount
