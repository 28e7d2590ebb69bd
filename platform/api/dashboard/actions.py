"""The dashboard's forms (POST). Every one needs a session and its CSRF token, and calls the
admin JSON API's own route functions, so a click does exactly what the API call does (audit
entry included). Success redirects (Post/Redirect/Get); a refused change re-renders the page with
the reason."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

from fastapi import APIRouter, Request
from pydantic import ValidationError
from sqlalchemy.orm import Session

from moeplane.api.dashboard.auth import CsrfForm, Operator
from moeplane.api.dashboard.pages import render_job, render_tenant, render_tenants
from moeplane.api.dashboard.render import redirect
from moeplane.api.deps import DbSession
from moeplane.api.errors import _STATUS
from moeplane.api.idempotency import IdempotencyGuard
from moeplane.api.routes import admin, admin_dashboard, admin_tenants
from moeplane.api.schemas.tenants import KeyCreate, QuotaUpdate, TenantCreate, TenantUpdate
from moeplane.errors import DomainError
from moeplane.store.tenants import QUOTA_FIELDS

__all__ = ["router"]

router = APIRouter(prefix="/admin", include_in_schema=False)

T = TypeVar("T")


class Refused(Exception):
    """A change the API refused: the message for the page and the API's HTTP status."""

    def __init__(self, message: str, status_code: int):
        super().__init__(message)
        self.message = message
        self.status_code = status_code


def attempt(db: Session, change: Callable[[], T]) -> T:
    """Run ``change`` in a savepoint; a refusal undoes it and becomes :class:`Refused`."""
    try:
        with db.begin_nested():
            return change()
    except ValidationError as exc:
        first = exc.errors()[0]
        field = ".".join(str(p) for p in first["loc"])
        raise Refused(f"{field}: {first['msg']}" if field else first["msg"], 422) from exc
    except DomainError as exc:
        status = next((v[0] for cls, v in _STATUS.items() if isinstance(exc, cls)), 400)
        raise Refused(exc.message, status) from exc


def _fields(form, names) -> dict[str, Any]:  # type: ignore[no-untyped-def]
    """Filled-in form fields among ``names`` (an empty field means "leave as is")."""
    return {n: str(form[n]).strip() for n in names if str(form.get(n) or "").strip()}


def _idempotency(request: Request, db: Session) -> IdempotencyGuard:
    # Forms carry no Idempotency-Key header, so the guard simply runs the creation.
    return IdempotencyGuard(request, db, ttl_s=request.app.state.settings.idempotency_ttl_s)


@router.post("/tenants")
def create_tenant(request: Request, operator: Operator, db: DbSession, form: CsrfForm):
    def create():  # type: ignore[no-untyped-def]
        body = TenantCreate(**_fields(form, ("name", "weight")))
        return admin_tenants.create_tenant(body, operator.principal, db, _idempotency(request, db))

    try:
        tenant = attempt(db, create)
    except Refused as exc:
        return render_tenants(
            request,
            operator,
            db,
            status_code=exc.status_code,
            error=exc.message,
            new_name=str(form.get("name") or ""),
        )
    return redirect(f"/admin/tenants/{tenant.id}?done=created")


@router.post("/tenants/{tenant_id}/status")
def set_status(tenant_id: str, request: Request, operator: Operator, db: DbSession, form: CsrfForm):
    def change():  # type: ignore[no-untyped-def]
        body = TenantUpdate(status=str(form.get("status") or ""))
        return admin_tenants.update_tenant(tenant_id, body, operator.principal, db)

    try:
        tenant = attempt(db, change)
    except Refused as exc:
        return render_tenant(
            request, operator, db, tenant_id, status_code=exc.status_code, error=exc.message
        )
    return redirect(f"/admin/tenants/{tenant_id}?done={tenant.status}")


@router.post("/tenants/{tenant_id}/quota")
def set_quota(tenant_id: str, request: Request, operator: Operator, db: DbSession, form: CsrfForm):
    def change():  # type: ignore[no-untyped-def]
        body = QuotaUpdate(**_fields(form, QUOTA_FIELDS))
        return admin_tenants.set_quota(tenant_id, body, operator.principal, db)

    try:
        attempt(db, change)
    except Refused as exc:
        return render_tenant(
            request, operator, db, tenant_id, status_code=exc.status_code, error=exc.message
        )
    return redirect(f"/admin/tenants/{tenant_id}?done=quota")


@router.post("/tenants/{tenant_id}/keys")
def create_key(tenant_id: str, request: Request, operator: Operator, db: DbSession, form: CsrfForm):
    def create():  # type: ignore[no-untyped-def]
        body = KeyCreate(**_fields(form, ("name",)))
        return admin_tenants.create_key(
            tenant_id, body, operator.principal, db, _idempotency(request, db)
        )

    try:
        created = attempt(db, create)
    except Refused as exc:
        return render_tenant(
            request, operator, db, tenant_id, status_code=exc.status_code, error=exc.message
        )
    # Rendered, not redirected: the secret must not travel in a URL, and is shown this once.
    return render_tenant(request, operator, db, tenant_id, new_key=created)


@router.post("/keys/{key_id}/revoke")
def revoke_key(key_id: str, request: Request, operator: Operator, db: DbSession, form: CsrfForm):
    tenant_id = str(form.get("tenant_id") or "")
    try:
        key = attempt(db, lambda: admin.revoke(key_id, operator.principal, db))
    except Refused as exc:
        return render_tenant(
            request, operator, db, tenant_id, status_code=exc.status_code, error=exc.message
        )
    return redirect(f"/admin/tenants/{key.tenant_id or tenant_id}?done=revoked")


@router.post("/jobs/{job_id}/cancel")
def cancel_job(job_id: str, request: Request, operator: Operator, db: DbSession, form: CsrfForm):
    try:
        attempt(db, lambda: admin_dashboard.cancel(job_id, request, operator.principal, db))
    except Refused as exc:
        return render_job(
            request, operator, db, job_id, status_code=exc.status_code, error=exc.message
        )
    return redirect(f"/admin/jobs/{job_id}?done=cancelled")
