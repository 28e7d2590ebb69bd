"""SQLAlchemy 2.0 ORM models. Every tenant-owned table carries ``tenant_id``.

Counters that behave like money (tokens, bytes, compute) are integers.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    String,
    Text,
    TypeDecorator,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

__all__ = [
    "ApiKey",
    "AuditEntry",
    "Base",
    "Catalog",
    "File",
    "FineTuneJob",
    "IdempotencyRecord",
    "InteractionEvent",
    "JobCheckpoint",
    "JobEvent",
    "Model",
    "ModelVersion",
    "Product",
    "Quota",
    "Tenant",
    "UsageCounter",
    "utcnow",
]


def utcnow() -> datetime:
    return datetime.now(UTC)


class UTCDateTime(TypeDecorator[datetime]):
    """Timezone-aware UTC datetimes on every backend (SQLite forgets the zone)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is not None and value.tzinfo is None:
            raise ValueError("naive datetime given to a UTC column")
        return value.astimezone(UTC) if value is not None else None

    def process_result_value(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is not None and value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value


class Base(DeclarativeBase):
    type_annotation_map = {datetime: UTCDateTime(), dict[str, Any]: JSON}


class Tenant(Base):
    __tablename__ = "tenants"

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    name: Mapped[str] = mapped_column(String(100), unique=True)
    # active | suspended | deleted (deleted tenants keep their history but vanish from the API)
    status: Mapped[str] = mapped_column(String(16), default="active")
    # Fair-share weight for the fine-tuning scheduler.
    weight: Mapped[float] = mapped_column(Float, default=1.0)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)
    deleted_at: Mapped[datetime | None] = mapped_column(default=None)


class ApiKey(Base):
    __tablename__ = "api_keys"

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    # NULL for platform operators (role admin).
    tenant_id: Mapped[str | None] = mapped_column(
        ForeignKey("tenants.id", ondelete="CASCADE"), index=True
    )
    role: Mapped[str] = mapped_column(String(16))  # admin | tenant
    name: Mapped[str] = mapped_column(String(100), default="")
    # First characters of the key, safe to show ("mp-3f9a2c"); the key itself is never stored.
    prefix: Mapped[str] = mapped_column(String(16))
    key_hash: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    expires_at: Mapped[datetime | None] = mapped_column(default=None)
    revoked_at: Mapped[datetime | None] = mapped_column(default=None)


class Quota(Base):
    __tablename__ = "quotas"

    tenant_id: Mapped[str] = mapped_column(
        ForeignKey("tenants.id", ondelete="CASCADE"), primary_key=True
    )
    max_concurrent_jobs: Mapped[int] = mapped_column(Integer, default=2)
    # Fine-tuning compute per calendar month, in units of 1e9 token x active-parameter products.
    compute_budget: Mapped[int] = mapped_column(BigInteger, default=1_000_000)
    max_deployments: Mapped[int] = mapped_column(Integer, default=2)
    max_replicas: Mapped[int] = mapped_column(Integer, default=4)
    rpm: Mapped[int] = mapped_column(Integer, default=600)
    tpm: Mapped[int] = mapped_column(Integer, default=100_000)
    monthly_tokens: Mapped[int] = mapped_column(BigInteger, default=10_000_000)
    max_file_bytes: Mapped[int] = mapped_column(BigInteger, default=100 * 1024 * 1024)
    storage_bytes: Mapped[int] = mapped_column(BigInteger, default=10 * 1024 * 1024 * 1024)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)


class UsageCounter(Base):
    """Per tenant, kind and UTC day; months are sums of days."""

    __tablename__ = "usage"
    __table_args__ = (UniqueConstraint("tenant_id", "kind", "period", name="uq_usage_bucket"),)

    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True)
    tenant_id: Mapped[str] = mapped_column(ForeignKey("tenants.id", ondelete="CASCADE"))
    # e.g. prompt_tokens, completion_tokens, training_tokens, compute, storage_bytes
    kind: Mapped[str] = mapped_column(String(40))
    period: Mapped[str] = mapped_column(String(10))  # YYYY-MM-DD (UTC)
    amount: Mapped[int] = mapped_column(BigInteger, default=0)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)


