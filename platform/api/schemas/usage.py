"""Usage counters, the caller's own view (/v1/me) and the audit log."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel

from moeplane.api.schemas.common import epoch
from moeplane.api.schemas.tenants import KeyPublic, QuotaPublic, TenantPublic
from moeplane.store.models import AuditEntry, UsageCounter

__all__ = ["AuditPublic", "Me", "UsageList", "UsagePublic"]


class UsagePublic(BaseModel):
    object: Literal["usage"] = "usage"
    tenant_id: str
    kind: str
    period: str
    amount: int

    @classmethod
    def of(cls, row: UsageCounter) -> UsagePublic:
        return cls(tenant_id=row.tenant_id, kind=row.kind, period=row.period, amount=row.amount)


class UsageList(BaseModel):
    object: Literal["list"] = "list"
    data: list[UsagePublic]
    totals: dict[str, int]
    has_more: bool = False


class MonthUsage(BaseModel):
    month: str
    totals: dict[str, int]


class Me(BaseModel):
    object: Literal["me"] = "me"
    tenant: TenantPublic
    quota: QuotaPublic
    usage: MonthUsage
    key: KeyPublic


class AuditPublic(BaseModel):
    object: Literal["audit_entry"] = "audit_entry"
    id: str
    created_at: int
    actor_key_id: str | None
    actor_role: str
    tenant_id: str | None
    action: str
    target_id: str | None
    detail: dict[str, Any]

    @classmethod
    def of(cls, entry: AuditEntry) -> AuditPublic:
        return cls(
            id=entry.id,
            created_at=epoch(entry.created_at),
            actor_key_id=entry.actor_key_id,
            actor_role=entry.actor_role,
            tenant_id=entry.tenant_id,
            action=entry.action,
            target_id=entry.target_id,
            detail=entry.detail,
        )
