"""Fine-tuning jobs (OpenAI-compatible), their events and checkpoints."""

from __future__ import annotations

from fastapi import APIRouter, Query, Request

from moeplane.api.deps import DbSession, Idempotency, Pagination, TenantCtx
from moeplane.api.schemas.common import ListPage
from moeplane.api.schemas.fine_tuning import (
    CheckpointPublic,
    EventPublic,
    JobCreate,
    JobPublic,
)
from moeplane.jobs.service import JobRequest, cancel_job, create_job
from moeplane.store.audit import audit
from moeplane.store.models import FineTuneJob, JobCheckpoint, JobEvent
from moeplane.store.scoping import get_owned, page, scoped

router = APIRouter(prefix="/v1/fine_tuning/jobs", tags=["fine-tuning"])


def _request(body: JobCreate, cpus_per_worker: float) -> JobRequest:
    epochs, batch, lr = body.checked_hyperparameters()
    method = body.method if isinstance(body.method, str) else "lora"
    lora = (body.lora.model_dump() if body.lora else {}) if method == "lora" else {}
    return JobRequest(
        model=body.model,
        training_file=body.training_file,
        validation_file=body.validation_file,
        n_epochs=epochs,
        batch_size=batch,
        learning_rate_multiplier=lr,
        suffix=body.suffix,
        seed=body.seed if body.seed is not None else 42,
        method=method,
        lora=lora,
        num_workers=body.num_workers,
        cpus_per_worker=cpus_per_worker,
        priority=body.priority,
    )


@router.post("", response_model=JobPublic, status_code=201)
def create(body: JobCreate, request: Request, tenant: TenantCtx, db: DbSession, idem: Idempotency):
    per_worker = request.app.state.settings.training_cpus_per_worker

    def run() -> JobPublic:
        job = create_job(db, tenant.id, _request(body, per_worker))
        audit(db, tenant.actor, "fine_tuning_job.create", target_id=job.id)
        return JobPublic.of(job)

    return idem.run(tenant.id, body, run, status_code=201)


@router.get("", response_model=ListPage[JobPublic])
def list_jobs(
    tenant: TenantCtx,
    db: DbSession,
    pagination: Pagination,
    status: str | None = Query(default=None, max_length=20),
):
    stmt = scoped(FineTuneJob, tenant.id)
    if status:
        stmt = stmt.where(FineTuneJob.status == status)
    rows, has_more = page(db, stmt, FineTuneJob.id, limit=pagination.limit, after=pagination.after)
    return ListPage(data=[JobPublic.of(j) for j in rows], has_more=has_more)


def _job(db, tenant_id: str, job_id: str) -> FineTuneJob:
    return get_owned(
        db, FineTuneJob, tenant_id, job_id, label="fine-tuning job", param="fine_tuning_job_id"
    )


@router.get("/{fine_tuning_job_id}", response_model=JobPublic)
def get_job(fine_tuning_job_id: str, tenant: TenantCtx, db: DbSession):
    return JobPublic.of(_job(db, tenant.id, fine_tuning_job_id))


@router.post("/{fine_tuning_job_id}/cancel", response_model=JobPublic)
def cancel(fine_tuning_job_id: str, request: Request, tenant: TenantCtx, db: DbSession):
    job = _job(db, tenant.id, fine_tuning_job_id)
    cancel_job(db, job, stop_run=request.app.state.dispatch.stop_training)
    audit(db, tenant.actor, "fine_tuning_job.cancel", target_id=job.id)
    return JobPublic.of(job)


@router.get("/{fine_tuning_job_id}/events", response_model=ListPage[EventPublic])
def events(fine_tuning_job_id: str, tenant: TenantCtx, db: DbSession, pagination: Pagination):
    job = _job(db, tenant.id, fine_tuning_job_id)
    stmt = scoped(JobEvent, tenant.id).where(JobEvent.job_id == job.id)
    rows, has_more = page(db, stmt, JobEvent.id, limit=pagination.limit, after=pagination.after)
    return ListPage(data=[EventPublic.of(e) for e in rows], has_more=has_more)


@router.get("/{fine_tuning_job_id}/checkpoints", response_model=ListPage[CheckpointPublic])
def checkpoints(fine_tuning_job_id: str, tenant: TenantCtx, db: DbSession, pagination: Pagination):
    job = _job(db, tenant.id, fine_tuning_job_id)
    stmt = scoped(JobCheckpoint, tenant.id).where(JobCheckpoint.job_id == job.id)
    rows, has_more = page(
        db, stmt, JobCheckpoint.id, limit=pagination.limit, after=pagination.after
    )
    return ListPage(data=[CheckpointPublic.of(c) for c in rows], has_more=has_more)
