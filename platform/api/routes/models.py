"""The model catalog a tenant can use: base models and its own fine-tunes."""

from __future__ import annotations

from fastapi import APIRouter

from moeplane.api.deps import DbSession, Pagination, TenantCtx
from moeplane.api.schemas.common import ListPage
from moeplane.api.schemas.models import ModelPublic, ModelVersionPublic
from moeplane.store.models import Model, ModelVersion
from moeplane.store.registry import get_model, versions_query, visible_models_query
from moeplane.store.scoping import page

router = APIRouter(prefix="/v1/models", tags=["models"])


@router.get("", response_model=ListPage[ModelPublic])
def list_models(tenant: TenantCtx, db: DbSession):
    rows = db.scalars(visible_models_query(tenant.id).order_by(Model.created_at, Model.id))
    return ListPage(data=[ModelPublic.of(m) for m in rows])


@router.get("/{model_id}", response_model=ModelPublic)
def get_one(model_id: str, tenant: TenantCtx, db: DbSession):
    return ModelPublic.of(get_model(db, tenant.id, model_id))


@router.get("/{model_id}/versions", response_model=ListPage[ModelVersionPublic])
def versions(model_id: str, tenant: TenantCtx, db: DbSession, pagination: Pagination):
    model = get_model(db, tenant.id, model_id)
    rows, has_more = page(
        db,
        versions_query(model.id),
        ModelVersion.id,
        limit=pagination.limit,
        after=pagination.after,
    )
    return ListPage(data=[ModelVersionPublic.of(v) for v in rows], has_more=has_more)
