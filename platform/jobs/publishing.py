"""What happens when a fine-tune ends: register the model version with full lineage, record
usage, or record the failure. Called by the Ray driver; every write is a compare-and-set on the
job's status, so a job cancelled meanwhile stays cancelled and nothing is registered twice."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from sqlalchemy.orm import Session

from moeplane.store.jobs import add_checkpoint, add_event, transition
from moeplane.store.models import File, FineTuneJob, Model, ModelVersion, Tenant
from moeplane.store.registry import ensure_model, register_version
from moeplane.store.usage import record_usage

__all__ = ["JobReporter", "fail_job", "fine_tuned_model_id", "publish_result"]


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9-]+", "-", text.lower()).strip("-")[:40] or "tenant"


def fine_tuned_model_id(base_model: str, tenant_name: str, suffix: str | None, job_id: str) -> str:
    """``ft:<base>:<tenant>:<suffix>:<short id>`` (OpenAI's convention; suffix may be empty)."""
    return f"ft:{base_model}:{_slug(tenant_name)}:{suffix or ''}:{job_id[-8:]}"


@dataclass
class TrainingOutcome:
    artifact_uri: str
    sha256: str
    config: dict[str, Any]
    trained_tokens: int
    final_step: int


def publish_result(db: Session, job_id: str, outcome: TrainingOutcome) -> ModelVersion | None:
    """Register the fine-tuned version and mark the job succeeded (None if it is no longer
    running, e.g. cancelled while the last checkpoint was uploading)."""
    job = db.get(FineTuneJob, job_id)
    if job is None or job.status != "running":
        return None
    base = db.get(ModelVersion, job.base_version_id)
    base_model = db.get(Model, base.model_id)
    tenant = db.get(Tenant, job.tenant_id)
    dataset = db.get(File, job.training_file)
    model = ensure_model(
        db,
        model_id=fine_tuned_model_id(
            base_model.base_model_id or base_model.id, tenant.name, job.suffix, job.id
        ),
        tenant_id=job.tenant_id,
        family=base_model.family,
        base_model_id=base_model.base_model_id or base_model.id,
        description=f"fine-tuned from {base_model.id} v{base.version} by {job.id}",
    )
    version = register_version(
        db,
        model,
        artifact_uri=outcome.artifact_uri,
        sha256=outcome.sha256,
        config=outcome.config,
        parent_version_id=base.id,
        job_id=job.id,
        dataset_sha256=dataset.sha256 if dataset else None,
        hyperparameters={
            **job.hyperparameters,
            "method": job.method,
            "lora": job.lora,
            "num_workers": job.num_workers,
        },
        seed=job.seed,
    )
    if not transition(
        db,
        job.id,
        ("running",),
        "succeeded",
        fine_tuned_model=model.id,
        result_version_id=version.id,
        trained_tokens=outcome.trained_tokens,
    ):
        return None
    record_usage(db, job.tenant_id, "training_tokens", outcome.trained_tokens)
    record_usage(db, job.tenant_id, "compute", job.estimated_compute)
    add_event(
        db,
        job,
        f"Fine-tune succeeded after {outcome.final_step} steps: {model.id} "
        f"version {version.version}",
        data={"model": model.id, "version": version.id},
    )
    return version


def fail_job(db: Session, job_id: str, message: str, *, code: str = "training_failed") -> bool:
    job = db.get(FineTuneJob, job_id)
    if job is None:
        return False
    moved = transition(
        db,
        job_id,
        ("running",),
        "failed",
        error={"code": code, "message": message[:1000], "param": None},
    )
    if moved:
        add_event(db, job, message[:2000], level="error")
    return moved


class JobReporter:
    """Receives the training's metric reports and writes them as job events and checkpoints.

    Picklable (it holds a URL, not a connection), so it can travel to the rank-0 worker.
    """

    def __init__(self, database_url: str, job_id: str):
        self.database_url = database_url
        self.job_id = job_id
        self._db = None

    def __getstate__(self) -> dict[str, Any]:
        return {"database_url": self.database_url, "job_id": self.job_id, "_db": None}

    def __call__(self, metrics: dict[str, Any]) -> None:
        from moeplane.store.db import Database

        if self._db is None:
            self._db = Database(self.database_url)
        with self._db.session() as db:
            job = db.get(FineTuneJob, self.job_id)
            if job is None or job.status != "running":
                return
            checkpoint = metrics.get("checkpoint_uri") or metrics.get("checkpoint_path")
            data = {k: v for k, v in metrics.items() if isinstance(v, int | float | str | None)}
            if checkpoint:
                add_checkpoint(
                    db,
                    job,
                    step=int(metrics.get("step", 0)),
                    uri=str(checkpoint),
                    metrics={k: data[k] for k in ("step", "train_loss", "valid_loss") if k in data},
                )
                add_event(db, job, f"Checkpoint saved at step {metrics.get('step')}", data=data)
            else:
                loss = metrics.get("train_loss")
                message = f"Step {metrics.get('step')}" + (
                    f": train loss {loss:.4f}" if isinstance(loss, float) else ""
                )
                add_event(db, job, message, type_="metrics", data=data)
