"""Operator-wide views: key revocation, usage across tenants, the audit log."""

from __future__ import annotations

from datetime import date

from fastapi import APIRouter, Query

from moeplane.api.deps import Admin, DbSession, Pagination
from moeplane.api.schemas.common import ListPage
from moeplane.api.schemas.tenants import KeyPublic
from moeplane.api.schemas.usage import AuditPublic, UsageList
from moeplane.api.usage_views import usage_list
from moeplane.store.audit import audit, audit_query
from moeplane.store.keys import revoke_key
from moeplane.store.models import AuditEntry
from moeplane.store.scoping import page

router = APIRouter(prefix="/v1/admin", tags=["admin"])


@router.delete("/keys/{key_id}", response_model=KeyPublic)
def revoke(key_id: str, admin: Admin, db: DbSession):
    key = revoke_key(db, key_id, tenant_id=None)
    audit(db, admin.actor, "key.revoke", tenant_id=key.tenant_id, target_id=key.id)
    return KeyPublic.of(key)


@router.get("/usage", response_model=UsageList)
def all_usage(
    admin: Admin,
    db: DbSession,
    tenant_id: str | None = Query(default=None, max_length=40),
    kind: str | None = Query(default=None, max_length=40),
    start: date | None = Query(default=None, description="First UTC day (YYYY-MM-DD)"),
    end: date | None = Query(default=None, description="Last UTC day (YYYY-MM-DD)"),
):
    return usage_list(db, tenant_id, kind=kind, start=start, end=end)


@router.get("/audit", response_model=ListPage[AuditPublic])
def audit_log(
    admin: Admin,
    db: DbSession,
    pagination: Pagination,
    tenant_id: str | None = Query(default=None, max_length=40),
    action: str | None = Query(default=None, max_length=64),
):
    stmt = audit_query(tenant_id=tenant_id, action=action)
    rows, has_more = page(db, stmt, AuditEntry.id, limit=pagination.limit, after=pagination.after)
    return ListPage(data=[AuditPublic.of(e) for e in rows], has_more=has_more)
