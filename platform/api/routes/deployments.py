"""Deployments: create, inspect, change (a new version is a rolling update), delete; routing
statistics. The reconciler does the work; these routes only write the desired state."""

from __future__ import annotations

from fastapi import APIRouter, Query

from moeplane.api.dashboard.data import deployment_experts
from moeplane.api.deps import DbSession, Idempotency, Pagination, TenantCtx
from moeplane.api.schemas.common import ListPage
from moeplane.api.schemas.deployments import (
    DeploymentCreate,
    DeploymentPublic,
    DeploymentUpdate,
    ExpertStatsPublic,
)
from moeplane.serving.deployments import (
    DeploymentChange,
    DeploymentRequest,
    create_deployment,
    delete_deployment,
    update_deployment,
)
from moeplane.store.audit import audit
from moeplane.store.models import Deployment
from moeplane.store.scoping import get_owned, page, scoped

router = APIRouter(prefix="/v1/deployments", tags=["deployments"])


def _deployment(db, tenant_id: str, deployment_id: str, *, for_update: bool = False) -> Deployment:
    return get_owned(
        db,
        Deployment,
        tenant_id,
        deployment_id,
        label="deployment",
        param="deployment_id",
        for_update=for_update,
    )


@router.post("", response_model=DeploymentPublic, status_code=201)
def create(body: DeploymentCreate, tenant: TenantCtx, db: DbSession, idem: Idempotency):
    def run() -> DeploymentPublic:
        request = DeploymentRequest(
            name=body.name,
            model=body.model,
            version=body.version,
            expert_shards=body.expert_shards,
            autoscaling=body.autoscaling.model_dump(),
            resources=body.resources.model_dump(),
            max_batch_size=body.max_batch_size,
        )
        deployment = create_deployment(db, tenant.tenant, request)
        audit(db, tenant.actor, "deployment.create", target_id=deployment.id)
        return DeploymentPublic.of(deployment)

    return idem.run(tenant.id, body, run, status_code=201)


@router.get("", response_model=ListPage[DeploymentPublic])
def list_deployments(
    tenant: TenantCtx,
    db: DbSession,
    pagination: Pagination,
    status: str | None = Query(default=None, max_length=16),
):
    stmt = scoped(Deployment, tenant.id)
    if status:
        stmt = stmt.where(Deployment.status == status)
    rows, has_more = page(db, stmt, Deployment.id, limit=pagination.limit, after=pagination.after)
    return ListPage(data=[DeploymentPublic.of(d) for d in rows], has_more=has_more)


@router.get("/{deployment_id}", response_model=DeploymentPublic)
def get_deployment(deployment_id: str, tenant: TenantCtx, db: DbSession):
    return DeploymentPublic.of(_deployment(db, tenant.id, deployment_id))


@router.patch("/{deployment_id}", response_model=DeploymentPublic)
def patch_deployment(deployment_id: str, body: DeploymentUpdate, tenant: TenantCtx, db: DbSession):
    deployment = _deployment(db, tenant.id, deployment_id, for_update=True)
    change = DeploymentChange(
        model=body.model,
        version=body.version,
        expert_shards=body.expert_shards,
        autoscaling=body.autoscaling.model_dump(exclude_none=True) if body.autoscaling else None,
        resources=body.resources.model_dump(exclude_none=True) if body.resources else None,
        max_batch_size=body.max_batch_size,
    )
    update_deployment(db, deployment, change)
    audit(db, tenant.actor, "deployment.update", target_id=deployment.id)
    return DeploymentPublic.of(deployment)


@router.delete("/{deployment_id}", response_model=DeploymentPublic)
def remove(deployment_id: str, tenant: TenantCtx, db: DbSession):
    deployment = _deployment(db, tenant.id, deployment_id, for_update=True)
    delete_deployment(db, deployment)
    audit(db, tenant.actor, "deployment.delete", target_id=deployment.id)
    return DeploymentPublic.of(deployment)


@router.get("/{deployment_id}/experts", response_model=ExpertStatsPublic)
def experts(deployment_id: str, tenant: TenantCtx, db: DbSession):
    """Routing statistics: tokens per layer and expert, summed over the serving replicas."""
    return deployment_experts(db, _deployment(db, tenant.id, deployment_id))
