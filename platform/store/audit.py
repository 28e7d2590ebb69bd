"""Append-only audit log of who changed what."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from moeplane.store.ids import new_id
from moeplane.store.models import AuditEntry

__all__ = ["Actor", "audit", "audit_query"]


class Actor:
    """Who is acting: an API key (admin or tenant) or the system itself."""

    def __init__(self, key_id: str | None, role: str, tenant_id: str | None = None):
        self.key_id = key_id
        self.role = role
        self.tenant_id = tenant_id


SYSTEM = Actor(None, "system")


def audit(
    session: Session,
    actor: Actor,
    action: str,
    *,
    tenant_id: str | None = None,
    target_id: str | None = None,
    detail: dict[str, Any] | None = None,
) -> AuditEntry:
    entry = AuditEntry(
        id=new_id("aud"),
        actor_key_id=actor.key_id,
        actor_role=actor.role,
        tenant_id=tenant_id if tenant_id is not None else actor.tenant_id,
        action=action,
        target_id=target_id,
        detail=detail or {},
    )
    session.add(entry)
    return entry


def audit_query(*, tenant_id: str | None = None, action: str | None = None):
    stmt = select(AuditEntry)
    if tenant_id:
        stmt = stmt.where(AuditEntry.tenant_id == tenant_id)
    if action:
        stmt = stmt.where(AuditEntry.action == action)
    return stmt
