"""Fine-tuning job rows: compare-and-set status transitions, events and checkpoints.

Every writer (API, scheduler, reconciler, the Ray driver) changes status only through
:func:`transition`, an ``UPDATE ... WHERE status IN (...)``: whoever loses a race changes nothing,
so a cancelled job is never revived by a late driver and a job is admitted once.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from moeplane.store.ids import new_id
from moeplane.store.models import FineTuneJob, JobCheckpoint, JobEvent, utcnow

__all__ = [
    "ACTIVE",
    "FINAL",
    "add_checkpoint",
    "add_event",
    "transition",
]

ACTIVE = ("validating_files", "queued", "running")
FINAL = ("succeeded", "failed", "cancelled")


def transition(
    session: Session, job_id: str, from_statuses: tuple[str, ...], to_status: str, **fields: Any
) -> bool:
    """Move a job to ``to_status`` only if it is in one of ``from_statuses``; True if it moved."""
    values = {"status": to_status, **fields}
    if to_status in FINAL and "finished_at" not in fields:
        values["finished_at"] = utcnow()
    result = session.execute(
        update(FineTuneJob)
        .where(FineTuneJob.id == job_id, FineTuneJob.status.in_(from_statuses))
        .values(**values)
        .execution_options(synchronize_session=False)
    )
    moved = result.rowcount == 1
    if moved:
        job = session.get(FineTuneJob, job_id)
        if job is not None:
            session.refresh(job)
    return moved


def add_event(
    session: Session,
    job: FineTuneJob,
    message: str,
    *,
    level: str = "info",
    type_: str = "message",
    data: dict[str, Any] | None = None,
) -> JobEvent:
    event = JobEvent(
        id=new_id("ftevent"),
        tenant_id=job.tenant_id,
        job_id=job.id,
        level=level,
        type=type_,
        message=message[:2000],
        data=data or {},
    )
    session.add(event)
    return event


def add_checkpoint(
    session: Session, job: FineTuneJob, *, step: int, uri: str, metrics: dict[str, Any]
) -> None:
    """Record a checkpoint once per (job, step): a resumed run re-reporting it changes nothing."""
    insert = postgresql.insert if session.bind.dialect.name == "postgresql" else sqlite.insert
    session.execute(
        insert(JobCheckpoint)
        .values(
            id=new_id("ftckpt"),
            tenant_id=job.tenant_id,
            job_id=job.id,
            step=step,
            uri=uri,
            metrics=metrics,
            created_at=utcnow(),
        )
        .on_conflict_do_nothing(index_elements=["job_id", "step"])
    )


def jobs_in(session: Session, statuses: tuple[str, ...]) -> list[FineTuneJob]:
    return list(session.scalars(select(FineTuneJob).where(FineTuneJob.status.in_(statuses))))
