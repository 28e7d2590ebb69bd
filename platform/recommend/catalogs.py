"""Catalogs over the database: create from uploaded files, append events, build the index.

`create_catalog` and `append_events` validate at the edge (errors name the line and field) and
only record rows; the index build runs in a Celery task (`build_catalog_index`), which is
idempotent per generation: it builds ``catalog.generation`` and does nothing when that
generation is already built. When an index is stored it creates, or rolls to the new index, the
catalog's ``recommender`` deployment (quotas apply) that the reconciler then deploys.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable
from typing import Any

import numpy as np
from sqlalchemy import func, insert, select
from sqlalchemy.orm import Session

from moeplane.datasets.lines import split_lines
from moeplane.errors import DomainError, InvalidRequest
from moeplane.files import get_file
from moeplane.recommend.index import build_index, save_index
from moeplane.recommend.records import (
    EventRecord,
    ProductRecord,
    parse_event,
    parse_events_jsonl,
    parse_products_jsonl,
)
from moeplane.recommend.sweep import BuildState, build_is_live
from moeplane.serving.deployments import DeploymentRequest, create_deployment
from moeplane.storage import Storage
from moeplane.store.db import Database
from moeplane.store.ids import new_id
from moeplane.store.models import Catalog, Deployment, InteractionEvent, Product, Tenant, utcnow
from moeplane.store.scoping import get_owned, scoped

__all__ = [
    "BUILD_TASK",
    "append_events",
    "build_catalog_index",
    "create_catalog",
    "deployment_name",
    "get_catalog",
    "load_catalog_records",
    "user_history",
]

log = logging.getLogger(__name__)

BUILD_TASK = "moeplane.recommend.build_index"
MAX_APPEND = 10_000  # events per POST /v1/catalogs/{id}/events
_PROGRESS_EVERY_S = 1.0  # how often a build writes its progress
_REPLICA_CPUS = 0.5
_READ_CHUNK = 1024 * 1024


def get_catalog(db: Session, tenant_id: str, catalog_id: str, *, param: str = "catalog_id"):
    return get_owned(db, Catalog, tenant_id, catalog_id, label="catalog", param=param)


def _file_lines(
    db: Session, storage: Storage, tenant_id: str, file_id: str, *, param: str, purpose: str
) -> list[str]:
    """The file's lines, split as its upload check split them (files uploaded before uploads
    were checked are parsed here all the same: use time validates again)."""
    record = get_file(db, tenant_id, file_id, param=param)
    if record.purpose != purpose:
        raise InvalidRequest(
            f"{param} must be a file uploaded with purpose '{purpose}' (it has '{record.purpose}')",
            param=param,
        )
    with storage.open_read(record.storage_key) as handle:
        try:
            return split_lines(iter(lambda: handle.read(_READ_CHUNK), b""))
        except InvalidRequest as exc:
            raise _named(param, exc) from exc


def _named(param: str, error: InvalidRequest) -> InvalidRequest:
    """A parse error, said of the file it came from (``products_file: line 3: price ...``)."""
    return InvalidRequest(f"{param}: {error.message}", param=param, code=error.code)


def create_catalog(
    db: Session,
    storage: Storage,
    tenant_id: str,
    *,
    name: str,
    products_file: str,
    events_file: str | None = None,
) -> Catalog:
    """Parse both files (all or nothing), record the catalog, its products and events."""
    lines = _file_lines(
        db, storage, tenant_id, products_file, param="products_file", purpose="catalog"
    )
    try:
        products = parse_products_jsonl(lines)
    except InvalidRequest as exc:
        raise _named("products_file", exc) from exc
    events: list[EventRecord] = []
    if events_file:
        lines = _file_lines(
            db, storage, tenant_id, events_file, param="events_file", purpose="events"
        )
        try:
            events = parse_events_jsonl(lines, {p.id for p in products})
        except InvalidRequest as exc:
            raise _named("events_file", exc) from exc
    catalog = Catalog(
        id=new_id("cat"),
        tenant_id=tenant_id,
        name=name,
        status="queued",
        products_file=products_file,
        events_file=events_file,
        product_count=len(products),
        event_count=len(events),
    )
    db.add(catalog)
    db.flush()
    db.execute(insert(Product), [_product_row(catalog, p) for p in products])
    _insert_events(db, catalog, events)
    return catalog


def _product_row(catalog: Catalog, p: ProductRecord) -> dict[str, Any]:
    return {
        "tenant_id": catalog.tenant_id,
        "catalog_id": catalog.id,
        "product_id": p.id,
        "title": p.title,
        "description": p.description,
        "category": p.category,
        "price": p.price,
        "in_stock": p.in_stock,
        "attributes": p.attributes,
    }


def _insert_events(db: Session, catalog: Catalog, events: Iterable[EventRecord]) -> None:
    from datetime import UTC, datetime

    rows = [
        {
            "tenant_id": catalog.tenant_id,
            "catalog_id": catalog.id,
            "user_id": e.user_id,
            "product_id": e.product_id,
            "type": e.type,
            "timestamp": datetime.fromtimestamp(e.timestamp, UTC),
        }
        for e in events
    ]
    if rows:
        db.execute(insert(InteractionEvent), rows)


def append_events(
    db: Session, tenant_id: str, catalog_id: str, items: list[Any], *, reindex: bool
) -> tuple[Catalog, int]:
    """Validate and append events (errors name the list index); ``reindex`` requests a new
    index generation. Returns the catalog and how many events were added."""
    catalog = get_catalog(db, tenant_id, catalog_id, param="catalog_id")
    if len(items) > MAX_APPEND:
        raise InvalidRequest(f"at most {MAX_APPEND} events per request", param="events")
    events = []
    for i, item in enumerate(items):
        try:
            events.append(parse_event(item))
        except InvalidRequest as exc:
            message, param = f"events[{i}].{exc.message}", f"events[{i}].{exc.param}"
            raise InvalidRequest(message, param=param) from exc
    wanted = {e.product_id for e in events}
    found = (
        set(
            db.scalars(
                select(Product.product_id).where(
                    Product.catalog_id == catalog.id, Product.product_id.in_(wanted)
                )
            )
        )
        if wanted
        else set()
    )
    for i, e in enumerate(events):
        if e.product_id not in found:
            raise InvalidRequest(
                f"events[{i}].product_id '{e.product_id}' is not in the catalog",
                param=f"events[{i}].product_id",
            )
    _insert_events(db, catalog, events)
    catalog.event_count += len(events)
    if reindex:
        request_build(catalog)
    db.flush()
    return catalog, len(events)


def request_build(catalog: Catalog) -> None:
    catalog.generation += 1
    catalog.status = "queued"
    catalog.progress = 0.0
    catalog.error = None


def user_history(
    db: Session, tenant_id: str, catalog_id: str, user_id: str, limit: int = 50
) -> list[tuple[str, str, float]]:
    """The user's newest interactions in the catalog: (product_id, type, unix seconds)."""
    stmt = (
        scoped(InteractionEvent, tenant_id)
        .where(InteractionEvent.catalog_id == catalog_id, InteractionEvent.user_id == user_id)
        .order_by(InteractionEvent.timestamp.desc())
        .limit(limit)
        .with_only_columns(  # rows, not ORM objects: this is on every request's path
            InteractionEvent.product_id, InteractionEvent.type, InteractionEvent.timestamp
        )
    )
    return [(pid, kind, ts.timestamp()) for pid, kind, ts in db.execute(stmt)]


