"""Unit tests for the pure fair-share scheduler (no Ray, no database)."""

from __future__ import annotations

import math
from collections import Counter

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from moeplane.jobs.scheduler import (
    REASON_CAPACITY,
    REASON_NO_POLICY,
    REASON_RESERVED,
    REASON_TENANT_LIMIT,
    REASON_TICK_LIMIT,
    REASON_TOO_LARGE,
    QueuedJob,
    Resources,
    RunningJob,
    SchedulerConfig,
    TenantPolicy,
    plan,
)

NOW = 1_800_000_000.0


def job(
    id: str, tenant: str, cpus: float = 1.0, *, age: float = 0.0, priority: int = 0, gpus=0.0
) -> QueuedJob:
    return QueuedJob(id, tenant, Resources(cpus, gpus), queued_at=NOW - age, priority=priority)


def policy(tenant: str, *, limit: int = 100, weight: float = 1.0, service: float = 0.0):
    return TenantPolicy(tenant, max_concurrent_jobs=limit, weight=weight, attained_service=service)


def policies(*tenants: str, **kwargs) -> dict[str, TenantPolicy]:
    return {tenant: policy(tenant, **kwargs) for tenant in tenants}


# --- basics ---------------------------------------------------------------------------


def test_empty_inputs_admit_nothing():
    result = plan([], [], Resources(64), {}, NOW)
    assert result.admit == ()
    assert dict(result.skipped) == {}


def test_no_capacity_skips_everything_with_reason():
    result = plan([job("a", "t1")], [], Resources(0), policies("t1"), NOW)
    assert result.admit == ()
    assert result.skipped == {"a": REASON_CAPACITY}


def test_unknown_tenant_is_skipped_with_reason():
    result = plan([job("a", "ghost"), job("b", "t1")], [], Resources(8), policies("t1"), NOW)
    assert result.admit == ("b",)
    assert result.skipped == {"a": REASON_NO_POLICY}


def test_job_larger_than_cluster_is_skipped_and_never_reserves():
    queued = [job("huge", "t1", 128, age=10_000), job("small", "t2", 1)]
    result = plan(queued, [], Resources(8), policies("t1", "t2"), NOW, total_capacity=Resources(64))
    assert result.admit == ("small",)
    assert result.skipped == {"huge": REASON_TOO_LARGE}


def test_duplicate_job_ids_are_rejected():
    with pytest.raises(ValueError, match="duplicate"):
        plan([job("a", "t1"), job("a", "t1")], [], Resources(8), policies("t1"), NOW)


@pytest.mark.parametrize(
    "build",
    [
        lambda: Resources(-1),
        lambda: Resources(1, math.nan),
        lambda: TenantPolicy("t", max_concurrent_jobs=1, weight=0),
        lambda: TenantPolicy("t", max_concurrent_jobs=-1),
        lambda: SchedulerConfig(aging_seconds=0),
        lambda: SchedulerConfig(max_admissions_per_tick=0),
    ],
)
def test_invalid_values_are_rejected_loudly(build):
    with pytest.raises(ValueError):
        build()


def test_resources_helpers():
    a, b = Resources(4, 1), Resources(3, 2)
    assert a.add(b) == Resources(7, 3)
    assert a.sub(b) == Resources(1, 0)  # saturating
    assert Resources(0.1).add(Resources(0.2)).fits(Resources(0.3))
    assert not b.fits(a)
    assert a.cost(gpu_weight=8) == 12


# --- ordering -------------------------------------------------------------------------


def test_least_attained_service_first():
    pols = {"busy": policy("busy", service=10_000), "idle": policy("idle", service=0)}
    queued = [job("b1", "busy", age=100), job("i1", "idle")]
    result = plan(queued, [], Resources(1), pols, NOW)
    assert result.admit == ("i1",)
    assert result.skipped == {"b1": REASON_CAPACITY}


def test_running_jobs_count_towards_share():
    queued = [job("a2", "a"), job("b1", "b")]
    running = [RunningJob("a1", "a", Resources(4))]
    result = plan(queued, running, Resources(1), policies("a", "b"), NOW)
    assert result.admit == ("b1",)


def test_tenants_take_turns_in_one_plan():
    queued = [job(f"{t}{i}", t) for t in "ab" for i in range(3)]
    result = plan(queued, [], Resources(4), policies("a", "b"), NOW)
    assert result.admit == ("a0", "b0", "a1", "b1")


def test_weight_two_gets_twice_the_admissions_in_one_plan():
    pols = {"heavy": policy("heavy", weight=2.0), "light": policy("light")}
    queued = [job(f"{t}{i}", t) for t in pols for i in range(10)]
    result = plan(queued, [], Resources(6), pols, NOW)
    assert Counter(j[:-1] for j in result.admit) == {"heavy": 4, "light": 2}


