"""Tenants, quotas and API keys as the API shows them."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, Field, StringConstraints

from moeplane.api.schemas.common import Input, epoch
from moeplane.store.models import ApiKey, Quota, Tenant

__all__ = [
    "KeyCreate",
    "KeyCreated",
    "KeyPublic",
    "QuotaPublic",
    "QuotaUpdate",
    "TenantCreate",
    "TenantPublic",
    "TenantUpdate",
]

TenantName = Annotated[
    str, StringConstraints(min_length=1, max_length=100, pattern=r"^[^\x00-\x1f\x7f]+$")
]
Weight = Annotated[float, Field(gt=0, le=1000, description="Fair-share weight for scheduling")]


class QuotaUpdate(Input):
    """Quota fields to set; fields you leave out keep their value."""

    max_concurrent_jobs: int | None = Field(default=None, ge=0, le=10_000)
    compute_budget: int | None = Field(
        default=None,
        ge=0,
        le=10**15,  # the column is a 64-bit integer
        description="Monthly fine-tuning compute, 1e9 token x active params",
    )
    max_deployments: int | None = Field(default=None, ge=0, le=10_000)
    max_replicas: int | None = Field(default=None, ge=0, le=100_000)
    rpm: int | None = Field(default=None, ge=1, le=10_000_000, description="Requests per minute")
    tpm: int | None = Field(default=None, ge=1, le=10**12, description="Tokens per minute")
    monthly_tokens: int | None = Field(default=None, ge=0, le=10**15)
    max_file_bytes: int | None = Field(default=None, ge=0, le=10**13)
    storage_bytes: int | None = Field(default=None, ge=0, le=10**15)


class QuotaPublic(BaseModel):
    object: Literal["quota"] = "quota"
    tenant_id: str
    max_concurrent_jobs: int
    compute_budget: int
    max_deployments: int
    max_replicas: int
    rpm: int
    tpm: int
    monthly_tokens: int
    max_file_bytes: int
    storage_bytes: int

    @classmethod
    def of(cls, quota: Quota) -> QuotaPublic:
        return cls.model_validate(quota, from_attributes=True)


class TenantCreate(Input):
    name: TenantName
    weight: Weight = 1.0
    quota: QuotaUpdate | None = None


class TenantUpdate(Input):
    name: TenantName | None = None
    status: Literal["active", "suspended"] | None = None
    weight: Weight | None = None


class TenantPublic(BaseModel):
    object: Literal["tenant"] = "tenant"
    id: str
    name: str
    status: str
    weight: float
    created_at: int

    @classmethod
    def of(cls, tenant: Tenant) -> TenantPublic:
        return cls(
            id=tenant.id,
            name=tenant.name,
            status=tenant.status,
            weight=tenant.weight,
            created_at=epoch(tenant.created_at),
        )


class KeyCreate(Input):
    name: str = Field(default="", max_length=100)
    expires_at: int | None = Field(
        default=None, ge=0, le=253_402_300_799, description="Unix time when the key stops working"
    )


class KeyPublic(BaseModel):
    object: Literal["api_key"] = "api_key"
    id: str
    name: str
    role: str
    tenant_id: str | None
    prefix: str = Field(description="The first characters of the key, to recognise it")
    created_at: int
    expires_at: int | None
    revoked_at: int | None

    @classmethod
    def of(cls, key: ApiKey) -> KeyPublic:
        return cls(
            id=key.id,
            name=key.name,
            role=key.role,
            tenant_id=key.tenant_id,
            prefix=key.prefix,
            created_at=epoch(key.created_at),
            expires_at=epoch(key.expires_at),
            revoked_at=epoch(key.revoked_at),
        )


class KeyCreated(KeyPublic):
    key: str | None = Field(
        description="The secret, shown exactly once; null when an idempotent retry replays it"
    )
