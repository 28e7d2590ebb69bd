"""The dashboard's pages (GET). Each reads through the store's query helpers and renders a
template; charts are drawn in the browser from the admin JSON (``/admin/api/...``)."""

from __future__ import annotations

import csv
import io
from typing import Any

from fastapi import APIRouter, Query, Request
from fastapi.responses import HTMLResponse, Response
from sqlalchemy import select
from sqlalchemy.orm import Session

from moeplane.api.dashboard import data
from moeplane.api.dashboard.auth import DashboardSession, Operator
from moeplane.api.dashboard.render import page
from moeplane.api.deps import DbSession
from moeplane.api.usage_views import usage_list
from moeplane.errors import DomainError, NotFound
from moeplane.store import tenants
from moeplane.store.audit import audit_query
from moeplane.store.jobs import ACTIVE
from moeplane.store.models import (
    ApiKey,
    AuditEntry,
    Deployment,
    FineTuneJob,
    JobCheckpoint,
    JobEvent,
    Model,
    ModelVersion,
    Tenant,
)
from moeplane.store.scoping import get_owned, scoped
from moeplane.store.scoping import page as keyset_page
from moeplane.store.usage import month_totals

__all__ = ["render_job", "render_tenant", "render_tenants", "router"]

router = APIRouter(prefix="/admin", include_in_schema=False)

PAGE_SIZE = 50
JOB_STATUSES = ("validating_files", "queued", "running", "succeeded", "failed", "cancelled")
DEPLOYMENT_STATUSES = ("pending", "deploying", "running", "failed", "deleting")
Id = Query(default=None, max_length=40)


def _names(db: Session, ids) -> dict[str, str]:  # type: ignore[no-untyped-def]
    wanted = {i for i in ids if i}
    if not wanted:
        return {}
    rows = db.execute(select(Tenant.id, Tenant.name).where(Tenant.id.in_(wanted)))
    return dict(rows.all())


def _tenant_choices(db: Session) -> list[Tenant]:
    return list(db.scalars(tenants.list_tenants(db).order_by(Tenant.name)))


def not_found(request: Request, operator: DashboardSession, error: DomainError) -> HTMLResponse:
    return page(request, "error.html", operator, status_code=404, message=error.message)


@router.get("")
def overview(request: Request, operator: Operator, db: DbSession):
    active = scoped(FineTuneJob, None).where(FineTuneJob.status.in_(("queued", "running")))
    jobs = list(db.scalars(active.order_by(FineTuneJob.id.desc()).limit(10)))
    deployments = list(db.scalars(scoped(Deployment, None).order_by(Deployment.id.desc())))
    return page(
        request,
        "overview.html",
        operator,
        section="overview",
        counts=data.overview(db),
        jobs=jobs,
        deployments=deployments[:10],
        names=_names(db, [j.tenant_id for j in jobs] + [d.tenant_id for d in deployments]),
    )


def render_tenants(
    request: Request,
    operator: DashboardSession,
    db: Session,
    *,
    q: str | None = None,
    status: str | None = None,
    after: str | None = None,
    status_code: int = 200,
    **extra: Any,
) -> HTMLResponse:
    stmt = tenants.list_tenants(db, query=q, status=status)
    rows, has_more = keyset_page(db, stmt, Tenant.id, limit=PAGE_SIZE, after=after)
    return page(
        request,
        "tenants.html",
        operator,
        status_code=status_code,
        section="tenants",
        tenants=rows,
        has_more=has_more,
        q=q or "",
        status=status or "",
        **extra,
    )


@router.get("/tenants")
def tenant_list(
    request: Request,
    operator: Operator,
    db: DbSession,
    q: str | None = Query(default=None, max_length=100),
    status: str | None = Query(default=None, pattern="^(active|suspended)?$"),
    after: str | None = Id,
):
    return render_tenants(request, operator, db, q=q, status=status or None, after=after)


