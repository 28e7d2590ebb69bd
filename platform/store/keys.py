"""API keys: ``mp-<random>``, stored as SHA-256 hash + visible prefix, shown exactly once."""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.orm import Session

from moeplane.errors import InvalidRequest, NotFound, Unauthenticated
from moeplane.store.ids import new_id
from moeplane.store.models import ApiKey, Quota, Tenant, utcnow

__all__ = [
    "IssuedKey",
    "authenticate",
    "ensure_admin_key",
    "generate_key",
    "hash_key",
    "issue_key",
    "revoke_key",
]

KEY_PREFIX = "mp-"
_VISIBLE = 10  # "mp-" + 7 characters shown in listings
ROLES = ("admin", "tenant")


def generate_key() -> str:
    return KEY_PREFIX + secrets.token_urlsafe(32)  # 256 bits of entropy


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


@dataclass(frozen=True)
class IssuedKey:
    record: ApiKey
    secret: str  # the only time the key exists in clear text


def issue_key(
    session: Session,
    *,
    tenant_id: str | None,
    role: str,
    name: str = "",
    expires_at: datetime | None = None,
    secret: str | None = None,
) -> IssuedKey:
    if role not in ROLES:
        raise InvalidRequest(f"role must be one of {', '.join(ROLES)}", param="role")
    if (role == "admin") != (tenant_id is None):
        raise InvalidRequest("admin keys have no tenant; tenant keys need one", param="role")
    if expires_at is not None and expires_at <= utcnow():
        raise InvalidRequest("expires_at must be in the future", param="expires_at")
    secret = secret or generate_key()
    record = ApiKey(
        id=new_id("key"),
        tenant_id=tenant_id,
        role=role,
        name=name,
        prefix=secret[:_VISIBLE],
        key_hash=hash_key(secret),
        expires_at=expires_at,
    )
    session.add(record)
    session.flush()
    return IssuedKey(record=record, secret=secret)


def authenticate(session: Session, presented: str) -> tuple[ApiKey, Tenant | None, Quota | None]:
    """Resolve a presented key to its record, tenant and quota (one query), or raise
    Unauthenticated.

    The lookup is by an indexed hash; the final comparison is constant-time so the response
    time does not depend on how much of a guessed hash matched.
    """
    if not presented.startswith(KEY_PREFIX):
        raise Unauthenticated("Invalid API key")
    digest = hash_key(presented)
    row = session.execute(
        select(ApiKey, Tenant, Quota)
        .outerjoin(Tenant, Tenant.id == ApiKey.tenant_id)
        .outerjoin(Quota, Quota.tenant_id == ApiKey.tenant_id)
        .where(ApiKey.key_hash == digest)
    ).first()
    if row is None or not hmac.compare_digest(row[0].key_hash, digest):
        raise Unauthenticated("Invalid API key")
    key, tenant, quota = row
    now = utcnow()
    if key.revoked_at is not None:
        raise Unauthenticated("This API key has been revoked")
    if key.expires_at is not None and key.expires_at <= now:
        raise Unauthenticated("This API key has expired")
    if tenant is not None and tenant.status == "deleted":
        raise Unauthenticated("Invalid API key")
    return key, tenant, quota


def revoke_key(session: Session, key_id: str, *, tenant_id: str | None) -> ApiKey:
    """Revoke a key; ``tenant_id`` limits it to that tenant's keys (None = any, for admins)."""
    stmt = select(ApiKey).where(ApiKey.id == key_id)
    if tenant_id is not None:
        stmt = stmt.where(ApiKey.tenant_id == tenant_id)
    key = session.scalars(stmt).first()
    if key is None:
        raise NotFound(f"No API key with id '{key_id}'", param="key_id")
    if key.revoked_at is None:
        key.revoked_at = utcnow()
    return key


def ensure_admin_key(session: Session, configured: str | None) -> str | None:
    """Make sure an operator can log in; return a new key's secret when one was generated.

    A configured MOEPLANE_ADMIN_KEY is registered (once); otherwise a key is generated on the
    first start only (when no live admin key exists) and returned so the caller prints it once.
    """
    if configured is not None:
        exists = session.scalar(select(ApiKey.id).where(ApiKey.key_hash == hash_key(configured)))
        if exists is None:
            issue_key(session, tenant_id=None, role="admin", name="bootstrap", secret=configured)
        return None
    live = session.scalar(
        select(ApiKey.id).where(ApiKey.role == "admin", ApiKey.revoked_at.is_(None)).limit(1)
    )
    if live is not None:
        return None
    return issue_key(session, tenant_id=None, role="admin", name="bootstrap").secret
