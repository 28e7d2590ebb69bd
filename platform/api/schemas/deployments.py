"""Deployments: the desired spec a tenant writes and the status the reconciler observes."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, Field

from moeplane.api.schemas.common import Input, epoch
from moeplane.store.models import Deployment

__all__ = [
    "AutoscalingSpec",
    "DeploymentCreate",
    "DeploymentPublic",
    "DeploymentUpdate",
    "ExpertStatsPublic",
    "ResourcesSpec",
]


class AutoscalingSpec(Input):
    min_replicas: int = Field(default=1, ge=1, le=64)
    max_replicas: int = Field(default=1, ge=1, le=64)
    target_ongoing_requests: float = Field(default=4.0, gt=0, le=1000)
    upscale_delay_s: float = Field(default=10.0, ge=0, le=3600)
    downscale_delay_s: float = Field(default=60.0, ge=0, le=3600)
    policy: Literal["ongoing_requests", "tokens"] = Field(
        default="ongoing_requests",
        description="'tokens' scales on queued + in-flight tokens per replica",
    )
    target_tokens_per_replica: int = Field(default=4096, ge=1, le=10_000_000)


class AutoscalingPatch(Input):
    min_replicas: int | None = Field(default=None, ge=1, le=64)
    max_replicas: int | None = Field(default=None, ge=1, le=64)
    target_ongoing_requests: float | None = Field(default=None, gt=0, le=1000)
    upscale_delay_s: float | None = Field(default=None, ge=0, le=3600)
    downscale_delay_s: float | None = Field(default=None, ge=0, le=3600)
    policy: Literal["ongoing_requests", "tokens"] | None = None
    target_tokens_per_replica: int | None = Field(default=None, ge=1, le=10_000_000)


_PACKED_WEIGHTS = (
    "Packed copies of the expert weights for the CPU kernel: as much memory again for them, "
    "for 1.02-1.3x faster prefill at 64-512 tokens ('auto': the kernel build's choice, on)"
)


class ResourcesSpec(Input):
    cpus_per_shard: float = Field(default=0.5, gt=0, le=256)
    gpus_per_shard: float = Field(default=0.0, ge=0, le=16)
    packed_weights: Literal["auto", "on", "off"] = Field(
        default="auto", description=_PACKED_WEIGHTS
    )


class ResourcesPatch(Input):
    cpus_per_shard: float | None = Field(default=None, gt=0, le=256)
    gpus_per_shard: float | None = Field(default=None, ge=0, le=16)
    packed_weights: Literal["auto", "on", "off"] | None = Field(
        default=None, description=_PACKED_WEIGHTS
    )


class DeploymentCreate(Input):
    name: str = Field(min_length=1, max_length=40, pattern=r"^[a-z0-9][a-z0-9-]*$")
    model: str = Field(min_length=1, max_length=200, description="An id from GET /v1/models")
    version: int | None = Field(default=None, ge=1, le=2**31 - 1, description="Default: the latest")
    expert_shards: int = Field(default=1, ge=1, le=64, description="1 = unsharded")
    autoscaling: AutoscalingSpec = Field(default_factory=AutoscalingSpec)
    resources: ResourcesSpec = Field(default_factory=ResourcesSpec)
    max_batch_size: int = Field(default=8, ge=1, le=256)


class DeploymentUpdate(Input):
    model: str | None = Field(default=None, min_length=1, max_length=200)
    version: int | None = Field(default=None, ge=1, le=2**31 - 1)
    expert_shards: int | None = Field(default=None, ge=1, le=64)
    autoscaling: AutoscalingPatch | None = None
    resources: ResourcesPatch | None = None
    max_batch_size: int | None = Field(default=None, ge=1, le=256)


class Replicas(BaseModel):
    current: int
    min: int
    max: int


class DeploymentPublic(BaseModel):
    id: str
    object: Literal["deployment"] = "deployment"
    name: str
    kind: str = Field(description="llm | embeddings | recommender")
    model: str
    model_version_id: str | None
    expert_shards: int
    autoscaling: AutoscalingSpec
    resources: ResourcesSpec
    max_batch_size: int
    status: str
    status_reason: str | None
    replicas: Replicas
    generation: int
    observed_generation: int
    observed_version_id: str | None
    serve_application: str
    created_at: int

    @classmethod
    def of(cls, d: Deployment) -> DeploymentPublic:
        scaling = AutoscalingSpec(**d.autoscaling)
        return cls(
            id=d.id,
            name=d.name,
            kind=d.kind,
            model=d.model,
            model_version_id=d.model_version_id,
            expert_shards=d.expert_shards,
            autoscaling=scaling,
            resources=ResourcesSpec(**d.resources),
            max_batch_size=d.max_batch_size,
            status=d.status,
            status_reason=d.status_reason,
            replicas=Replicas(
                current=d.current_replicas, min=scaling.min_replicas, max=scaling.max_replicas
            ),
            generation=d.generation,
            observed_generation=d.observed_generation,
            observed_version_id=d.observed_version_id,
            serve_application=d.app_name,
            created_at=epoch(d.created_at) or 0,
        )


class ExpertStatsPublic(BaseModel):
    """Routing statistics summed over the deployment's replicas."""

    object: Literal["deployment.experts"] = "deployment.experts"
    deployment_id: str
    model_version_id: str | None
    replicas: int
    tokens: int = Field(description="Tokens that went through the MoE layers")
    # [layer][expert]: tokens routed to each expert (each token counts top_k times)
    counts: list[list[int]]
    # [layer][expert]: share of the layer's routed tokens
    load: list[list[float]]
    shards: list[dict[str, Any]] = Field(
        default_factory=list,
        description="What each expert shard of a replica holds: expert range, parameter counts",
    )