def product_exists(db: Session, tenant_id: str, catalog_id: str, product_id: str) -> bool:
    stmt = scoped(Product, tenant_id).where(
        Product.catalog_id == catalog_id, Product.product_id == product_id
    )
    return db.scalar(select(func.count()).select_from(stmt.subquery())) > 0


def deployment_name(catalog_id: str) -> str:
    """``catalog-<short id>``: the random tail of the id (the head is its timestamp)."""
    return f"catalog-{catalog_id[-8:].lower()}"


# -- the index build (Celery task body) ----------------------------------------------------------


def _start(
    database: Database, catalog_id: str, stale_after_s: float | None
) -> tuple[int, str] | None:
    """Claim the build of the catalog's current generation; None when there is nothing to do:
    it is built, or (with ``stale_after_s``) another worker's build of it is alive."""
    with database.session() as db:
        catalog = db.get(Catalog, catalog_id, with_for_update=True)
        if catalog is None or catalog.built_generation >= catalog.generation:
            return None
        if stale_after_s is not None and build_is_live(
            BuildState.of(catalog), utcnow(), stale_after_s
        ):
            log.info("index build of %s is running elsewhere: nothing to do", catalog_id)
            return None
        catalog.status, catalog.progress, catalog.error = "building", 0.0, None
        return catalog.generation, catalog.tenant_id