def render_tenant(
    request: Request,
    operator: DashboardSession,
    db: Session,
    tenant_id: str,
    *,
    status_code: int = 200,
    **extra: Any,
) -> HTMLResponse:
    try:
        tenant = tenants.get_tenant(db, tenant_id)
    except NotFound as exc:
        return not_found(request, operator, exc)
    keys = db.scalars(scoped(ApiKey, tenant.id).order_by(ApiKey.id.desc())).all()
    jobs = db.scalars(scoped(FineTuneJob, tenant.id).order_by(FineTuneJob.id.desc()).limit(10))
    deps = db.scalars(scoped(Deployment, tenant.id).order_by(Deployment.id.desc()).limit(10))
    return page(
        request,
        "tenant.html",
        operator,
        status_code=status_code,
        section="tenants",
        tenant=tenant,
        quota=tenants.get_quota(db, tenant.id),
        quota_fields=tenants.QUOTA_FIELDS,
        keys=keys,
        jobs=list(jobs),
        deployments=list(deps),
        month=month_totals(db, tenant.id),
        **extra,
    )


@router.get("/tenants/{tenant_id}")
def tenant_detail(tenant_id: str, request: Request, operator: Operator, db: DbSession):
    return render_tenant(request, operator, db, tenant_id)


@router.get("/jobs")
def job_list(
    request: Request,
    operator: Operator,
    db: DbSession,
    tenant_id: str | None = Id,
    status: str | None = Query(default=None, max_length=20),
    after: str | None = Id,
):
    stmt = scoped(FineTuneJob, tenant_id or None)
    if status:
        stmt = stmt.where(FineTuneJob.status == status)
    rows, has_more = keyset_page(db, stmt, FineTuneJob.id, limit=PAGE_SIZE, after=after)
    return page(
        request,
        "jobs.html",
        operator,
        section="jobs",
        jobs=rows,
        has_more=has_more,
        names=_names(db, [j.tenant_id for j in rows]),
        tenant_choices=_tenant_choices(db),
        statuses=JOB_STATUSES,
        tenant_id=tenant_id or "",
        status=status or "",
    )


def render_job(
    request: Request,
    operator: DashboardSession,
    db: Session,
    job_id: str,
    *,
    status_code: int = 200,
    **extra: Any,
) -> HTMLResponse:
    try:
        job = get_owned(db, FineTuneJob, None, job_id, label="fine-tuning job")
    except NotFound as exc:
        return not_found(request, operator, exc)
    events = db.scalars(
        select(JobEvent)
        .where(JobEvent.job_id == job.id)
        .order_by(JobEvent.created_at.desc(), JobEvent.id.desc())
        .limit(100)
    ).all()
    checkpoints = db.scalars(
        select(JobCheckpoint).where(JobCheckpoint.job_id == job.id).order_by(JobCheckpoint.step)
    ).all()
    base = db.get(ModelVersion, job.base_version_id)
    result = db.get(ModelVersion, job.result_version_id) if job.result_version_id else None
    return page(
        request,
        "job.html",
        operator,
        status_code=status_code,
        section="jobs",
        job=job,
        tenant_name=_names(db, [job.tenant_id]).get(job.tenant_id, job.tenant_id),
        events=events,
        checkpoints=checkpoints,
        base=base,
        result=result,
        active=job.status in ACTIVE,
        **extra,
    )


@router.get("/jobs/{job_id}")
def job_detail(job_id: str, request: Request, operator: Operator, db: DbSession):
    return render_job(request, operator, db, job_id)


@router.get("/models")
def model_list(request: Request, operator: Operator, db: DbSession):
    models = db.scalars(select(Model).order_by(Model.tenant_id.is_not(None), Model.id)).all()
    versions = db.scalars(select(ModelVersion).order_by(ModelVersion.version)).all()
    by_model: dict[str, list[ModelVersion]] = {}
    for version in versions:
        by_model.setdefault(version.model_id, []).append(version)
    return page(
        request,
        "models.html",
        operator,
        section="models",
        base_models=[m for m in models if m.tenant_id is None],
        tuned_models=[m for m in models if m.tenant_id is not None],
        versions=by_model,
        by_id={v.id: v for v in versions},
        names=_names(db, [m.tenant_id for m in models]),
    )


