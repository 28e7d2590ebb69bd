"""Fine-tuning jobs, events and checkpoints (OpenAI shapes, plus moeplane's extensions)."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, Field, StringConstraints

from moeplane.api.schemas.common import Input, epoch
from moeplane.store.models import FineTuneJob, JobCheckpoint, JobEvent

__all__ = [
    "CheckpointPublic",
    "EventPublic",
    "Hyperparameters",
    "JobCreate",
    "JobPublic",
    "LoraOptions",
]


class Hyperparameters(Input):
    n_epochs: int | Literal["auto"] = Field(default="auto", description="1-50; auto = 3")
    batch_size: int | Literal["auto"] = Field(default="auto", description="1-256; auto = 4")
    learning_rate_multiplier: float | Literal["auto"] = Field(
        default="auto", description="(0, 100]; auto = 1"
    )

    def resolved(self) -> tuple[int, int, float]:
        epochs = 3 if self.n_epochs == "auto" else self.n_epochs
        batch = 4 if self.batch_size == "auto" else self.batch_size
        lr = 1.0 if self.learning_rate_multiplier == "auto" else self.learning_rate_multiplier
        return epochs, batch, lr


class LoraOptions(Input):
    r: int = Field(default=8, ge=1, le=256)
    alpha: int = Field(default=16, ge=1, le=1024)
    dropout: float = Field(default=0.0, ge=0.0, lt=1.0)
    target_modules: list[str] | None = Field(
        default=None, max_length=32, description="Linear modules; default: attention projections"
    )
    target_experts: bool = Field(
        default=True, description="Also adapt the MoE experts' fused weights"
    )


class OpenAIMethod(Input):
    type: Literal["supervised"]
    supervised: dict[str, Any] | None = None


Suffix = Annotated[str, StringConstraints(min_length=1, max_length=40, pattern=r"^[A-Za-z0-9_-]+$")]


class JobCreate(Input):
    model: str = Field(min_length=1, max_length=200)
    training_file: str = Field(min_length=1, max_length=40)
    validation_file: str | None = Field(default=None, max_length=40)
    hyperparameters: Hyperparameters = Field(default_factory=Hyperparameters)
    suffix: Suffix | None = None
    seed: int | None = Field(default=None, ge=0, le=2**31 - 1)
    method: Literal["lora", "full"] | OpenAIMethod = Field(
        default="lora", description="moeplane: lora | full; OpenAI's supervised object = lora"
    )
    lora: LoraOptions | None = None
    num_workers: int = Field(default=1, ge=1, le=64, description="Data-parallel workers")
    priority: int = Field(default=0, ge=-10, le=10, description="Higher runs first in a tenant")
    metadata: dict[str, str] | None = Field(default=None, max_length=16)

    def checked_hyperparameters(self) -> tuple[int, int, float]:
        from moeplane.errors import InvalidRequest

        epochs, batch, lr = self.hyperparameters.resolved()
        for name, value, low, high in (
            ("n_epochs", epochs, 1, 50),
            ("batch_size", batch, 1, 256),
        ):
            if not low <= value <= high:
                raise InvalidRequest(
                    f"hyperparameters.{name} must be between {low} and {high} (got {value})",
                    param=f"hyperparameters.{name}",
                )
        if not 0 < lr <= 100:
            raise InvalidRequest(
                f"hyperparameters.learning_rate_multiplier must be in (0, 100] (got {lr})",
                param="hyperparameters.learning_rate_multiplier",
            )
        return epochs, batch, lr


class JobError(BaseModel):
    code: str
    message: str
    param: str | None = None


class JobPublic(BaseModel):
    id: str
    object: Literal["fine_tuning.job"] = "fine_tuning.job"
    created_at: int
    finished_at: int | None
    error: JobError | None
    fine_tuned_model: str | None
    model: str
    organization_id: str
    result_files: list[str] = []
    seed: int
    status: str
    trained_tokens: int | None
    training_file: str
    validation_file: str | None
    hyperparameters: dict[str, Any]
    method: dict[str, Any]
    user_provided_suffix: str | None
    estimated_finish: int | None = None
    integrations: list[Any] = []
    # moeplane extensions
    num_workers: int
    priority: int
    estimated_tokens: int
    estimated_compute: int
    result_version: str | None

    @classmethod
    def of(cls, job: FineTuneJob) -> JobPublic:
        hp = job.hyperparameters
        return cls(
            id=job.id,
            created_at=epoch(job.created_at),
            finished_at=epoch(job.finished_at),
            error=JobError(**job.error) if job.error else None,
            fine_tuned_model=job.fine_tuned_model,
            model=job.model,
            organization_id=job.tenant_id,
            seed=job.seed,
            status=job.status,
            trained_tokens=job.trained_tokens,
            training_file=job.training_file,
            validation_file=job.validation_file,
            hyperparameters={
                k: hp[k] for k in ("n_epochs", "batch_size", "learning_rate_multiplier") if k in hp
            },
            method={"type": job.method, **({"lora": job.lora} if job.method == "lora" else {})},
            user_provided_suffix=job.suffix,
            num_workers=job.num_workers,
            priority=job.priority,
            estimated_tokens=job.estimated_tokens,
            estimated_compute=job.estimated_compute,
            result_version=job.result_version_id,
        )


class EventPublic(BaseModel):
    id: str
    object: Literal["fine_tuning.job.event"] = "fine_tuning.job.event"
    created_at: int
    level: str
    message: str
    type: str
    data: dict[str, Any]

    @classmethod
    def of(cls, e: JobEvent) -> EventPublic:
        return cls(
            id=e.id,
            created_at=epoch(e.created_at),
            level=e.level,
            message=e.message,
            type=e.type,
            data=e.data,
        )


class CheckpointPublic(BaseModel):
    id: str
    object: Literal["fine_tuning.job.checkpoint"] = "fine_tuning.job.checkpoint"
    created_at: int
    fine_tuning_job_id: str
    step_number: int
    metrics: dict[str, Any]
    fine_tuned_model_checkpoint: str

    @classmethod
    def of(cls, c: JobCheckpoint) -> CheckpointPublic:
        return cls(
            id=c.id,
            created_at=epoch(c.created_at),
            fine_tuning_job_id=c.job_id,
            step_number=c.step,
            metrics=c.metrics,
            fine_tuned_model_checkpoint=c.uri,
        )
