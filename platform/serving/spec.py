"""What a deployment asks for, validated, and the Serve application that realises it.

Pure: no database, no Ray. `ServingSpec` is the record the reconciler hands to Serve as the
application's ``args`` (JSON), so what Serve runs can be read back and compared with what the
database wants (`moeplane.serving.reconcile`).
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, field
from typing import Any

from moeplane.errors import InvalidRequest, QuotaExceeded
from moeplane.modeling.experts import expert_slice

__all__ = [
    "APP_BUILDERS",
    "AUTOSCALING_POLICIES",
    "PACKED_WEIGHTS",
    "Autoscaling",
    "Resources",
    "ServingSpec",
    "app_name_for",
    "check_replica_quota",
    "check_shards",
    "validate_name",
]

AUTOSCALING_POLICIES = ("ongoing_requests", "tokens")
PACKED_WEIGHTS = ("auto", "on", "off")
# deployment kind -> the Serve application builder (import path) the reconciler deploys
APP_BUILDERS = {
    "llm": "moeplane.serving.app:build",
    "embeddings": "moeplane.serving.embeddings:build",
    "recommender": "moeplane.serving.recommend:build",
}
_NAME = re.compile(r"^[a-z0-9][a-z0-9-]{0,39}$")


@dataclass(frozen=True)
class Autoscaling:
    """Serve's autoscaling knobs plus the LLM-native token policy (see serving/autoscale.py)."""

    min_replicas: int = 1
    max_replicas: int = 1
    target_ongoing_requests: float = 4.0
    upscale_delay_s: float = 10.0
    downscale_delay_s: float = 60.0
    policy: str = "ongoing_requests"
    # queued + in-flight tokens one replica should carry (policy "tokens")
    target_tokens_per_replica: int = 4096

    def __post_init__(self) -> None:
        if self.min_replicas < 1:
            raise InvalidRequest("must be >= 1", param="autoscaling.min_replicas")
        if self.max_replicas < self.min_replicas:
            raise InvalidRequest(
                f"max_replicas ({self.max_replicas}) is below min_replicas ({self.min_replicas})",
                param="autoscaling.max_replicas",
            )
        if self.policy not in AUTOSCALING_POLICIES:
            raise InvalidRequest(
                f"policy must be one of {AUTOSCALING_POLICIES}", param="autoscaling.policy"
            )

    @classmethod
    def of(cls, data: dict[str, Any] | None) -> Autoscaling:
        return cls(**(data or {}))


@dataclass(frozen=True)
class Resources:
    """What each expert shard (the whole model when expert_shards = 1) reserves."""

    cpus_per_shard: float = 0.5
    gpus_per_shard: float = 0.0
    # Packed copies of the expert weights for the CPU kernel (moeplane.kernels.cpu_native
    # .packed_copies): as much memory again for them, for faster prefill (1.1-1.3x at 64-512
    # tokens on a Xeon, 1.02-1.14x on Zen 3). "auto": the kernel build's choice (on).
    packed_weights: str = "auto"

    def __post_init__(self) -> None:
        if self.packed_weights not in PACKED_WEIGHTS:
            raise InvalidRequest(
                f"packed_weights must be one of {PACKED_WEIGHTS}", param="resources.packed_weights"
            )

    @classmethod
    def of(cls, data: dict[str, Any] | None) -> Resources:
        return cls(**(data or {}))


@dataclass(frozen=True)
class ServingSpec:
    """Everything a replica needs to start; Serve keeps it as the application's args."""

    deployment_id: str
    tenant_id: str
    generation: int
    model: str
    model_version_id: str
    artifact_uri: str
    family: str
    expert_shards: int = 1
    max_batch_size: int = 8
    autoscaling: Autoscaling = field(default_factory=Autoscaling)
    resources: Resources = field(default_factory=Resources)
    # where the replica meters usage and routing statistics (metering at the engine)
    database_url: str = ""
    # llm | embeddings | recommender: which Serve application builder runs it (APP_BUILDERS)
    kind: str = "llm"
    options: dict[str, Any] = field(default_factory=dict)  # kind-specific replica arguments

    def to_args(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_args(cls, args: dict[str, Any]) -> ServingSpec:
        data = dict(args)
        data["autoscaling"] = Autoscaling.of(data.get("autoscaling"))
        data["resources"] = Resources.of(data.get("resources"))
        return cls(**data)

    @property
    def replica_bundles(self) -> list[dict[str, float]]:
        """Bundle 0 is the replica (engine loop, tokenizer); bundles 1..S its shard actors."""
        shard = {"CPU": self.resources.cpus_per_shard}
        if self.resources.gpus_per_shard:
            shard["GPU"] = self.resources.gpus_per_shard
        if self.expert_shards == 1:
            return [shard]  # the replica holds the model itself
        return [{"CPU": 0.1}] + [dict(shard) for _ in range(self.expert_shards)]


def validate_name(name: str) -> str:
    if not _NAME.match(name):
        raise InvalidRequest(
            "name must be 1-40 characters of a-z, 0-9 and '-', starting with a letter or digit",
            param="name",
        )
    return name


def app_name_for(tenant_name: str, name: str) -> str:
    """The Serve application ``mp-<tenant>-<name>``."""
    tenant = re.sub(r"[^a-z0-9-]+", "-", tenant_name.lower()).strip("-")[:40] or "tenant"
    return f"mp-{tenant}-{name}"


def check_shards(family: str, num_experts: int, expert_shards: int) -> None:
    """Dense models run unsharded; MoE shards must split the experts evenly."""
    if expert_shards < 1:
        raise InvalidRequest("expert_shards must be >= 1", param="expert_shards")
    if family != "qwen3_moe" or not num_experts:
        if expert_shards != 1:
            raise InvalidRequest(
                "dense models have no experts to shard: use expert_shards = 1",
                param="expert_shards",
            )
        return
    expert_slice(num_experts, expert_shards, 0)  # raises naming expert_shards


def check_replica_quota(
    *,
    deployments: int,
    max_deployments: int,
    replicas_in_use: int,
    new_max_replicas: int,
    max_replicas: int,
    creating: bool,
) -> None:
    """Quota arithmetic, under the tenant's quota lock: count and total replicas."""
    if creating and deployments >= max_deployments:
        raise QuotaExceeded(
            f"This tenant already has {deployments} deployments "
            f"(max_deployments = {max_deployments})",
            code="max_deployments",
        )
    if replicas_in_use + new_max_replicas > max_replicas:
        raise QuotaExceeded(
            f"autoscaling.max_replicas {new_max_replicas} would bring this tenant's replicas to "
            f"{replicas_in_use + new_max_replicas}, above its quota max_replicas = {max_replicas}",
            code="max_replicas",
            param="autoscaling.max_replicas",
        )