class AuditEntry(Base):
    __tablename__ = "audit_log"
    __table_args__ = (Index("ix_audit_tenant", "tenant_id", "id"),)

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    actor_key_id: Mapped[str | None] = mapped_column(String(40))
    actor_role: Mapped[str] = mapped_column(String(16))  # admin | tenant | system
    tenant_id: Mapped[str | None] = mapped_column(String(40))
    action: Mapped[str] = mapped_column(String(64))  # e.g. tenant.create, key.revoke
    target_id: Mapped[str | None] = mapped_column(String(40))
    detail: Mapped[dict[str, Any]] = mapped_column(default=dict)


class IdempotencyRecord(Base):
    """The response to a creating POST, replayed for the same Idempotency-Key and body."""

    __tablename__ = "idempotency_keys"
    __table_args__ = (UniqueConstraint("scope", "key", name="uq_idempotency_scope_key"),)

    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True)
    scope: Mapped[str] = mapped_column(String(40))  # tenant id, or "admin"
    key: Mapped[str] = mapped_column(String(255))
    fingerprint: Mapped[str] = mapped_column(String(64))  # sha256 of method, path and body
    status_code: Mapped[int] = mapped_column(Integer, default=0)
    response: Mapped[dict[str, Any] | None] = mapped_column(default=None)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class Model(Base):
    """A model id as tenants name it: a base model (tenant NULL) or a tenant's fine-tune."""

    __tablename__ = "models"

    id: Mapped[str] = mapped_column(String(200), primary_key=True)  # "qwen3-moe-tiny", "ft:..."
    tenant_id: Mapped[str | None] = mapped_column(
        ForeignKey("tenants.id", ondelete="CASCADE"), index=True
    )
    family: Mapped[str] = mapped_column(String(32))  # qwen3_moe | qwen3
    base_model_id: Mapped[str | None] = mapped_column(String(200))  # the catalog root
    description: Mapped[str] = mapped_column(String(500), default="")
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class ModelVersion(Base):
    """Immutable: a checkpoint in storage plus everything needed to reproduce it."""

    __tablename__ = "model_versions"
    __table_args__ = (UniqueConstraint("model_id", "version", name="uq_model_version"),)

    id: Mapped[str] = mapped_column(String(40), primary_key=True)  # mv-...
    tenant_id: Mapped[str | None] = mapped_column(
        ForeignKey("tenants.id", ondelete="CASCADE"), index=True
    )
    model_id: Mapped[str] = mapped_column(ForeignKey("models.id", ondelete="CASCADE"))
    version: Mapped[int] = mapped_column(Integer)
    artifact_uri: Mapped[str] = mapped_column(String(1000))
    sha256: Mapped[str] = mapped_column(String(64))
    parent_version_id: Mapped[str | None] = mapped_column(String(40))
    job_id: Mapped[str | None] = mapped_column(String(40))
    dataset_sha256: Mapped[str | None] = mapped_column(String(64))
    hyperparameters: Mapped[dict[str, Any]] = mapped_column(default=dict)
    seed: Mapped[int | None] = mapped_column(Integer)
    # summary: family, num_layers, hidden_size, num_experts, top_k, params_total, params_active
    config: Mapped[dict[str, Any]] = mapped_column(default=dict)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class File(Base):
    __tablename__ = "files"
    __table_args__ = (Index("ix_files_tenant", "tenant_id", "id"),)

    id: Mapped[str] = mapped_column(String(40), primary_key=True)  # file-...
    tenant_id: Mapped[str] = mapped_column(ForeignKey("tenants.id", ondelete="CASCADE"))
    filename: Mapped[str] = mapped_column(String(255))
    purpose: Mapped[str] = mapped_column(String(32))
    bytes: Mapped[int] = mapped_column(BigInteger)
    sha256: Mapped[str] = mapped_column(String(64))
    storage_key: Mapped[str] = mapped_column(String(500))
    status: Mapped[str] = mapped_column(String(16), default="processed")
    stats: Mapped[dict[str, Any]] = mapped_column(default=dict)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class FineTuneJob(Base):
    __tablename__ = "fine_tune_jobs"
    __table_args__ = (
        Index("ix_ftjobs_tenant", "tenant_id", "id"),
        Index("ix_ftjobs_status", "status"),
    )

    id: Mapped[str] = mapped_column(String(40), primary_key=True)  # ftjob-...
    tenant_id: Mapped[str] = mapped_column(ForeignKey("tenants.id", ondelete="CASCADE"))
    # validating_files | queued | running | succeeded | failed | cancelled
    status: Mapped[str] = mapped_column(String(20), default="validating_files")
    model: Mapped[str] = mapped_column(String(200))  # the requested model id
    base_version_id: Mapped[str] = mapped_column(String(40))
    training_file: Mapped[str] = mapped_column(String(40))
    validation_file: Mapped[str | None] = mapped_column(String(40))
    method: Mapped[str] = mapped_column(String(8), default="lora")  # lora | full
    hyperparameters: Mapped[dict[str, Any]] = mapped_column(default=dict)
    lora: Mapped[dict[str, Any]] = mapped_column(default=dict)
    suffix: Mapped[str | None] = mapped_column(String(64))
    seed: Mapped[int] = mapped_column(Integer, default=0)
    num_workers: Mapped[int] = mapped_column(Integer, default=1)
    cpus_per_worker: Mapped[float] = mapped_column(Float, default=0.5)
    gpus_per_worker: Mapped[float] = mapped_column(Float, default=0.0)
    priority: Mapped[int] = mapped_column(Integer, default=0)
    estimated_tokens: Mapped[int] = mapped_column(BigInteger, default=0)
    estimated_compute: Mapped[int] = mapped_column(BigInteger, default=0)
    trained_tokens: Mapped[int | None] = mapped_column(BigInteger)
    fine_tuned_model: Mapped[str | None] = mapped_column(String(200))
    result_version_id: Mapped[str | None] = mapped_column(String(40))
    error: Mapped[dict[str, Any] | None] = mapped_column(default=None)
    submission_id: Mapped[str | None] = mapped_column(String(64))  # the Ray job's id
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    queued_at: Mapped[datetime | None] = mapped_column(default=None)
    started_at: Mapped[datetime | None] = mapped_column(default=None)
    finished_at: Mapped[datetime | None] = mapped_column(default=None)