def load_catalog_records(
    database: Database, catalog_id: str
) -> tuple[list[ProductRecord], list[EventRecord]]:
    """A catalog's products (upload order) and events (arrival order)."""
    with database.session() as db:
        products = [
            ProductRecord(
                p.product_id, p.title, p.description, p.category, p.price, p.in_stock, p.attributes
            )
            for p in db.scalars(
                select(Product).where(Product.catalog_id == catalog_id).order_by(Product.id)
            )
        ]
        events = [
            EventRecord(e.user_id, e.product_id, e.type, e.timestamp.timestamp())
            for e in db.scalars(
                select(InteractionEvent)
                .where(InteractionEvent.catalog_id == catalog_id)
                .order_by(InteractionEvent.id)
            )
        ]
    return products, events


def _progress_writer(database: Database, catalog_id: str, generation: int):
    last = [0.0]

    def write(fraction: float) -> None:
        now = time.monotonic()
        if now - last[0] < _PROGRESS_EVERY_S and fraction < 1.0:
            return
        last[0] = now
        with database.session() as db:
            catalog = db.get(Catalog, catalog_id)
            if catalog is not None and catalog.generation == generation:
                catalog.progress = round(min(0.99, fraction), 3)
                catalog.updated_at = utcnow()  # the heartbeat, even when progress stands still

    return write


def build_catalog_index(
    database: Database,
    storage: Storage,
    catalog_id: str,
    embed: Callable[[list[str]], np.ndarray],
    *,
    stale_after_s: float | None = None,
) -> str | None:
    """Build the catalog's current index generation, store it, and point its recommender
    deployment at it. Returns the new status (None when there was nothing to do).

    With ``stale_after_s`` (the Celery task passes ``catalog_build_stale_s``), a build that
    another worker claimed and that reported progress within that age is left to it, so a
    duplicate enqueue never builds one generation twice at once."""
    claimed = _start(database, catalog_id, stale_after_s)
    if claimed is None:
        return None
    generation, tenant_id = claimed
    try:
        products, events = load_catalog_records(database, catalog_id)
        index = build_index(
            products, events, embed, progress=_progress_writer(database, catalog_id, generation)
        )
        prefix = f"tenants/{tenant_id}/catalogs/{catalog_id}/index-{generation}"
        save_index(index, lambda name, data: storage.write_stream(f"{prefix}/{name}", [data]))
        uri = storage.uri(prefix)
    except Exception as exc:  # the build failed: say why on the catalog, keep the old index
        log.exception("index build of %s failed", catalog_id)
        with database.session() as db:
            catalog = db.get(Catalog, catalog_id)
            if catalog is not None and catalog.generation == generation:
                catalog.status = "failed"
                catalog.error = {"code": "index_build_failed", "message": f"{exc}"[:1000]}
        return "failed"
    with database.session() as db:
        catalog = db.get(Catalog, catalog_id, with_for_update=True)
        if catalog is None:
            storage.delete_prefix(prefix)
            return None
        log.info("built index generation %d of %s", generation, catalog_id)
        catalog.built_generation = max(catalog.built_generation, generation)
        catalog.index_uri = uri
        if catalog.generation == generation:  # else a newer build is queued behind this one
            catalog.status, catalog.progress = "ready", 1.0
        try:
            _serve(db, catalog)
        except DomainError as exc:  # e.g. max_deployments: the index is ready, not served
            catalog.error = {"code": exc.code, "message": f"not served: {exc.message}"}
        return catalog.status


def _serve(db: Session, catalog: Catalog) -> None:
    """Create the catalog's recommender deployment, or roll it to the new index."""
    options = {"catalog_id": catalog.id, "index_uri": catalog.index_uri}
    deployment = None
    if catalog.deployment_id is not None:
        deployment = db.scalars(
            scoped(Deployment, catalog.tenant_id).where(Deployment.id == catalog.deployment_id)
        ).first()
    if deployment is None or deployment.status == "deleting":
        tenant = db.get(Tenant, catalog.tenant_id)
        assert tenant is not None
        with db.begin_nested():  # a refused quota leaves the catalog update intact
            deployment = create_deployment(
                db,
                tenant,
                DeploymentRequest(
                    name=deployment_name(catalog.id),
                    model=catalog.id,
                    kind="recommender",
                    options=options,
                    resources={"cpus_per_shard": _REPLICA_CPUS},
                ),
            )
        catalog.deployment_id = deployment.id
    elif deployment.options != options:  # a new index: a rolling update
        deployment.options = options
        deployment.generation += 1
        deployment.status = "deploying" if deployment.observed_generation else "pending"
        deployment.status_reason = None
    db.flush()