def test_priority_within_tenant():
    queued = [job("old-low", "t", age=60), job("new-high", "t", priority=5)]
    result = plan(queued, [], Resources(1), policies("t"), NOW)
    assert result.admit == ("new-high",)


def test_oldest_first_at_equal_priority():
    queued = [job("new", "t", age=1), job("old", "t", age=50)]
    assert plan(queued, [], Resources(1), policies("t"), NOW).admit == ("old",)


def test_waiting_raises_priority_within_tenant():
    config = SchedulerConfig(aging_seconds=600)
    queued = [job("fresh-p1", "t", priority=1), job("waited-p0", "t", age=1_300)]
    assert plan(queued, [], Resources(1), policies("t"), NOW, config).admit == ("waited-p0",)


def test_priority_does_not_cross_tenants():
    pols = {"a": policy("a", service=0), "b": policy("b", service=1_000)}
    queued = [job("a-low", "a"), job("b-high", "b", priority=100)]
    assert plan(queued, [], Resources(1), pols, NOW).admit == ("a-low",)


def test_small_job_passes_a_big_one_that_is_not_aged():
    queued = [job("big", "t", 8, age=10), job("small", "t", 1)]
    result = plan(queued, [], Resources(4), policies("t"), NOW)
    assert result.admit == ("small",)
    assert result.skipped == {"big": REASON_CAPACITY}


def test_aged_job_reserves_the_capacity_it_needs():
    queued = [job("big", "a", 6, age=700), job("small", "b", 2)]
    pols = {"a": policy("a"), "b": policy("b", service=1)}
    result = plan(queued, [], Resources(4), pols, NOW, SchedulerConfig(aging_seconds=600))
    assert result.admit == ()
    assert result.skipped == {"big": REASON_RESERVED, "small": REASON_CAPACITY}


def test_reservation_leaves_other_dimensions_free():
    queued = [job("gpu", "a", 2, gpus=1, age=700), job("cpu", "b", 2)]
    pols = {"a": policy("a"), "b": policy("b", service=1)}
    result = plan(queued, [], Resources(4, 0), pols, NOW)
    assert result.admit == ("cpu",)


def test_deterministic_regardless_of_input_order():
    queued = [job(f"j{i}", f"t{i % 7}", 1 + i % 3, age=i * 37 % 900) for i in range(60)]
    pols = policies(*{j.tenant_id for j in queued})
    first = plan(queued, [], Resources(20), pols, NOW)
    second = plan(list(reversed(queued)), [], Resources(20), dict(reversed(pols.items())), NOW)
    assert first == second


# --- limits ---------------------------------------------------------------------------


def test_max_concurrent_jobs_counts_running_and_admitted():
    queued = [job(f"q{i}", "t") for i in range(5)]
    running = [RunningJob("r1", "t", Resources(1))]
    result = plan(queued, running, Resources(10), policies("t", limit=3), NOW)
    assert result.admit == ("q0", "q1")
    assert set(result.skipped.values()) == {REASON_TENANT_LIMIT}


def test_tenant_already_at_limit_admits_nothing():
    running = [RunningJob("r1", "t", Resources(1))]
    result = plan([job("q", "t")], running, Resources(10), policies("t", limit=1), NOW)
    assert result.admit == ()
    assert result.skipped == {"q": REASON_TENANT_LIMIT}


def test_max_admissions_per_tick():
    queued = [job(f"q{i}", f"t{i}") for i in range(10)]
    config = SchedulerConfig(max_admissions_per_tick=3)
    result = plan(queued, [], Resources(100), policies(*(f"t{i}" for i in range(10))), NOW, config)
    assert len(result.admit) == 3
    assert Counter(result.skipped.values()) == {REASON_TICK_LIMIT: 7}


_tenants = st.sampled_from(["a", "b", "c", "d"])
_queued = st.lists(
    st.builds(
        lambda i, t, c, g, age, p: job(f"j{i}", t, c, gpus=g, age=age, priority=p),
        st.integers(0, 10_000),
        _tenants,
        st.floats(0, 8, allow_nan=False),
        st.sampled_from([0.0, 0.0, 1.0, 2.0]),
        st.floats(0, 5_000),
        st.integers(-2, 2),
    ),
    max_size=40,
    unique_by=lambda j: j.id,
)
_running = st.lists(
    st.builds(lambda i, t: RunningJob(f"r{i}", t, Resources(1)), st.integers(), _tenants),
    max_size=10,
    unique_by=lambda j: j.id,
)
_policies = st.dictionaries(
    _tenants,
    st.tuples(st.integers(0, 6), st.floats(0.1, 10), st.floats(0, 1e5)),
)