class JobEvent(Base):
    __tablename__ = "job_events"
    __table_args__ = (Index("ix_job_events_job", "job_id", "id"),)

    id: Mapped[str] = mapped_column(String(40), primary_key=True)  # ftevent-...
    tenant_id: Mapped[str] = mapped_column(ForeignKey("tenants.id", ondelete="CASCADE"))
    job_id: Mapped[str] = mapped_column(ForeignKey("fine_tune_jobs.id", ondelete="CASCADE"))
    level: Mapped[str] = mapped_column(String(8), default="info")  # info | warn | error
    type: Mapped[str] = mapped_column(String(8), default="message")  # message | metrics
    message: Mapped[str] = mapped_column(String(2000), default="")
    data: Mapped[dict[str, Any]] = mapped_column(default=dict)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class JobCheckpoint(Base):
    __tablename__ = "job_checkpoints"
    __table_args__ = (UniqueConstraint("job_id", "step", name="uq_job_checkpoint_step"),)

    id: Mapped[str] = mapped_column(String(40), primary_key=True)  # ftckpt-...
    tenant_id: Mapped[str] = mapped_column(ForeignKey("tenants.id", ondelete="CASCADE"))
    job_id: Mapped[str] = mapped_column(ForeignKey("fine_tune_jobs.id", ondelete="CASCADE"))
    step: Mapped[int] = mapped_column(Integer)
    metrics: Mapped[dict[str, Any]] = mapped_column(default=dict)
    uri: Mapped[str] = mapped_column(String(1000))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class Deployment(Base):
    """A tenant's serving endpoint: the desired spec, and what the reconciler last observed.

    ``generation`` rises with every spec change; the reconciler applies it to the Serve
    application ``app_name`` and, once Serve reports that generation running, copies it to
    ``observed_generation`` (Kubernetes' convention).
    """

    __tablename__ = "deployments"
    __table_args__ = (
        UniqueConstraint("tenant_id", "name", name="uq_deployment_name"),
        Index("ix_deployments_tenant", "tenant_id", "id"),
    )

    id: Mapped[str] = mapped_column(String(40), primary_key=True)  # dep-...
    tenant_id: Mapped[str] = mapped_column(ForeignKey("tenants.id", ondelete="CASCADE"))
    name: Mapped[str] = mapped_column(String(40))
    app_name: Mapped[str] = mapped_column(String(100), unique=True)  # mp-<tenant>-<name>
    # what the Serve application runs: llm (chat/completions) | embeddings | recommender
    kind: Mapped[str] = mapped_column(String(16), default="llm")
    # kind-specific arguments for the replicas (e.g. a recommender's catalog and index)
    options: Mapped[dict[str, Any]] = mapped_column(default=dict)
    model: Mapped[str] = mapped_column(String(200))  # the model id as the tenant named it
    # NULL for kinds that serve no registered model version (a recommender serves an index)
    model_version_id: Mapped[str | None] = mapped_column(String(40))
    # the version number the tenant pinned; NULL = follow the latest at creation/PATCH time
    pinned_version: Mapped[int | None] = mapped_column(Integer)
    expert_shards: Mapped[int] = mapped_column(Integer, default=1)
    # min_replicas, max_replicas, target_ongoing_requests, upscale_delay_s, downscale_delay_s,
    # policy ("ongoing_requests" | "tokens"), target_tokens_per_replica
    autoscaling: Mapped[dict[str, Any]] = mapped_column(default=dict)
    # cpus_per_shard, gpus_per_shard
    resources: Mapped[dict[str, Any]] = mapped_column(default=dict)
    max_batch_size: Mapped[int] = mapped_column(Integer, default=8)
    # pending | deploying | running | failed | deleting
    status: Mapped[str] = mapped_column(String(16), default="pending")
    status_reason: Mapped[str | None] = mapped_column(String(2000))
    generation: Mapped[int] = mapped_column(Integer, default=1)
    observed_generation: Mapped[int] = mapped_column(Integer, default=0)
    observed_version_id: Mapped[str | None] = mapped_column(String(40))
    current_replicas: Mapped[int] = mapped_column(Integer, default=0)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)


