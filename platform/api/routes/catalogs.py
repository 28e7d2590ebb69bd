"""Product catalogs for recommendations: create from uploaded files, inspect, append events.

Creating a catalog (or appending events with ``reindex``) queues an index build; a Celery
worker embeds the products, computes co-occurrence and popularity, and reports progress on the
catalog. When the index is ready the catalog's recommender deployment serves it.
"""

from __future__ import annotations

from fastapi import APIRouter, Request

from moeplane.api.deps import DbSession, Idempotency, Pagination, TenantCtx
from moeplane.api.schemas.common import ListPage
from moeplane.api.schemas.recommend import (
    CatalogCreate,
    CatalogPublic,
    EventsAppend,
    EventsAppended,
)
from moeplane.recommend.catalogs import append_events, create_catalog, get_catalog
from moeplane.recommend.tasks import enqueue_build
from moeplane.store.audit import audit
from moeplane.store.db import on_commit
from moeplane.store.models import Catalog
from moeplane.store.scoping import page, scoped

router = APIRouter(prefix="/v1/catalogs", tags=["recommendations"])


def _enqueue_after_commit(request: Request, db, catalog_id: str) -> None:
    celery = request.app.state.dispatch.app
    on_commit(db, lambda: enqueue_build(celery, catalog_id))


@router.post("", response_model=CatalogPublic, status_code=201)
def create(
    body: CatalogCreate, request: Request, tenant: TenantCtx, db: DbSession, idem: Idempotency
):
    def run() -> CatalogPublic:
        catalog = create_catalog(
            db,
            request.app.state.storage,
            tenant.id,
            name=body.name,
            products_file=body.products_file,
            events_file=body.events_file,
        )
        audit(db, tenant.actor, "catalog.create", target_id=catalog.id)
        _enqueue_after_commit(request, db, catalog.id)
        return CatalogPublic.of(catalog)

    return idem.run(tenant.id, body, run, status_code=201)


@router.get("", response_model=ListPage[CatalogPublic])
def list_catalogs(tenant: TenantCtx, db: DbSession, pagination: Pagination):
    stmt = scoped(Catalog, tenant.id)
    rows, has_more = page(db, stmt, Catalog.id, limit=pagination.limit, after=pagination.after)
    return ListPage(data=[CatalogPublic.of(c) for c in rows], has_more=has_more)


@router.get("/{catalog_id}", response_model=CatalogPublic)
def get(catalog_id: str, tenant: TenantCtx, db: DbSession):
    return CatalogPublic.of(get_catalog(db, tenant.id, catalog_id))


@router.post("/{catalog_id}/events", response_model=EventsAppended)
def add_events(
    catalog_id: str, body: EventsAppend, request: Request, tenant: TenantCtx, db: DbSession
):
    catalog, added = append_events(
        db, tenant.id, catalog_id, [e.model_dump() for e in body.events], reindex=body.reindex
    )
    if body.reindex:
        _enqueue_after_commit(request, db, catalog.id)
    return EventsAppended(added=added, catalog=CatalogPublic.of(catalog))