@settings(max_examples=300, deadline=None)
@given(
    queued=_queued,
    running=_running,
    cpus=st.floats(0, 32),
    gpus=st.sampled_from([0.0, 1.0, 4.0]),
    raw_policies=_policies,
    limit=st.one_of(st.none(), st.integers(1, 10)),
)
def test_never_over_capacity_or_quota(queued, running, cpus, gpus, raw_policies, limit):
    pols = {
        t: TenantPolicy(t, max_concurrent_jobs=n, weight=w, attained_service=s)
        for t, (n, w, s) in raw_policies.items()
    }
    config = SchedulerConfig(aging_seconds=600, max_admissions_per_tick=limit)
    result = plan(queued, running, Resources(cpus, gpus), pols, NOW, config)

    by_id = {j.id: j for j in queued}
    admitted = [by_id[i] for i in result.admit]
    assert len(set(result.admit)) == len(result.admit)
    assert set(result.admit).isdisjoint(result.skipped)
    assert set(result.admit) | set(result.skipped) == set(by_id)
    assert sum(j.demand.cpus for j in admitted) <= cpus + 1e-6
    assert sum(j.demand.gpus for j in admitted) <= gpus + 1e-6
    if limit is not None:
        assert len(admitted) <= limit
    counts = Counter(j.tenant_id for j in admitted) + Counter(r.tenant_id for r in running)
    for tenant in {j.tenant_id for j in admitted}:
        assert counts[tenant] <= pols[tenant].max_concurrent_jobs


# --- simulations over ticks -----------------------------------------------------------


def _simulate(queued, pols, cluster, ticks, duration, config, arrivals=None, tick_s=5.0):
    """Run `plan` every tick; jobs run `duration` seconds and add to attained service."""
    queued, running, service = list(queued), {}, dict.fromkeys(pols, 0.0)
    started: dict[str, float] = {}
    for n in range(ticks):
        now = NOW + n * tick_s
        if arrivals:
            queued += arrivals(n, now)
        for jid, (j, end) in list(running.items()):
            service[j.tenant_id] += j.demand.cpus * tick_s
            if end <= now:
                del running[jid]
        used = sum(j.demand.cpus for j, _ in running.values())
        current = {
            t: TenantPolicy(t, p.max_concurrent_jobs, p.weight, service[t]) for t, p in pols.items()
        }
        runs = [RunningJob(jid, j.tenant_id, j.demand) for jid, (j, _) in running.items()]
        result = plan(queued, runs, Resources(cluster - used), current, now, config)
        admitted = set(result.admit)
        for j in queued:
            if j.id in admitted:
                running[j.id] = (j, now + duration)
                started[j.id] = now
        queued = [j for j in queued if j.id not in admitted]
    return started


def test_weighted_shares_over_a_simulated_sequence():
    pols = {"w2": policy("w2", weight=2.0), "w1": policy("w1", weight=1.0)}
    queued = [job(f"{t}-{i}", t, 1.0, age=-i) for t in pols for i in range(400)]
    started = _simulate(queued, pols, cluster=3, ticks=200, duration=5.0, config=SchedulerConfig())
    counts = Counter(jid.split("-")[0] for jid in started)
    assert counts["w2"] / counts["w1"] == pytest.approx(2.0, rel=0.05)


def _big_job_among_small_ones(n: int, now: float) -> list[QueuedJob]:
    """Four 1-cpu jobs from tenants b and c every tick; one 8-cpu job from a at tick 1."""
    jobs = [QueuedJob(f"{t}-{n}-{k}", t, Resources(1), now) for t in "bc" for k in range(2)]
    return [*jobs, QueuedJob("big", "a", Resources(8), now)] if n == 1 else jobs


@pytest.mark.parametrize("aging_seconds", [600.0, math.inf])
def test_aging_prevents_starvation_of_a_big_job(aging_seconds):
    pols = policies("a", "b", "c")
    config = SchedulerConfig(aging_seconds=aging_seconds)
    arrivals = _big_job_among_small_ones
    started = _simulate(
        [], pols, cluster=8, ticks=400, duration=30.0, config=config, arrivals=arrivals
    )
    if math.isinf(aging_seconds):
        assert "big" not in started  # without aging, small jobs keep it out forever
    else:
        assert "big" in started
        # Aged after 600 s, then it waits at most one small-job duration for capacity.
        assert started["big"] - (NOW + 5.0) <= aging_seconds + 30.0 + 5.0
