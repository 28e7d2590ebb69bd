"""Models and their versions (OpenAI's model shape plus moeplane's lineage)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel

from moeplane.api.schemas.common import epoch
from moeplane.store.models import Model, ModelVersion

__all__ = ["ModelPublic", "ModelVersionPublic"]


class ModelPublic(BaseModel):
    id: str
    object: Literal["model"] = "model"
    created: int
    owned_by: str
    family: str
    base_model: str | None
    description: str

    @classmethod
    def of(cls, model: Model) -> ModelPublic:
        return cls(
            id=model.id,
            created=epoch(model.created_at),
            owned_by=model.tenant_id or "moeplane",
            family=model.family,
            base_model=model.base_model_id,
            description=model.description,
        )


class ModelVersionPublic(BaseModel):
    id: str
    object: Literal["model.version"] = "model.version"
    model: str
    version: int
    created_at: int
    artifact_uri: str
    sha256: str
    parent_version: str | None
    fine_tuning_job: str | None
    dataset_sha256: str | None
    hyperparameters: dict[str, Any]
    seed: int | None
    config: dict[str, Any]

    @classmethod
    def of(cls, v: ModelVersion) -> ModelVersionPublic:
        return cls(
            id=v.id,
            model=v.model_id,
            version=v.version,
            created_at=epoch(v.created_at),
            artifact_uri=v.artifact_uri,
            sha256=v.sha256,
            parent_version=v.parent_version_id,
            fine_tuning_job=v.job_id,
            dataset_sha256=v.dataset_sha256,
            hyperparameters=v.hyperparameters,
            seed=v.seed,
            config=v.config,
        )
