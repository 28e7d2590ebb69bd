"""Lost catalog index builds are found and built; a build enqueued twice builds once. On SQLite
and PostgreSQL, with the real Celery app (create_celery: its broker, beat schedule and tasks)
and, for the end-to-end case, a real worker embedding with the real model."""

from __future__ import annotations

import json
import threading
import time
from datetime import timedelta
from pathlib import Path

import numpy as np
import pytest
from sqlalchemy import func, select, update

from moeplane.config import Settings
from moeplane.files import upload_file
from moeplane.recommend.catalogs import BUILD_TASK, build_catalog_index, create_catalog
from moeplane.recommend.generator import generate
from moeplane.recommend.tasks import SWEEP_TASK, enqueue_build
from moeplane.storage import Storage
from moeplane.store.db import Database
from moeplane.store.models import Catalog, Deployment, utcnow
from tests.factories import make_tenant

STALE_S = 60.0
DATA = generate(40, 30, seed=11)


@pytest.fixture
def sweep_settings(settings: Settings) -> Settings:
    return settings.model_copy(update={"catalog_build_stale_s": STALE_S})


def _catalog(database: Database, settings: Settings, tenant_id: str, name: str) -> str:
    """A catalog as the API records it, minus the enqueue (as if the broker was down)."""
    storage = Storage(settings.storage_uri)
    rows = b"".join(json.dumps(p.to_json()).encode() + b"\n" for p in DATA.products)
    with database.session() as db:
        file = upload_file(
            db,
            storage,
            tenant_id=tenant_id,
            filename="p.jsonl",
            purpose="catalog",
            chunks=[rows],
            max_bytes=10**8,
        )
        catalog = create_catalog(db, storage, tenant_id, name=name, products_file=file.id)
        return catalog.id


def _set(database: Database, catalog_id: str, *, idle_s: float, **values) -> None:
    with database.session() as db:
        db.execute(
            update(Catalog)
            .where(Catalog.id == catalog_id)
            .values(updated_at=utcnow() - timedelta(seconds=idle_s), **values)
        )


def _get(database: Database, catalog_id: str) -> Catalog:
    with database.session() as db:
        return db.get(Catalog, catalog_id)


def test_the_sweep_is_scheduled_and_requeues_only_lost_builds(database, sweep_settings):
    from moeplane.jobs.celery_app import create_celery

    celery = create_celery(sweep_settings)
    entry = celery.conf.beat_schedule["sweep-catalog-builds"]
    assert entry == {"task": SWEEP_TASK, "schedule": sweep_settings.catalog_sweep_interval_s}

    tenant = make_tenant(database, max_deployments=0)
    lost, fresh, died, alive, failed = (
        _catalog(database, sweep_settings, tenant.id, n)
        for n in ("lost", "fresh", "died", "alive", "failed")
    )
    _set(database, lost, idle_s=STALE_S * 3)
    _set(database, died, idle_s=STALE_S + 5, status="building", progress=0.4)
    _set(database, alive, idle_s=STALE_S / 2, status="building", progress=0.4)
    _set(database, failed, idle_s=STALE_S * 3, status="failed")

    sweep = celery.tasks[SWEEP_TASK]
    assert sorted(sweep.apply().get()) == sorted([lost, died])  # real task, real broker
    for catalog_id in (lost, died):
        catalog = _get(database, catalog_id)
        assert (catalog.status, catalog.progress) == ("queued", 0.0)
        assert (utcnow() - catalog.updated_at).total_seconds() < STALE_S / 2
    assert (_get(database, fresh).status, _get(database, alive).status) == ("queued", "building")
    assert _get(database, failed).status == "failed"
    # idempotent: the requeue restarted their clocks, so the next tick leaves them to the worker
    assert sweep.apply().get() == []


def _counting_embed(calls: list[int], gate: threading.Event | None = None):
    def embed(texts: list[str]) -> np.ndarray:
        calls.append(len(texts))
        if gate is not None:
            assert gate.wait(60)
        return np.ones((len(texts), 8), dtype=np.float32)

    return embed


def test_a_build_enqueued_twice_builds_once(database, sweep_settings):
    """Two deliveries of one build at once (a duplicate enqueue, a requeue racing the original):
    the first claims it, the second sees a live build and does nothing; later ones see it
    built. One index, one deployment."""
    tenant = make_tenant(database)
    storage = Storage(sweep_settings.storage_uri)
    catalog_id = _catalog(database, sweep_settings, tenant.id, "shop")
    calls: list[int] = []
    gate = threading.Event()
    results: dict[str, str | None] = {}

    def first() -> None:
        results["first"] = build_catalog_index(
            database, storage, catalog_id, _counting_embed(calls, gate), stale_after_s=STALE_S
        )

    thread = threading.Thread(target=first)
    thread.start()
    try:
        deadline = time.monotonic() + 30
        while not calls and time.monotonic() < deadline:  # claimed and embedding
            time.sleep(0.05)
        assert calls and _get(database, catalog_id).status == "building"
        second = build_catalog_index(
            database, storage, catalog_id, _counting_embed(calls), stale_after_s=STALE_S
        )
        assert second is None and len(calls) == 1
    finally:
        gate.set()
        thread.join(60)
    assert results["first"] == "ready"
    assert build_catalog_index(database, storage, catalog_id, _counting_embed(calls)) is None
    assert len(calls) == 1
    catalog = _get(database, catalog_id)
    assert (catalog.status, catalog.generation, catalog.built_generation) == ("ready", 1, 1)
    root = Path(sweep_settings.storage_uri.removeprefix("file://"))
    indexes = root / "tenants" / tenant.id / "catalogs" / catalog_id
    assert [p.name for p in indexes.iterdir()] == ["index-1"]
    with database.session() as db:
        deployments = db.scalar(select(func.count()).select_from(Deployment))
    assert deployments == 1


@pytest.mark.slow
def test_a_real_worker_builds_what_the_sweep_requeued_once(database, sweep_settings):
    """End to end: a build lost at enqueue, found by the sweep, enqueued once more by hand (a
    duplicate), run by a real worker with the real embedding model: one build, one no-op."""
    from celery.contrib.testing.worker import start_worker
    from celery.signals import task_postrun

    from moeplane.jobs.celery_app import create_celery

    celery = create_celery(sweep_settings)
    tenant = make_tenant(database)
    catalog_id = _catalog(database, sweep_settings, tenant.id, "shop")
    _set(database, catalog_id, idle_s=STALE_S * 2)
    assert celery.tasks[SWEEP_TASK].apply().get() == [catalog_id]
    enqueue_build(celery, catalog_id)  # the duplicate
    builds: list[tuple[list, object]] = []

    def done(sender=None, args=None, retval=None, **_):
        if sender is not None and sender.name == BUILD_TASK:
            builds.append((list(args), retval))

    task_postrun.connect(done, weak=False)
    try:
        with start_worker(celery, perform_ping_check=False, shutdown_timeout=30):
            deadline = time.monotonic() + 300
            while len(builds) < 2 and time.monotonic() < deadline:
                time.sleep(0.2)
    finally:
        task_postrun.disconnect(done)
    assert builds == [([catalog_id], "ready"), ([catalog_id], None)]
    catalog = _get(database, catalog_id)
    assert (catalog.status, catalog.built_generation, catalog.progress) == ("ready", 1, 1.0)
