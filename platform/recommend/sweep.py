"""Recovering lost index builds: which catalogs to enqueue again (pure), and the sweep over the
database that Celery beat runs every ``catalog_sweep_interval_s``.

A build is requested by a commit (``status="queued"``, ``generation`` raised) followed by an
enqueue; when the broker is down at that moment the task is lost and the catalog would stay
``queued`` forever. A build whose worker died (killed, OOM, the machine gone) stays
``building``. Both show the same way: a generation is wanted and nothing has touched the catalog
(request, claim, progress) for ``catalog_build_stale_s``. The sweep puts such a catalog back to
``queued`` (compare-and-set, so a catalog that moved meanwhile is left alone), which also
restarts its clock, and enqueues its build once more. Builds are idempotent per generation and
claimed under a row lock, so an enqueue too many costs one no-op task, never a second index.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import select, update

from moeplane.store.db import Database
from moeplane.store.models import Catalog, utcnow

__all__ = ["BuildState", "build_is_live", "requeue_stale_builds", "stale_builds"]

# Statuses in which a build is owed; "failed" waits for the tenant (a retry would fail again).
PENDING = ("queued", "building")


@dataclass(frozen=True)
class BuildState:
    """What the decision needs to know of a catalog."""

    catalog_id: str
    status: str
    generation: int
    built_generation: int
    updated_at: datetime  # last write: build requested, claimed, or progress reported

    @classmethod
    def of(cls, catalog: Catalog) -> BuildState:
        return cls(
            catalog.id,
            catalog.status,
            catalog.generation,
            catalog.built_generation,
            catalog.updated_at,
        )


def _idle_s(state: BuildState, now: datetime) -> float:
    return (now - state.updated_at).total_seconds()


def _owed(state: BuildState) -> bool:
    return state.status in PENDING and state.built_generation < state.generation


def build_is_live(state: BuildState, now: datetime, stale_after_s: float) -> bool:
    """A build is running somewhere: claimed, and it reported progress within the age."""
    return state.status == "building" and _idle_s(state, now) < stale_after_s


def stale_builds(
    states: Iterable[BuildState], now: datetime, stale_after_s: float
) -> list[BuildState]:
    """The catalogs whose build to enqueue again: one is owed (queued or building, a newer
    generation than the built one) and the catalog has been idle for at least the age."""
    if stale_after_s <= 0:
        raise ValueError("stale_after_s must be positive")
    return [s for s in states if _owed(s) and _idle_s(s, now) >= stale_after_s]


def requeue_stale_builds(
    database: Database, stale_after_s: float, *, now: datetime | None = None
) -> list[str]:
    """Put every stale catalog back to ``queued`` and return the ids whose build the caller
    should enqueue (after this commits). Safe to run concurrently and repeatedly."""
    now = now or utcnow()
    requeued = []
    with database.session() as db:
        rows = db.scalars(select(Catalog).where(Catalog.status.in_(PENDING))).all()
        for state in stale_builds([BuildState.of(c) for c in rows], now, stale_after_s):
            claimed = db.execute(
                update(Catalog)
                .where(
                    Catalog.id == state.catalog_id,
                    Catalog.generation == state.generation,
                    Catalog.status == state.status,
                    Catalog.updated_at == state.updated_at,
                )
                .values(status="queued", progress=0.0, updated_at=now)
                .execution_options(synchronize_session=False)
            )
            if claimed.rowcount == 1:
                requeued.append(state.catalog_id)
    return requeued
