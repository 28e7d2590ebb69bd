"""Request dependencies: database session, authentication, roles, rate limits, idempotency.

Authorisation is always a dependency (``Admin``, ``TenantCtx``), never an ``if`` in a route.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Query, Request
from fastapi.concurrency import run_in_threadpool
from sqlalchemy.orm import Session

from moeplane.api.idempotency import IdempotencyGuard
from moeplane.config import Settings
from moeplane.errors import Forbidden, RateLimited, Unauthenticated
from moeplane.limits import Limiter
from moeplane.store.audit import Actor
from moeplane.store.keys import authenticate
from moeplane.store.models import ApiKey, Quota, Tenant
from moeplane.store.tenants import ensure_active

__all__ = [
    "Admin",
    "AdminCtx",
    "DbSession",
    "Idempotency",
    "Pagination",
    "Principal",
    "TenantCtx",
    "TenantNow",
    "TenantScope",
    "in_short_transaction",
]


async def _sqlite_gate(request: Request) -> AsyncIterator[None]:
    """On SQLite, let one request at a time use the database.

    SQLite has one writer, and our transactions take its lock up front (BEGIN IMMEDIATE). A
    request runs its sync dependencies and route in several worker-thread hops; if every worker
    thread were blocked waiting for the lock, the holder could not get a thread to finish, and
    all would stall until the busy timeout. Waiting here, on the event loop, holds no thread.
    PostgreSQL needs no gate (its pool is larger than the thread pool).
    """
    gate: asyncio.Lock | None = request.app.state.db_gate
    if gate is None:
        yield
        return
    async with gate:
        yield


def get_db(
    request: Request, _gate: Annotated[None, Depends(_sqlite_gate, scope="function")]
) -> Iterator[Session]:
    """One transaction per request, committed before the response is sent."""
    with request.app.state.db.session() as session:
        yield session


DbSession = Annotated[Session, Depends(get_db, scope="function")]


@dataclass
class Principal:
    key: ApiKey
    tenant: Tenant | None
    quota: Quota | None

    @property
    def actor(self) -> Actor:
        return Actor(self.key.id, self.key.role, self.key.tenant_id)


def _bearer(request: Request) -> str:
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise Unauthenticated("Missing API key: send 'Authorization: Bearer mp-...'")
    return token.strip()


def get_principal(request: Request, db: DbSession) -> Principal:
    key, tenant, quota = authenticate(db, _bearer(request))
    return Principal(key=key, tenant=tenant, quota=quota)


def require_admin(principal: Annotated[Principal, Depends(get_principal)]) -> Principal:
    if principal.key.role != "admin":
        raise Forbidden("This route needs an admin key", code="admin_required")
    return principal


Admin = Annotated[Principal, Depends(require_admin)]
AdminCtx = Admin


@dataclass
class TenantScope:
    """An authenticated, active tenant, its quota and its key; the filter for every query."""

    tenant: Tenant
    quota: Quota
    key: ApiKey

    @property
    def id(self) -> str:
        return self.tenant.id

    @property
    def actor(self) -> Actor:
        return Actor(self.key.id, "tenant", self.tenant.id)


def _limiter(request: Request) -> Limiter:
    return request.app.state.limiter


def take_rate(limiter: Limiter, key: str, amount: int, per_minute: int, what: str) -> None:
    decision = limiter.take(key, amount, per_minute)
    if not decision.allowed:
        raise RateLimited(
            f"Rate limit reached: {per_minute} {what} per minute",
            retry_after_s=decision.retry_after_s,
        )


def require_tenant(
    request: Request, principal: Annotated[Principal, Depends(get_principal)]
) -> TenantScope:
    if principal.key.role != "tenant" or principal.tenant is None:
        raise Forbidden("This route needs a tenant key", code="tenant_required")
    ensure_active(principal.tenant)
    quota = principal.quota
    assert quota is not None, "every tenant has a quota row"
    take_rate(_limiter(request), f"{principal.tenant.id}:rpm", 1, quota.rpm, "requests")
    return TenantScope(tenant=principal.tenant, quota=quota, key=principal.key)


TenantCtx = Annotated[TenantScope, Depends(require_tenant)]


async def in_short_transaction(request: Request, fn, *args):  # type: ignore[no-untyped-def]
    """Run ``fn(session, *args)`` in its own short transaction, in a worker thread, behind the
    SQLite gate. For long-running routes (inference), which must not hold a session (nor the
    gate) while a model generates."""
    gate: asyncio.Lock | None = request.app.state.db_gate

    def run():  # type: ignore[no-untyped-def]
        with request.app.state.db.session() as session:
            return fn(session, *args)

    if gate is None:
        return await run_in_threadpool(run)
    async with gate:
        return await run_in_threadpool(run)


async def _tenant_short(request: Request) -> TenantScope:
    def auth(session: Session) -> TenantScope:  # one thread hop: key, tenant, rpm
        key, tenant, quota = authenticate(session, _bearer(request))
        return require_tenant(request, Principal(key=key, tenant=tenant, quota=quota))

    return await in_short_transaction(request, auth)


# Like TenantCtx, without a session that lives as long as the route.
TenantNow = Annotated[TenantScope, Depends(_tenant_short)]


@dataclass(frozen=True)
class PageParams:
    limit: int
    after: str | None


def _page_params(
    limit: Annotated[int, Query(ge=1, le=100, description="Page size")] = 20,
    after: Annotated[
        str | None, Query(max_length=64, description="Cursor: the last id of the previous page")
    ] = None,
) -> PageParams:
    return PageParams(limit=limit, after=after)


Pagination = Annotated[PageParams, Depends(_page_params)]


def _idempotency(request: Request, db: DbSession) -> IdempotencyGuard:
    settings: Settings = request.app.state.settings
    return IdempotencyGuard(request, db, ttl_s=settings.idempotency_ttl_s)


Idempotency = Annotated[IdempotencyGuard, Depends(_idempotency)]
