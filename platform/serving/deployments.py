"""Creating, changing and deleting deployments: the desired state the reconciler converges to.

Quotas (deployment count, total replicas) are checked under the tenant's quota row lock, so two
concurrent creations cannot together exceed them. Nothing here talks to Ray: the reconciler
(`moeplane.serving.reconcile`) applies what these functions write.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from moeplane.errors import Conflict, InvalidRequest
from moeplane.serving.spec import (
    Autoscaling,
    Resources,
    ServingSpec,
    app_name_for,
    check_replica_quota,
    check_shards,
    validate_name,
)
from moeplane.store.ids import new_id
from moeplane.store.models import Deployment, ModelVersion, Tenant
from moeplane.store.registry import resolve_model
from moeplane.store.tenants import lock_quota

__all__ = [
    "KIND_BY_FAMILY",
    "DeploymentChange",
    "DeploymentRequest",
    "create_deployment",
    "delete_deployment",
    "serving_spec",
    "update_deployment",
]


# model family -> deployment kind (which Serve application serves it)
KIND_BY_FAMILY = {"qwen3_moe": "llm", "qwen3": "llm", "sentence_embedding": "embeddings"}


@dataclass
class DeploymentRequest:
    name: str
    model: str
    version: int | None = None
    expert_shards: int = 1
    autoscaling: dict[str, Any] = field(default_factory=dict)
    resources: dict[str, Any] = field(default_factory=dict)
    max_batch_size: int = 8
    # "recommender" deployments serve an index, not a model version (the catalog code makes
    # them); every other kind follows from the model's family (KIND_BY_FAMILY)
    kind: str | None = None
    options: dict[str, Any] = field(default_factory=dict)


@dataclass
class DeploymentChange:
    """A PATCH: None = unchanged. A new model or version is a rolling update."""

    model: str | None = None
    version: int | None = None
    expert_shards: int | None = None
    autoscaling: dict[str, Any] | None = None
    resources: dict[str, Any] | None = None
    max_batch_size: int | None = None


def _check_quota(
    db: Session, tenant_id: str, new_max_replicas: int, *, exclude: str | None, creating: bool
) -> None:
    quota = lock_quota(db, tenant_id)
    rows = db.scalars(select(Deployment).where(Deployment.tenant_id == tenant_id)).all()
    others = [d for d in rows if d.id != exclude]
    check_replica_quota(
        deployments=len(others),
        max_deployments=quota.max_deployments,
        replicas_in_use=sum(int(d.autoscaling.get("max_replicas", 1)) for d in others),
        new_max_replicas=new_max_replicas,
        max_replicas=quota.max_replicas,
        creating=creating,
    )


def _version_spec(
    db: Session, tenant_id: str, model_id: str, version: int | None, expert_shards: int
) -> tuple[str, ModelVersion]:
    """The deployment kind and model version; raises naming the field when unservable."""
    model, found = resolve_model(db, tenant_id, model_id, version)
    check_shards(model.family, int(found.config.get("num_experts") or 0), expert_shards)
    kind = KIND_BY_FAMILY.get(model.family)
    if kind is None:
        raise InvalidRequest(f"models of family '{model.family}' cannot be served", param="model")
    return kind, found


def create_deployment(db: Session, tenant: Tenant, request: DeploymentRequest) -> Deployment:
    name = validate_name(request.name)
    autoscaling = Autoscaling.of(request.autoscaling)
    resources = Resources.of(request.resources)
    if request.kind == "recommender":
        kind, version = "recommender", None
    else:
        kind, version = _version_spec(
            db, tenant.id, request.model, request.version, request.expert_shards
        )
    _check_quota(db, tenant.id, autoscaling.max_replicas, exclude=None, creating=True)
    exists = db.scalar(
        select(func.count()).where(Deployment.tenant_id == tenant.id, Deployment.name == name)
    )
    if exists:
        raise Conflict(f"A deployment named '{name}' already exists", param="name")
    app_name = app_name_for(tenant.name, name)
    if db.scalar(select(func.count()).where(Deployment.app_name == app_name)):
        app_name = f"{app_name}-{tenant.id[-6:].lower()}"  # two tenant names with one slug
    deployment = Deployment(
        id=new_id("dep"),
        tenant_id=tenant.id,
        name=name,
        app_name=app_name,
        kind=kind,
        options=dict(request.options),
        model=request.model,
        model_version_id=version.id if version else None,
        pinned_version=request.version,
        expert_shards=request.expert_shards,
        autoscaling=_as_dict(autoscaling),
        resources=_as_dict(resources),
        max_batch_size=request.max_batch_size,
        status="pending",
        generation=1,
    )
    db.add(deployment)
    db.flush()
    return deployment


def update_deployment(db: Session, deployment: Deployment, change: DeploymentChange) -> Deployment:
    if deployment.status == "deleting":
        raise Conflict("The deployment is being deleted", param="deployment_id")
    model = change.model or deployment.model
    shards = change.expert_shards or deployment.expert_shards
    autoscaling = Autoscaling.of(deployment.autoscaling | (change.autoscaling or {}))
    resources = Resources.of(deployment.resources | (change.resources or {}))
    repin = change.model is not None or change.version is not None
    version_number = change.version if repin else deployment.pinned_version
    if deployment.kind == "recommender":
        version = None
    else:
        kind, version = _version_spec(db, deployment.tenant_id, model, version_number, shards)
        if kind != deployment.kind:
            raise InvalidRequest(
                f"'{model}' is served as {kind}, this deployment as {deployment.kind}",
                param="model",
            )
    _check_quota(
        db, deployment.tenant_id, autoscaling.max_replicas, exclude=deployment.id, creating=False
    )
    before = _spec_fields(deployment)
    deployment.model = model
    deployment.model_version_id = version.id if version else None
    if repin:
        deployment.pinned_version = change.version
    deployment.expert_shards = shards
    deployment.autoscaling = _as_dict(autoscaling)
    deployment.resources = _as_dict(resources)
    if change.max_batch_size is not None:
        deployment.max_batch_size = change.max_batch_size
    if _spec_fields(deployment) != before:
        deployment.generation += 1
        deployment.status = "deploying" if deployment.observed_generation else "pending"
        deployment.status_reason = None
    db.flush()
    return deployment


def delete_deployment(db: Session, deployment: Deployment) -> Deployment:
    """Mark for deletion; the reconciler deletes the Serve application, then the row."""
    if deployment.status != "deleting":
        deployment.status = "deleting"
        deployment.status_reason = None
        db.flush()
    return deployment


def serving_spec(
    deployment: Deployment, version: ModelVersion | None, database_url: str
) -> ServingSpec:
    """The Serve application args for a deployment's current generation (``version`` is None
    for kinds that serve no model version, e.g. a recommender's index)."""
    if version is not None and not version.artifact_uri.startswith("file://"):
        raise InvalidRequest(
            f"model version {version.id} lives at {version.artifact_uri}: serving reads "
            "checkpoints from file:// storage (a path every Ray node mounts)",
            param="model",
        )
    return ServingSpec(
        deployment_id=deployment.id,
        tenant_id=deployment.tenant_id,
        generation=deployment.generation,
        model=deployment.model,
        model_version_id=version.id if version else "",
        artifact_uri=version.artifact_uri if version else "",
        family=str(version.config.get("family", "")) if version else "",
        expert_shards=deployment.expert_shards,
        max_batch_size=deployment.max_batch_size,
        autoscaling=Autoscaling.of(deployment.autoscaling),
        resources=Resources.of(deployment.resources),
        database_url=database_url,
        kind=deployment.kind,
        options=dict(deployment.options),
    )


def _as_dict(value: Any) -> dict[str, Any]:
    return asdict(value)


def _spec_fields(d: Deployment) -> tuple:
    return (
        d.model_version_id,
        tuple(sorted(d.options.items())),
        d.expert_shards,
        tuple(sorted(d.autoscaling.items())),
        tuple(sorted(d.resources.items())),
        d.max_batch_size,
    )
