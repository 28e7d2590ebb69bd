"""Which lost index builds to enqueue again: a pure decision over catalog states (no database)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from moeplane.recommend.sweep import BuildState, build_is_live, stale_builds

NOW = datetime(2026, 11, 1, 12, 0, tzinfo=UTC)
AGE = 300.0


def state(status: str, idle_s: float, generation: int = 1, built: int = 0, name: str = "c"):
    return BuildState(name, status, generation, built, NOW - timedelta(seconds=idle_s))


def stale(*states: BuildState) -> list[str]:
    return [s.catalog_id for s in stale_builds(states, NOW, AGE)]


@pytest.mark.parametrize(
    ("catalog", "expected"),
    [
        (state("queued", AGE), True),  # the enqueue was lost (broker down at commit)
        (state("queued", AGE * 10), True),
        (state("queued", AGE - 1), False),  # its task may just be waiting in the broker
        (state("building", AGE + 1), True),  # the worker died mid-build
        (state("building", 5), False),  # reporting progress: alive
        (state("ready", AGE * 10, generation=1, built=1), False),
        (state("failed", AGE * 10), False),  # waits for the tenant: a retry would fail again
        (state("queued", AGE * 10, generation=2, built=2), False),  # built meanwhile
        (state("queued", AGE * 10, generation=3, built=2), True),  # a re-index was lost
    ],
)
def test_stale_builds(catalog: BuildState, expected: bool) -> None:
    assert stale(catalog) == (["c"] if expected else [])


def test_only_the_stale_ones_in_order() -> None:
    states = [
        state("queued", AGE * 2, name="a"),
        state("ready", AGE * 2, built=1, name="b"),
        state("building", 1, name="c"),
        state("building", AGE * 2, generation=4, built=3, name="d"),
    ]
    assert stale(*states) == ["a", "d"]
    assert stale() == []
    with pytest.raises(ValueError):
        stale_builds(states, NOW, 0)


def test_a_live_build_is_a_claimed_one_that_reports_progress() -> None:
    assert build_is_live(state("building", AGE - 1), NOW, AGE)
    assert not build_is_live(state("building", AGE), NOW, AGE)  # lost: may be claimed again
    assert not build_is_live(state("queued", 0), NOW, AGE)
    # exactly the builds a sweep does not touch, among those owed
    for idle in (0, AGE - 1, AGE, AGE * 2):
        building = state("building", idle)
        assert build_is_live(building, NOW, AGE) != bool(stale_builds([building], NOW, AGE))
