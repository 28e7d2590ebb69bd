"""Celery task of recommendations: build a catalog's index (idempotent per generation)."""

from __future__ import annotations

import logging
from typing import Any

from celery import Celery
from kombu.exceptions import OperationalError

from moeplane.config import Settings
from moeplane.recommend.catalogs import BUILD_TASK, build_catalog_index
from moeplane.storage import Storage
from moeplane.store.db import Database

__all__ = ["enqueue_build", "register_recommend_tasks"]

log = logging.getLogger(__name__)


def register_recommend_tasks(app: Celery, settings: Settings) -> None:
    state: dict[str, Any] = {}

    def runtime() -> tuple[Database, Storage, Any]:  # per process, made after the worker forks
        if "db" not in state:
            from moeplane.modeling.embeddings import EmbeddingModel

            state["db"] = Database(settings.database_url)
            state["storage"] = Storage(settings.storage_uri)
            state["model"] = EmbeddingModel()
        return state["db"], state["storage"], state["model"]

    @app.task(name=BUILD_TASK)
    def build_index(catalog_id: str) -> str | None:
        db, storage, model = runtime()
        return build_catalog_index(db, storage, catalog_id, model.encode)


def enqueue_build(celery: Any, catalog_id: str) -> None:
    """Ask a worker to build the catalog's index (after the commit that requested it)."""
    try:
        celery.send_task(BUILD_TASK, args=[catalog_id])
    except OperationalError:
        log.warning("broker unavailable: catalog %s stays queued", catalog_id)
