"""Creating and cancelling fine-tuning jobs: validation, cost estimate, atomic quota checks."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from moeplane.errors import Conflict, InvalidRequest, QuotaExceeded
from moeplane.files import get_file
from moeplane.store.db import on_commit
from moeplane.store.ids import new_id
from moeplane.store.jobs import ACTIVE, add_event, transition
from moeplane.store.models import FineTuneJob, utcnow
from moeplane.store.registry import resolve_model
from moeplane.store.tenants import lock_quota

__all__ = ["JobRequest", "cancel_job", "create_job", "estimate_compute"]

# Per-method defaults for a tiny model on CPU; the multiplier scales them like OpenAI's.
BASE_LEARNING_RATE = {"lora": 2e-3, "full": 5e-4}


@dataclass
class JobRequest:
    model: str
    training_file: str
    validation_file: str | None = None
    n_epochs: int = 1
    batch_size: int = 4
    learning_rate_multiplier: float = 1.0
    suffix: str | None = None
    seed: int = 0
    method: str = "lora"
    lora: dict[str, Any] = field(default_factory=dict)
    num_workers: int = 1
    cpus_per_worker: float = 0.5
    priority: int = 0


def estimate_compute(tokens: int, params_active: int) -> int:
    """Compute units (1e9 tokens x active parameters), rounded up, at least 1."""
    return max(1, math.ceil(tokens * params_active / 1e9))


def _month_start():
    now = utcnow()
    return now.replace(day=1, hour=0, minute=0, second=0, microsecond=0)


def _check_quota(db: Session, tenant_id: str, compute: int) -> None:
    """Under the tenant's quota row lock: concurrent creations see each other's jobs."""
    quota = lock_quota(db, tenant_id)
    active = db.scalar(
        select(func.count()).where(
            FineTuneJob.tenant_id == tenant_id, FineTuneJob.status.in_(ACTIVE)
        )
    )
    if active >= quota.max_concurrent_jobs:
        raise QuotaExceeded(
            f"This tenant already has {active} active fine-tuning jobs "
            f"(max_concurrent_jobs = {quota.max_concurrent_jobs})",
            code="max_concurrent_jobs",
        )
    committed = db.scalar(
        select(func.coalesce(func.sum(FineTuneJob.estimated_compute), 0)).where(
            FineTuneJob.tenant_id == tenant_id,
            FineTuneJob.created_at >= _month_start(),
            # jobs cancelled or failed before they ran used nothing
            ~(FineTuneJob.status.in_(("cancelled", "failed")) & FineTuneJob.started_at.is_(None)),
        )
    )
    if committed + compute > quota.compute_budget:
        raise QuotaExceeded(
            f"This job needs ~{compute} compute units but only "
            f"{max(0, quota.compute_budget - committed)} of the monthly budget "
            f"{quota.compute_budget} remain",
            code="compute_budget",
        )


def _fine_tune_file(db: Session, tenant_id: str, file_id: str, param: str):
    record = get_file(db, tenant_id, file_id, param=param)
    if record.purpose != "fine-tune":
        raise InvalidRequest(
            f"{param} must be a file uploaded with purpose 'fine-tune' (got '{record.purpose}')",
            param=param,
        )
    return record


def create_job(db: Session, tenant_id: str, request: JobRequest) -> FineTuneJob:
    model, version = resolve_model(db, tenant_id, request.model)
    if model.family == "qwen3" and request.lora.get("target_experts"):
        raise InvalidRequest("dense models have no experts to target", param="lora")
    training = _fine_tune_file(db, tenant_id, request.training_file, "training_file")
    if request.validation_file is not None:
        _fine_tune_file(db, tenant_id, request.validation_file, "validation_file")
    tokens = int(training.stats.get("estimated_tokens", training.bytes // 4)) * request.n_epochs
    compute = estimate_compute(tokens, int(version.config.get("params_active", 0)))
    _check_quota(db, tenant_id, compute)
    multiplier = request.learning_rate_multiplier
    job = FineTuneJob(
        id=new_id("ftjob"),
        tenant_id=tenant_id,
        model=model.id,
        base_version_id=version.id,
        training_file=training.id,
        validation_file=request.validation_file,
        method=request.method,
        hyperparameters={
            "n_epochs": request.n_epochs,
            "batch_size": request.batch_size,
            "learning_rate_multiplier": multiplier,
            "learning_rate": BASE_LEARNING_RATE[request.method] * multiplier,
        },
        lora=request.lora if request.method == "lora" else {},
        suffix=request.suffix,
        seed=request.seed,
        num_workers=request.num_workers,
        cpus_per_worker=request.cpus_per_worker,
        priority=request.priority,
        estimated_tokens=tokens,
        estimated_compute=compute,
    )
    db.add(job)
    db.flush()
    add_event(db, job, f"Created fine-tuning job {job.id}")
    add_event(
        db,
        job,
        f"Estimated {tokens} training tokens, {compute} compute units",
        data={"estimated_tokens": tokens, "estimated_compute": compute},
    )
    return job


def cancel_job(db: Session, job: FineTuneJob, stop_run: Any = None) -> FineTuneJob:
    """Cancel a queued job at once; a running one is marked cancelled and its Ray job stopped
    after commit (the driver's own transitions then find it cancelled and change nothing)."""
    if job.status in ("succeeded", "failed", "cancelled"):
        raise Conflict(f"The job is already {job.status}", param="fine_tuning_job_id")
    was_running = job.status == "running"
    if not transition(db, job.id, ("validating_files", "queued", "running"), "cancelled"):
        db.refresh(job)
        raise Conflict(f"The job is already {job.status}", param="fine_tuning_job_id")
    add_event(db, job, "Job cancelled" + (" while running" if was_running else ""))
    if was_running and stop_run is not None:
        on_commit(db, lambda: stop_run(job.id))
    return job