class InferenceRequest(Base):
    """One metered inference request, written by the replica that generated its tokens.

    Its id is the gateway's request id, so a replica's retry cannot bill twice.
    """

    __tablename__ = "inference_requests"
    __table_args__ = (
        Index("ix_inference_tenant", "tenant_id", "id"),
        Index("ix_inference_deployment", "deployment_id", "id"),
    )

    id: Mapped[str] = mapped_column(String(40), primary_key=True)  # req-...
    tenant_id: Mapped[str] = mapped_column(ForeignKey("tenants.id", ondelete="CASCADE"))
    deployment_id: Mapped[str] = mapped_column(String(40))
    model: Mapped[str] = mapped_column(String(200))
    prompt_tokens: Mapped[int] = mapped_column(Integer)
    completion_tokens: Mapped[int] = mapped_column(Integer)
    finish_reason: Mapped[str] = mapped_column(String(16))  # stop | length | abort | error
    latency_ms: Mapped[float] = mapped_column(Float)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class ExpertStats(Base):
    """A replica's cumulative routing counts: per MoE layer, tokens sent to each expert.

    Each replica overwrites its own row, so writes are idempotent; a deployment's statistics
    are the sum over its replicas' rows.
    """

    __tablename__ = "expert_stats"

    deployment_id: Mapped[str] = mapped_column(
        ForeignKey("deployments.id", ondelete="CASCADE"), primary_key=True
    )
    replica_id: Mapped[str] = mapped_column(String(200), primary_key=True)
    model_version_id: Mapped[str] = mapped_column(String(40))
    counts: Mapped[list[list[int]]] = mapped_column(JSON, default=list)  # [layer][expert]
    tokens: Mapped[int] = mapped_column(BigInteger, default=0)
    # what each expert shard of the replica holds (moeplane.modeling.ShardInfo as dicts)
    shards: Mapped[list[dict[str, Any]]] = mapped_column(JSON, default=list)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)


