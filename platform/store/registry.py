"""The model registry: base catalog models (tenant NULL) and tenants' fine-tunes, with immutable
versions. Resolving a model id for a tenant is the one place that decides what it may use."""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

from sqlalchemy import func, or_, select
from sqlalchemy.orm import Session

from moeplane.errors import Conflict, NotFound
from moeplane.store.ids import new_id
from moeplane.store.models import Model, ModelVersion

__all__ = [
    "register_version",
    "resolve_model",
    "versions_query",
    "visible_models_query",
]


def visible_models_query(tenant_id: str | None):
    """Base catalog models plus this tenant's fine-tunes (operators: everything)."""
    stmt = select(Model)
    if tenant_id is not None:
        stmt = stmt.where(or_(Model.tenant_id.is_(None), Model.tenant_id == tenant_id))
    return stmt


def get_model(session: Session, tenant_id: str | None, model_id: str) -> Model:
    model = session.scalars(visible_models_query(tenant_id).where(Model.id == model_id)).first()
    if model is None:
        raise NotFound(f"The model '{model_id}' does not exist", param="model")
    return model


def versions_query(model_id: str):
    return select(ModelVersion).where(ModelVersion.model_id == model_id)


def resolve_model(
    session: Session, tenant_id: str | None, model_id: str, version: int | None = None
) -> tuple[Model, ModelVersion]:
    """A model this tenant may use and one of its versions (default: the latest)."""
    model = get_model(session, tenant_id, model_id)
    stmt = versions_query(model.id)
    if version is None:
        stmt = stmt.order_by(ModelVersion.version.desc())
    else:
        stmt = stmt.where(ModelVersion.version == version)
    found = session.scalars(stmt.limit(1)).first()
    if found is None:
        what = f"version {version}" if version is not None else "any version"
        raise NotFound(f"The model '{model_id}' has no {what}", param="version")
    return model, found


def ensure_model(
    session: Session,
    *,
    model_id: str,
    tenant_id: str | None,
    family: str,
    base_model_id: str | None,
    description: str = "",
) -> Model:
    model = session.get(Model, model_id)
    if model is None:
        model = Model(
            id=model_id,
            tenant_id=tenant_id,
            family=family,
            base_model_id=base_model_id,
            description=description,
        )
        session.add(model)
        session.flush()
    elif model.tenant_id != tenant_id:
        raise Conflict(f"The model id '{model_id}' is taken", param="model")
    return model


def register_version(
    session: Session,
    model: Model,
    *,
    artifact_uri: str,
    sha256: str,
    config: dict[str, Any],
    parent_version_id: str | None = None,
    job_id: str | None = None,
    dataset_sha256: str | None = None,
    hyperparameters: dict[str, Any] | None = None,
    seed: int | None = None,
) -> ModelVersion:
    """Append version N+1 (row-locked on PostgreSQL, serialised on SQLite)."""
    session.scalars(select(Model).where(Model.id == model.id).with_for_update()).first()
    latest = session.scalar(
        select(func.max(ModelVersion.version)).where(ModelVersion.model_id == model.id)
    )
    version = ModelVersion(
        id=new_id("mv"),
        tenant_id=model.tenant_id,
        model_id=model.id,
        version=(latest or 0) + 1,
        artifact_uri=artifact_uri,
        sha256=sha256,
        config=config,
        parent_version_id=parent_version_id,
        job_id=job_id,
        dataset_sha256=dataset_sha256,
        hyperparameters=hyperparameters or {},
        seed=seed,
    )
    session.add(version)
    session.flush()
    return version


def summary_dict(summary: Any) -> dict[str, Any]:
    """A modeling ConfigSummary as the JSON stored with a version."""
    return asdict(summary)
