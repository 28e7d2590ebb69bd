"""Celery tasks of recommendations: build a catalog's index (idempotent per generation), and the
periodic sweep that enqueues again the builds that were lost (see `moeplane.recommend.sweep`)."""

from __future__ import annotations

import logging
from typing import Any

from celery import Celery
from kombu.exceptions import OperationalError

from moeplane.config import Settings
from moeplane.recommend.catalogs import BUILD_TASK, build_catalog_index
from moeplane.recommend.sweep import requeue_stale_builds
from moeplane.storage import Storage
from moeplane.store.db import Database

__all__ = ["SWEEP_TASK", "enqueue_build", "register_recommend_tasks"]

log = logging.getLogger(__name__)

SWEEP_TASK = "moeplane.recommend.sweep_builds"


def register_recommend_tasks(app: Celery, settings: Settings) -> None:
    """Register the tasks, and the sweep in beat's schedule (next to the scheduler and
    reconcilers that `create_celery` schedules)."""
    state: dict[str, Any] = {}

    def database() -> Database:  # per process, made after the worker forks
        if "db" not in state:
            state["db"] = Database(settings.database_url)
        return state["db"]

    def runtime() -> tuple[Database, Storage, Any]:
        if "model" not in state:
            from moeplane.modeling.embeddings import EmbeddingModel

            state["storage"] = Storage(settings.storage_uri)
            state["model"] = EmbeddingModel()
        return database(), state["storage"], state["model"]

    # shared=False: these close over ``settings``; Celery's default adds a task to every app
    # made later in the process, where it would shadow that app's own (tests make several).
    @app.task(name=BUILD_TASK, shared=False)
    def build_index(catalog_id: str) -> str | None:
        db, storage, model = runtime()
        return build_catalog_index(
            db, storage, catalog_id, model.encode, stale_after_s=settings.catalog_build_stale_s
        )

    # Overlapping sweeps are harmless (each requeue is a compare-and-set); stale ones expire.
    @app.task(name=SWEEP_TASK, expires=settings.catalog_sweep_interval_s * 2, shared=False)
    def sweep_builds() -> list[str]:
        requeued = requeue_stale_builds(database(), settings.catalog_build_stale_s)
        for catalog_id in requeued:  # committed: a build task now finds the catalog queued
            log.warning("index build of %s looked lost: enqueued again", catalog_id)
            enqueue_build(app, catalog_id)
        return requeued

    app.conf.beat_schedule = {
        **(app.conf.beat_schedule or {}),
        "sweep-catalog-builds": {
            "task": SWEEP_TASK,
            "schedule": settings.catalog_sweep_interval_s,
        },
    }


def enqueue_build(celery: Any, catalog_id: str) -> None:
    """Ask a worker to build the catalog's index (after the commit that requested it). With the
    broker down the catalog stays queued, and the sweep enqueues it once the broker is back."""
    try:
        celery.send_task(BUILD_TASK, args=[catalog_id])
    except OperationalError:
        log.warning("broker unavailable: catalog %s stays queued", catalog_id)