class Bot(Base):
    """A customer-support bot: a knowledge base (files), a chat deployment and a prompt."""

    __tablename__ = "bots"
    __table_args__ = (Index("ix_bots_tenant", "tenant_id", "id"),)

    id: Mapped[str] = mapped_column(String(40), primary_key=True)  # bot-...
    tenant_id: Mapped[str] = mapped_column(ForeignKey("tenants.id", ondelete="CASCADE"))
    name: Mapped[str] = mapped_column(String(100))
    model: Mapped[str] = mapped_column(String(200))  # one of the tenant's llm deployments
    system_prompt: Mapped[str] = mapped_column(String(8000), default="")
    # below this retrieval confidence the bot hands the conversation to a person
    escalation_threshold: Mapped[float] = mapped_column(Float, default=0.35)
    knowledge_file_ids: Mapped[list[str]] = mapped_column(JSON, default=list)
    # indexing | ready | failed
    status: Mapped[str] = mapped_column(String(16), default="indexing")
    status_reason: Mapped[str | None] = mapped_column(String(2000))
    passage_count: Mapped[int] = mapped_column(Integer, default=0)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)


class KnowledgePassage(Base):
    """One retrievable passage of a bot's knowledge base, with its sentence embedding."""

    __tablename__ = "knowledge_passages"
    __table_args__ = (Index("ix_passages_bot", "bot_id", "ordinal"),)

    id: Mapped[str] = mapped_column(String(40), primary_key=True)  # psg-...
    tenant_id: Mapped[str] = mapped_column(ForeignKey("tenants.id", ondelete="CASCADE"))
    bot_id: Mapped[str] = mapped_column(ForeignKey("bots.id", ondelete="CASCADE"))
    file_id: Mapped[str] = mapped_column(String(40))
    ordinal: Mapped[int] = mapped_column(Integer)  # position in the bot's knowledge base
    ref: Mapped[str] = mapped_column(String(200))  # the FAQ entry's id, or the heading's slug
    title: Mapped[str] = mapped_column(String(500))
    text: Mapped[str] = mapped_column(Text)
    embedding: Mapped[bytes] = mapped_column(LargeBinary)  # float32, unit length
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class Conversation(Base):
    __tablename__ = "conversations"
    __table_args__ = (Index("ix_conversations_bot", "bot_id", "id"),)

    id: Mapped[str] = mapped_column(String(40), primary_key=True)  # conv-...
    tenant_id: Mapped[str] = mapped_column(ForeignKey("tenants.id", ondelete="CASCADE"))
    bot_id: Mapped[str] = mapped_column(ForeignKey("bots.id", ondelete="CASCADE"))
    escalated: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)


class Message(Base):
    """A turn of a support conversation; assistant turns carry citations and escalation."""

    __tablename__ = "messages"
    __table_args__ = (Index("ix_messages_conversation", "conversation_id", "id"),)

    id: Mapped[str] = mapped_column(String(40), primary_key=True)  # msg-...
    tenant_id: Mapped[str] = mapped_column(ForeignKey("tenants.id", ondelete="CASCADE"))
    conversation_id: Mapped[str] = mapped_column(ForeignKey("conversations.id", ondelete="CASCADE"))
    role: Mapped[str] = mapped_column(String(16))  # user | assistant
    content: Mapped[str] = mapped_column(Text)
    citations: Mapped[list[dict[str, Any]]] = mapped_column(JSON, default=list)
    escalate: Mapped[bool] = mapped_column(Boolean, default=False)
    escalation_reason: Mapped[str | None] = mapped_column(String(32))
    confidence: Mapped[float | None] = mapped_column(Float)
    prompt_tokens: Mapped[int] = mapped_column(Integer, default=0)
    completion_tokens: Mapped[int] = mapped_column(Integer, default=0)
    # tokens of the retrieval query (the question, and the previous one for a follow-up)
    embedding_tokens: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    # assistant turns: stop | length | abandoned (the client left mid-stream); NULL for the user's
    finish_reason: Mapped[str | None] = mapped_column(String(16))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


