"""Operators manage tenants, their quotas and their keys."""

from __future__ import annotations

from datetime import UTC, datetime

from fastapi import APIRouter, Query
from fastapi.responses import JSONResponse

from moeplane.api.deps import Admin, DbSession, Idempotency, Pagination
from moeplane.api.schemas.common import ListPage
from moeplane.api.schemas.tenants import (
    KeyCreate,
    KeyCreated,
    KeyPublic,
    QuotaPublic,
    QuotaUpdate,
    TenantCreate,
    TenantPublic,
    TenantUpdate,
)
from moeplane.store import tenants
from moeplane.store.audit import audit
from moeplane.store.keys import issue_key
from moeplane.store.models import ApiKey, Tenant
from moeplane.store.scoping import page, scoped

router = APIRouter(prefix="/v1/admin/tenants", tags=["admin"])


def redact_key(response: dict) -> dict:
    """Stored copies of key creations never hold the secret: it is shown exactly once."""
    return {**response, "key": None}


@router.post("", response_model=TenantPublic, status_code=201)
def create_tenant(body: TenantCreate, admin: Admin, db: DbSession, idem: Idempotency):
    def create() -> TenantPublic:
        quota = body.quota.model_dump(exclude_none=True) if body.quota else None
        tenant = tenants.create_tenant(db, name=body.name, weight=body.weight, quota=quota)
        audit(db, admin.actor, "tenant.create", tenant_id=tenant.id, target_id=tenant.id)
        return TenantPublic.of(tenant)

    return idem.run("admin", body, create, status_code=201)


@router.get("", response_model=ListPage[TenantPublic])
def list_tenants(
    admin: Admin,
    db: DbSession,
    pagination: Pagination,
    q: str | None = Query(default=None, max_length=100, description="Name contains"),
    status: str | None = Query(default=None, pattern="^(active|suspended)$"),
):
    stmt = tenants.list_tenants(db, query=q, status=status)
    rows, has_more = page(db, stmt, Tenant.id, limit=pagination.limit, after=pagination.after)
    return ListPage(data=[TenantPublic.of(t) for t in rows], has_more=has_more)


@router.get("/{tenant_id}", response_model=TenantPublic)
def get_tenant(tenant_id: str, admin: Admin, db: DbSession):
    return TenantPublic.of(tenants.get_tenant(db, tenant_id))


@router.patch("/{tenant_id}", response_model=TenantPublic)
def update_tenant(tenant_id: str, body: TenantUpdate, admin: Admin, db: DbSession):
    changes = body.model_dump(exclude_unset=True, exclude_none=True)
    tenant = tenants.update_tenant(db, tenant_id, changes)
    audit(
        db, admin.actor, "tenant.update", tenant_id=tenant_id, target_id=tenant_id, detail=changes
    )
    return TenantPublic.of(tenant)


@router.delete("/{tenant_id}", response_model=TenantPublic)
def delete_tenant(tenant_id: str, admin: Admin, db: DbSession):
    tenant = tenants.delete_tenant(db, tenant_id)
    audit(db, admin.actor, "tenant.delete", tenant_id=tenant_id, target_id=tenant_id)
    return TenantPublic.of(tenant)


@router.get("/{tenant_id}/quota", response_model=QuotaPublic)
def get_quota(tenant_id: str, admin: Admin, db: DbSession):
    tenants.get_tenant(db, tenant_id)
    return QuotaPublic.of(tenants.get_quota(db, tenant_id))


@router.put("/{tenant_id}/quota", response_model=QuotaPublic)
def set_quota(tenant_id: str, body: QuotaUpdate, admin: Admin, db: DbSession):
    values = body.model_dump(exclude_none=True)
    quota = tenants.set_quota(db, tenant_id, values)
    audit(db, admin.actor, "quota.update", tenant_id=tenant_id, target_id=tenant_id, detail=values)
    return QuotaPublic.of(quota)


@router.post("/{tenant_id}/keys", response_model=KeyCreated, status_code=201)
def create_key(
    tenant_id: str, body: KeyCreate, admin: Admin, db: DbSession, idem: Idempotency
) -> KeyCreated | JSONResponse:
    def create() -> KeyCreated:
        tenants.get_tenant(db, tenant_id)
        expires = datetime.fromtimestamp(body.expires_at, UTC) if body.expires_at else None
        issued = issue_key(
            db, tenant_id=tenant_id, role="tenant", name=body.name, expires_at=expires
        )
        audit(db, admin.actor, "key.create", tenant_id=tenant_id, target_id=issued.record.id)
        return KeyCreated(**KeyPublic.of(issued.record).model_dump(), key=issued.secret)

    return idem.run("admin", body, create, status_code=201, stored=redact_key)


@router.get("/{tenant_id}/keys", response_model=ListPage[KeyPublic])
def list_keys(tenant_id: str, admin: Admin, db: DbSession, pagination: Pagination):
    tenants.get_tenant(db, tenant_id)
    stmt = scoped(ApiKey, tenant_id)
    rows, has_more = page(db, stmt, ApiKey.id, limit=pagination.limit, after=pagination.after)
    return ListPage(data=[KeyPublic.of(k) for k in rows], has_more=has_more)
