"""Celery tasks of serving: the deployment reconcile tick (Celery beat runs it)."""

from __future__ import annotations

from typing import Any

from celery import Celery

from moeplane.config import Settings
from moeplane.serving.reconcile import ServeClient, reconcile_deployments
from moeplane.store.db import Database

__all__ = ["register_serving_tasks"]


def register_serving_tasks(app: Celery, settings: Settings) -> None:
    state: dict[str, Any] = {}

    def db() -> Database:  # per process, made after the worker forks
        if "db" not in state:
            state["db"] = Database(settings.database_url)
        return state["db"]

    # Overlapping ticks are harmless (see reconcile_deployments); stale ones just expire.
    @app.task(
        name="moeplane.serving.reconcile", expires=settings.reconcile_interval_s * 2, shared=False
    )
    def reconcile() -> dict[str, list[str]]:
        report = reconcile_deployments(db(), settings, ServeClient(settings))
        return {"applied": report.applied, "removed": report.removed, "purged": report.purged}
