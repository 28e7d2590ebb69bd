"""One scheduler tick against the database: gather inputs, call the pure ``scheduler.plan``,
apply its decision. Two ticks racing (two beat processes, a redelivered task) admit each job
once: the tick holds a database-wide lock, and admission is a compare-and-set on the status."""

from __future__ import annotations

import logging
import math
from datetime import datetime, timedelta

from sqlalchemy import select, text
from sqlalchemy.orm import Session

from moeplane.config import Settings
from moeplane.jobs import scheduler
from moeplane.store.jobs import add_event, transition
from moeplane.store.models import File, FineTuneJob, Quota, Tenant, utcnow

__all__ = ["admit_jobs", "attained_service"]

log = logging.getLogger(__name__)

_LOCK_ID = 727_001  # pg_advisory_xact_lock key for scheduler ticks
_HALF_LIFE_S = 4 * 3600.0  # attained service decays: yesterday's usage counts little
_WINDOW = timedelta(hours=24)


def _lock(db: Session) -> None:
    if db.bind.dialect.name == "postgresql":
        db.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _LOCK_ID})
    # SQLite: this transaction already holds the database write lock (BEGIN IMMEDIATE)


def demand(job: FineTuneJob) -> scheduler.Resources:
    return scheduler.Resources(
        cpus=job.num_workers * job.cpus_per_worker, gpus=job.num_workers * job.gpus_per_worker
    )


def attained_service(jobs: list[FineTuneJob], now: datetime) -> dict[str, float]:
    """Decayed cpu-seconds per tenant over recent runs (the fair-share 'usage')."""
    service: dict[str, float] = {}
    for job in jobs:
        if job.started_at is None:
            continue
        end = job.finished_at or now
        seconds = max(0.0, (end - job.started_at).total_seconds())
        age = max(0.0, (now - end).total_seconds())
        decayed = seconds * demand(job).cost(8.0) * math.pow(0.5, age / _HALF_LIFE_S)
        service[job.tenant_id] = service.get(job.tenant_id, 0.0) + decayed
    return service


def _promote_validated(db: Session) -> None:
    """validating_files -> queued once the files still exist (uploads were validated)."""
    waiting = db.scalars(select(FineTuneJob).where(FineTuneJob.status == "validating_files"))
    for job in list(waiting):
        ids = [i for i in (job.training_file, job.validation_file) if i]
        found = set(
            db.scalars(select(File.id).where(File.id.in_(ids), File.tenant_id == job.tenant_id))
        )
        if found == set(ids):
            if transition(db, job.id, ("validating_files",), "queued", queued_at=utcnow()):
                add_event(db, job, "Files validated; job queued")
        elif transition(
            db,
            job.id,
            ("validating_files",),
            "failed",
            error={
                "code": "invalid_file",
                "message": "A training file was deleted",
                "param": "training_file",
            },
        ):
            add_event(db, job, "A training file was deleted before the job started", level="error")


def admit_jobs(
    db: Session, settings: Settings, cluster: scheduler.Resources | None = None
) -> list[str]:
    """Admit what the fair-share plan allows now; return the admitted job ids.

    `cluster` is the Ray cluster's live total (None: not known); settings cap it or stand in
    for it (:func:`scheduler.training_capacity`).
    """
    _lock(db)
    _promote_validated(db)
    now = utcnow()
    queued = list(db.scalars(select(FineTuneJob).where(FineTuneJob.status == "queued")))
    if not queued:
        return []
    running = list(db.scalars(select(FineTuneJob).where(FineTuneJob.status == "running")))
    recent = list(db.scalars(select(FineTuneJob).where(FineTuneJob.started_at >= now - _WINDOW)))
    service = attained_service(recent, now)
    tenant_ids = {j.tenant_id for j in queued}
    rows = db.execute(
        select(Tenant.id, Tenant.weight, Tenant.status, Quota.max_concurrent_jobs)
        .join(Quota, Quota.tenant_id == Tenant.id)
        .where(Tenant.id.in_(tenant_ids))
    )
    policies = {
        tid: scheduler.TenantPolicy(
            tenant_id=tid,
            max_concurrent_jobs=limit,
            weight=weight,
            attained_service=service.get(tid, 0.0),
        )
        for tid, weight, status, limit in rows
        if status == "active"  # suspended tenants' jobs wait
    }
    total = scheduler.training_capacity(settings.training_cpus, settings.training_gpus, cluster)
    if total is None:
        log.warning("Ray cluster capacity unknown and MOEPLANE_TRAINING_CPUS unset: admitting none")
        return []
    used = scheduler.Resources(cpus=0.0)
    for job in running:
        used = used.add(demand(job))
    result = scheduler.plan(
        [
            scheduler.QueuedJob(
                j.id,
                j.tenant_id,
                demand(j),
                (j.queued_at or j.created_at).timestamp(),
                j.priority,
            )
            for j in queued
        ],
        [scheduler.RunningJob(j.id, j.tenant_id, demand(j)) for j in running],
        total.sub(used),
        policies,
        now.timestamp(),
        total_capacity=total,
    )
    admitted = []
    by_id = {j.id: j for j in queued}
    for job_id in result.admit:
        if transition(db, job_id, ("queued",), "running", started_at=utcnow()):
            add_event(db, by_id[job_id], "Admitted by the scheduler; starting on Ray")
            admitted.append(job_id)
    for job_id, reason in result.skipped.items():
        if reason == scheduler.REASON_TOO_LARGE and transition(
            db,
            job_id,
            ("queued",),
            "failed",
            error={
                "code": "too_large",
                "message": f"The job needs more than the cluster has ({total.cpus:g} CPUs)",
                "param": "num_workers",
            },
        ):
            add_event(db, by_id[job_id], "Needs more than the whole cluster", level="error")
    return admitted
