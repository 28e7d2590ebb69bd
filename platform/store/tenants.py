"""Tenants and their quotas."""

from __future__ import annotations

from typing import Any

from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from moeplane.errors import Conflict, Forbidden, InvalidRequest, NotFound
from moeplane.store.ids import new_id
from moeplane.store.models import ApiKey, Quota, Tenant, utcnow

__all__ = [
    "QUOTA_FIELDS",
    "create_tenant",
    "delete_tenant",
    "ensure_active",
    "get_quota",
    "get_tenant",
    "list_tenants",
    "lock_quota",
    "set_quota",
    "update_tenant",
]

QUOTA_FIELDS = (
    "max_concurrent_jobs",
    "compute_budget",
    "max_deployments",
    "max_replicas",
    "rpm",
    "tpm",
    "monthly_tokens",
    "max_file_bytes",
    "storage_bytes",
)
STATUSES = ("active", "suspended")


def create_tenant(
    session: Session, *, name: str, weight: float = 1.0, quota: dict[str, int] | None = None
) -> Tenant:
    if session.scalar(select(Tenant.id).where(func.lower(Tenant.name) == name.lower())):
        raise Conflict(f"A tenant named '{name}' already exists", param="name")
    tenant = Tenant(id=new_id("ten"), name=name, weight=weight)
    session.add(tenant)
    try:
        session.flush()
    except IntegrityError as exc:  # a concurrent create with the same name won the race
        raise Conflict(f"A tenant named '{name}' already exists", param="name") from exc
    session.add(Quota(tenant_id=tenant.id, **(quota or {})))
    session.flush()
    return tenant


def get_tenant(session: Session, tenant_id: str) -> Tenant:
    tenant = session.get(Tenant, tenant_id)
    if tenant is None or tenant.status == "deleted":
        raise NotFound(f"No tenant with id '{tenant_id}'", param="tenant_id")
    return tenant


def list_tenants(session: Session, *, query: str | None = None, status: str | None = None):
    """A select of live tenants, optionally filtered by a name substring and status."""
    stmt = select(Tenant).where(Tenant.status != "deleted")
    if query:
        stmt = stmt.where(func.lower(Tenant.name).contains(query.lower(), autoescape=True))
    if status:
        stmt = stmt.where(Tenant.status == status)
    return stmt


def update_tenant(session: Session, tenant_id: str, changes: dict[str, Any]) -> Tenant:
    tenant = get_tenant(session, tenant_id)
    if "status" in changes and changes["status"] not in STATUSES:
        raise InvalidRequest(f"status must be one of {', '.join(STATUSES)}", param="status")
    if "name" in changes and changes["name"].lower() != tenant.name.lower():
        taken = session.scalar(
            select(Tenant.id).where(func.lower(Tenant.name) == changes["name"].lower())
        )
        if taken:
            raise Conflict(f"A tenant named '{changes['name']}' already exists", param="name")
    for field, value in changes.items():
        setattr(tenant, field, value)
    session.flush()
    return tenant


def delete_tenant(session: Session, tenant_id: str) -> Tenant:
    """Soft delete: the tenant disappears from the API and its keys stop working at once;
    usage and audit history stay for billing and compliance."""
    tenant = get_tenant(session, tenant_id)
    tenant.status = "deleted"
    tenant.deleted_at = utcnow()
    tenant.name = f"{tenant.name}#deleted-{tenant.id}"  # frees the name for reuse
    for key in session.scalars(select(ApiKey).where(ApiKey.tenant_id == tenant_id)):
        if key.revoked_at is None:
            key.revoked_at = utcnow()
    session.flush()
    return tenant


def get_quota(session: Session, tenant_id: str) -> Quota:
    quota = session.get(Quota, tenant_id)
    if quota is None:
        raise NotFound(f"No tenant with id '{tenant_id}'", param="tenant_id")
    return quota


def lock_quota(session: Session, tenant_id: str) -> Quota:
    """Read the quota row with a row lock (PostgreSQL), so checks against it are atomic.

    On SQLite every transaction already holds the database write lock (BEGIN IMMEDIATE).
    """
    quota = session.scalars(
        select(Quota).where(Quota.tenant_id == tenant_id).with_for_update()
    ).first()
    if quota is None:
        raise NotFound(f"No tenant with id '{tenant_id}'", param="tenant_id")
    return quota


def set_quota(session: Session, tenant_id: str, values: dict[str, int]) -> Quota:
    get_tenant(session, tenant_id)
    quota = lock_quota(session, tenant_id)
    for field, value in values.items():
        if field not in QUOTA_FIELDS:
            raise InvalidRequest(f"Unknown quota field '{field}'", param=field)
        setattr(quota, field, value)
    session.flush()
    return quota


def ensure_active(tenant: Tenant) -> None:
    if tenant.status == "suspended":
        raise Forbidden("This tenant is suspended; contact the platform operator", code="suspended")