@router.get("/deployments")
def deployment_list(
    request: Request,
    operator: Operator,
    db: DbSession,
    tenant_id: str | None = Id,
    status: str | None = Query(default=None, max_length=16),
    after: str | None = Id,
):
    stmt = scoped(Deployment, tenant_id or None)
    if status:
        stmt = stmt.where(Deployment.status == status)
    rows, has_more = keyset_page(db, stmt, Deployment.id, limit=PAGE_SIZE, after=after)
    return page(
        request,
        "deployments.html",
        operator,
        section="deployments",
        deployments=rows,
        has_more=has_more,
        traffic=data.traffic_summaries(db, [d.id for d in rows]),
        names=_names(db, [d.tenant_id for d in rows]),
        tenant_choices=_tenant_choices(db),
        statuses=DEPLOYMENT_STATUSES,
        tenant_id=tenant_id or "",
        status=status or "",
    )


@router.get("/deployments/{deployment_id}")
def deployment_detail(deployment_id: str, request: Request, operator: Operator, db: DbSession):
    try:
        deployment = get_owned(db, Deployment, None, deployment_id, label="deployment")
    except NotFound as exc:
        return not_found(request, operator, exc)
    served = deployment.observed_version_id or deployment.model_version_id
    return page(
        request,
        "deployment.html",
        operator,
        section="deployments",
        d=deployment,
        tenant_name=_names(db, [deployment.tenant_id]).get(deployment.tenant_id, "?"),
        served=db.get(ModelVersion, served),
        summary=data.traffic_summaries(db, [deployment.id])[deployment.id],
    )


def usage_filters(
    tenant_id: str | None, kind: str | None, start: str | None, end: str | None
) -> dict[str, Any]:
    return {
        "tenant_id": tenant_id or None,
        "kind": kind or None,
        "start": data.parse_day(start),
        "end": data.parse_day(end),
    }


@router.get("/usage")
def usage(
    request: Request,
    operator: Operator,
    db: DbSession,
    tenant_id: str | None = Id,
    kind: str | None = Query(default=None, max_length=40),
    start: str | None = Query(default=None, max_length=10),
    end: str | None = Query(default=None, max_length=10),
):
    filters = usage_filters(tenant_id, kind, start, end)
    error = None
    try:
        listing = usage_list(db, **filters)
    except DomainError as exc:
        listing, error = None, exc.message
    rows = listing.data if listing else []
    return page(
        request,
        "usage.html",
        operator,
        status_code=422 if error else 200,
        section="usage",
        rows=rows,
        totals=listing.totals if listing else {},
        names=_names(db, [r.tenant_id for r in rows]),
        tenant_choices=_tenant_choices(db),
        error=error,
        query=request.url.query,
        tenant_id=tenant_id or "",
        kind=kind or "",
        start=start or "",
        end=end or "",
    )


@router.get("/audit")
def audit_log(
    request: Request,
    operator: Operator,
    db: DbSession,
    tenant_id: str | None = Id,
    action: str | None = Query(default=None, max_length=64),
    after: str | None = Id,
):
    stmt = audit_query(tenant_id=tenant_id or None, action=action or None)
    rows, has_more = keyset_page(db, stmt, AuditEntry.id, limit=PAGE_SIZE, after=after)
    return page(
        request,
        "audit.html",
        operator,
        section="audit",
        entries=rows,
        has_more=has_more,
        names=_names(db, [e.tenant_id for e in rows]),
        tenant_choices=_tenant_choices(db),
        tenant_id=tenant_id or "",
        action=action or "",
    )


def _cell(value: object) -> object:
    """Spreadsheets run cells that start with = + - @ as formulas: quote those."""
    if isinstance(value, str) and value[:1] in ("=", "+", "-", "@", "\t", "\r"):
        return "'" + value
    return value


@router.get("/usage.csv")
def usage_csv(
    operator: Operator,
    db: DbSession,
    tenant_id: str | None = Id,
    kind: str | None = Query(default=None, max_length=40),
    start: str | None = Query(default=None, max_length=10),
    end: str | None = Query(default=None, max_length=10),
):
    listing = usage_list(db, **usage_filters(tenant_id, kind, start, end))
    names = _names(db, [r.tenant_id for r in listing.data])
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(["period", "tenant_id", "tenant", "kind", "amount"])
    for row in listing.data:
        cells = (row.period, row.tenant_id, names.get(row.tenant_id, ""), row.kind, row.amount)
        writer.writerow([_cell(c) for c in cells])
    return Response(
        out.getvalue(),
        media_type="text/csv; charset=utf-8",
        headers={
            "Content-Disposition": 'attachment; filename="moeplane-usage.csv"',
            "Cache-Control": "no-store",
        },
    )