# -- recommendations (catalogs, products, interaction events) ------------------------------------


class Catalog(Base):
    """A tenant's product catalog and its recommendation index.

    ``generation`` rises with every requested index build; the build task builds exactly that
    generation and copies it to ``built_generation`` when the index is stored (so a redelivered
    task is a no-op). The index lives in storage at ``index_uri``; a ``recommender`` deployment
    (``deployment_id``) serves it.
    """

    __tablename__ = "catalogs"
    __table_args__ = (Index("ix_catalogs_tenant", "tenant_id", "id"),)

    id: Mapped[str] = mapped_column(String(40), primary_key=True)  # cat-...
    tenant_id: Mapped[str] = mapped_column(ForeignKey("tenants.id", ondelete="CASCADE"))
    name: Mapped[str] = mapped_column(String(100))
    # queued | building | ready | failed
    status: Mapped[str] = mapped_column(String(16), default="queued")
    progress: Mapped[float] = mapped_column(Float, default=0.0)  # 0..1 of the current build
    error: Mapped[dict[str, Any] | None] = mapped_column(default=None)  # {code, message}
    products_file: Mapped[str] = mapped_column(String(40))
    events_file: Mapped[str | None] = mapped_column(String(40))
    product_count: Mapped[int] = mapped_column(Integer, default=0)
    event_count: Mapped[int] = mapped_column(BigInteger, default=0)
    generation: Mapped[int] = mapped_column(Integer, default=1)
    built_generation: Mapped[int] = mapped_column(Integer, default=0)
    index_uri: Mapped[str | None] = mapped_column(String(1000))
    deployment_id: Mapped[str | None] = mapped_column(String(40))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)


class Product(Base):
    __tablename__ = "products"
    __table_args__ = (
        UniqueConstraint("catalog_id", "product_id", name="uq_product_catalog_id"),
        Index("ix_products_tenant", "tenant_id", "catalog_id"),
    )

    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True)
    tenant_id: Mapped[str] = mapped_column(ForeignKey("tenants.id", ondelete="CASCADE"))
    catalog_id: Mapped[str] = mapped_column(ForeignKey("catalogs.id", ondelete="CASCADE"))
    product_id: Mapped[str] = mapped_column(String(200))  # the tenant's own id
    title: Mapped[str] = mapped_column(String(500))
    description: Mapped[str] = mapped_column(Text, default="")
    category: Mapped[str] = mapped_column(String(200), default="")
    price: Mapped[float] = mapped_column(Float, default=0.0)
    in_stock: Mapped[bool] = mapped_column(Boolean, default=True)
    attributes: Mapped[dict[str, Any]] = mapped_column(default=dict)


class InteractionEvent(Base):
    __tablename__ = "interaction_events"
    __table_args__ = (
        Index("ix_interactions_tenant", "tenant_id", "catalog_id"),
        Index("ix_interactions_user", "catalog_id", "user_id", "timestamp"),
    )

    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True)
    tenant_id: Mapped[str] = mapped_column(ForeignKey("tenants.id", ondelete="CASCADE"))
    catalog_id: Mapped[str] = mapped_column(ForeignKey("catalogs.id", ondelete="CASCADE"))
    user_id: Mapped[str] = mapped_column(String(200))
    product_id: Mapped[str] = mapped_column(String(200))
    type: Mapped[str] = mapped_column(String(16))  # view | cart | purchase
    timestamp: Mapped[datetime] = mapped_column()
