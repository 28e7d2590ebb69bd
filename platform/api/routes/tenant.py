"""A tenant's own view: who am I, my keys, my usage."""

from __future__ import annotations

from datetime import UTC, date, datetime

from fastapi import APIRouter, Query
from fastapi.responses import JSONResponse

from moeplane.api.deps import DbSession, Idempotency, Pagination, TenantCtx
from moeplane.api.routes.admin_tenants import redact_key
from moeplane.api.schemas.common import ListPage
from moeplane.api.schemas.tenants import KeyCreate, KeyCreated, KeyPublic, QuotaPublic, TenantPublic
from moeplane.api.schemas.usage import Me, MonthUsage, UsageList
from moeplane.api.usage_views import usage_list
from moeplane.store.audit import audit
from moeplane.store.keys import issue_key, revoke_key
from moeplane.store.models import ApiKey, utcnow
from moeplane.store.scoping import page, scoped
from moeplane.store.usage import month_totals

router = APIRouter(prefix="/v1", tags=["tenant"])


@router.get("/me", response_model=Me)
def me(tenant: TenantCtx, db: DbSession):
    return Me(
        tenant=TenantPublic.of(tenant.tenant),
        quota=QuotaPublic.of(tenant.quota),
        usage=MonthUsage(month=utcnow().strftime("%Y-%m"), totals=month_totals(db, tenant.id)),
        key=KeyPublic.of(tenant.key),
    )


@router.post("/keys", response_model=KeyCreated, status_code=201)
def create_key(
    body: KeyCreate, tenant: TenantCtx, db: DbSession, idem: Idempotency
) -> KeyCreated | JSONResponse:
    def create() -> KeyCreated:
        expires = datetime.fromtimestamp(body.expires_at, UTC) if body.expires_at else None
        issued = issue_key(
            db, tenant_id=tenant.id, role="tenant", name=body.name, expires_at=expires
        )
        audit(db, tenant.actor, "key.create", target_id=issued.record.id)
        return KeyCreated(**KeyPublic.of(issued.record).model_dump(), key=issued.secret)

    return idem.run(tenant.id, body, create, status_code=201, stored=redact_key)


@router.get("/keys", response_model=ListPage[KeyPublic])
def list_keys(tenant: TenantCtx, db: DbSession, pagination: Pagination):
    stmt = scoped(ApiKey, tenant.id)
    rows, has_more = page(db, stmt, ApiKey.id, limit=pagination.limit, after=pagination.after)
    return ListPage(data=[KeyPublic.of(k) for k in rows], has_more=has_more)


@router.delete("/keys/{key_id}", response_model=KeyPublic)
def revoke(key_id: str, tenant: TenantCtx, db: DbSession):
    key = revoke_key(db, key_id, tenant_id=tenant.id)
    audit(db, tenant.actor, "key.revoke", target_id=key.id)
    return KeyPublic.of(key)


@router.get("/usage", response_model=UsageList)
def usage(
    tenant: TenantCtx,
    db: DbSession,
    kind: str | None = Query(default=None, max_length=40),
    start: date | None = Query(default=None, description="First UTC day (YYYY-MM-DD)"),
    end: date | None = Query(default=None, description="Last UTC day (YYYY-MM-DD)"),
):
    return usage_list(db, tenant.id, kind=kind, start=start, end=end)
