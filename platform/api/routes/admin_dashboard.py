"""Operator views behind the dashboard's charts: overview counts, Ray capacity, traffic per
minute, daily usage, loss curves, expert load; and cancelling any tenant's job.

The read-only views live on routers without authentication of their own (``views``,
``live_views``); this module mounts them under ``/v1/admin`` for admin keys, and the dashboard
mounts the very same routes under ``/admin/api`` for its session cookie, so the charts draw
exactly the JSON the API serves.
"""

from __future__ import annotations

from fastapi import APIRouter, Depends, Query, Request

from moeplane.api.dashboard import data
from moeplane.api.dashboard.cluster import ClusterPublic, cluster_status
from moeplane.api.deps import (
    Admin,
    DbSession,
    Principal,
    get_principal,
    in_short_transaction,
    require_admin,
)
from moeplane.api.schemas.deployments import ExpertStatsPublic
from moeplane.api.schemas.fine_tuning import JobPublic
from moeplane.jobs.service import cancel_job
from moeplane.store.audit import audit
from moeplane.store.models import Deployment, FineTuneJob
from moeplane.store.scoping import get_owned

__all__ = ["live_views", "router", "views"]

views = APIRouter()
live_views = APIRouter()  # no database session: Ray may be slow, and SQLite has one gate


def find_job(db, job_id: str) -> FineTuneJob:  # type: ignore[no-untyped-def]
    return get_owned(
        db, FineTuneJob, None, job_id, label="fine-tuning job", param="fine_tuning_job_id"
    )


def find_deployment(db, deployment_id: str) -> Deployment:  # type: ignore[no-untyped-def]
    return get_owned(db, Deployment, None, deployment_id, label="deployment", param="deployment_id")


@views.get("/overview", response_model=data.Overview)
def overview(db: DbSession):
    """Tenants, fine-tuning jobs and deployments counted by status."""
    return data.overview(db)


@views.get("/traffic", response_model=data.Traffic)
def traffic(
    db: DbSession,
    minutes: int = Query(default=60, ge=5, le=1440, description="Window, in minutes"),
    tenant_id: str | None = Query(default=None, max_length=40),
    deployment_id: str | None = Query(default=None, max_length=40),
):
    """Inference requests, tokens and latency per minute (from the metered requests)."""
    return data.traffic(db, minutes=minutes, tenant_id=tenant_id, deployment_id=deployment_id)


@views.get("/usage/daily", response_model=data.UsageDaily)
def usage_daily(
    db: DbSession,
    tenant_id: str | None = Query(default=None, max_length=40),
    days: int = Query(default=30, ge=1, le=366),
):
    """Daily usage per kind over the last ``days`` UTC days (all tenants unless one is named)."""
    return data.usage_daily(db, tenant_id=tenant_id, days=days)


@views.get("/fine_tuning/jobs/{fine_tuning_job_id}/metrics", response_model=data.JobMetrics)
def job_metrics(fine_tuning_job_id: str, db: DbSession):
    """Any tenant's job: its loss per step and its checkpoint steps."""
    return data.job_metrics(db, find_job(db, fine_tuning_job_id))


@views.get("/deployments/{deployment_id}/experts", response_model=ExpertStatsPublic)
def deployment_experts(deployment_id: str, db: DbSession):
    """Any tenant's deployment: tokens routed per layer and expert, summed over replicas."""
    return data.deployment_experts(db, find_deployment(db, deployment_id))


@live_views.get("/cluster", response_model=ClusterPublic)
async def cluster(request: Request):
    """Ray's capacity and use (CPU, GPU, memory); ``reachable: false`` when Ray is down."""
    return await cluster_status(request.app.state.settings)


async def _admin_briefly(request: Request) -> None:
    """``Admin``, checked in a short transaction of its own (no session held afterwards)."""

    def check(session) -> Principal:  # type: ignore[no-untyped-def]
        return require_admin(get_principal(request, session))

    await in_short_transaction(request, check)


router = APIRouter(prefix="/v1/admin", tags=["admin"])
router.include_router(views, dependencies=[Depends(require_admin)])
router.include_router(live_views, dependencies=[Depends(_admin_briefly)])


@router.post("/fine_tuning/jobs/{fine_tuning_job_id}/cancel", response_model=JobPublic)
def cancel(fine_tuning_job_id: str, request: Request, admin: Admin, db: DbSession):
    """Cancel any tenant's queued or running job (409 when it is already final)."""
    job = find_job(db, fine_tuning_job_id)
    cancel_job(db, job, stop_run=request.app.state.dispatch.stop_training)
    audit(db, admin.actor, "fine_tuning_job.cancel", tenant_id=job.tenant_id, target_id=job.id)
    return JobPublic.of(job)
