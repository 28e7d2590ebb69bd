"""What the operator's charts and summaries show, computed from the database.

One function per view, each returning a public schema; the admin JSON routes
(``moeplane.api.routes.admin_dashboard``) serve them and the dashboard's pages and charts read
them, so a chart and the API always show the same numbers.
"""

from __future__ import annotations

import math
from collections import defaultdict
from datetime import UTC, date, datetime, timedelta
from typing import Literal

from pydantic import BaseModel, Field
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from moeplane.api.schemas.common import epoch
from moeplane.api.schemas.deployments import ExpertStatsPublic
from moeplane.store.models import (
    Deployment,
    ExpertStats,
    FineTuneJob,
    InferenceRequest,
    JobCheckpoint,
    JobEvent,
    Tenant,
    utcnow,
)
from moeplane.store.usage import usage_rows

__all__ = [
    "JobMetrics",
    "Overview",
    "Traffic",
    "UsageDaily",
    "deployment_experts",
    "job_metrics",
    "overview",
    "traffic",
    "traffic_summaries",
    "usage_daily",
]

BUCKET_S = 60  # traffic is shown per minute


class Overview(BaseModel):
    object: Literal["admin.overview"] = "admin.overview"
    tenants: dict[str, int] = Field(description="Live tenants by status")
    jobs: dict[str, int] = Field(description="Fine-tuning jobs by status")
    deployments: dict[str, int] = Field(description="Deployments by status")


def _count_by(db: Session, column, *where) -> dict[str, int]:  # type: ignore[no-untyped-def]
    rows = db.execute(select(column, func.count()).where(*where).group_by(column))
    return {str(status): int(n) for status, n in rows}


def overview(db: Session) -> Overview:
    return Overview(
        tenants=_count_by(db, Tenant.status, Tenant.status != "deleted"),
        jobs=_count_by(db, FineTuneJob.status),
        deployments=_count_by(db, Deployment.status),
    )


class TrafficPoint(BaseModel):
    t: int = Field(description="Start of the minute (Unix time)")
    requests: int
    prompt_tokens: int
    completion_tokens: int
    tokens_per_s: float = Field(description="Completion tokens per second over the minute")
    latency_p50_ms: float | None
    latency_p95_ms: float | None


class TrafficTotals(BaseModel):
    requests: int
    prompt_tokens: int
    completion_tokens: int
    tokens_per_s: float = Field(description="Completion tokens per second over the window")
    latency_p50_ms: float | None
    latency_p95_ms: float | None


class Traffic(BaseModel):
    object: Literal["admin.traffic"] = "admin.traffic"
    minutes: int
    bucket_s: int = BUCKET_S
    start: int
    tenant_id: str | None
    deployment_id: str | None
    points: list[TrafficPoint] = Field(description="One per minute, oldest first, zero-filled")
    totals: TrafficTotals


def _percentile(sorted_values: list[float], q: float) -> float | None:
    """Nearest-rank percentile of an ascending list (None when empty)."""
    if not sorted_values:
        return None
    rank = max(1, math.ceil(q * len(sorted_values)))
    return round(sorted_values[rank - 1], 1)


def _rows_since(db: Session, since, *where):  # type: ignore[no-untyped-def]
    # Only four columns of the window's rows: a busy hour is ~10^5 small tuples. Percentiles
    # are not portable SQL (SQLite has none), so they are taken here.
    return db.execute(
        select(
            InferenceRequest.deployment_id,
            InferenceRequest.created_at,
            InferenceRequest.prompt_tokens,
            InferenceRequest.completion_tokens,
            InferenceRequest.latency_ms,
        ).where(InferenceRequest.created_at >= since, *where)
    ).all()


def _totals(rows, seconds: float) -> TrafficTotals:  # type: ignore[no-untyped-def]
    latencies = sorted(r.latency_ms for r in rows)
    completion = sum(r.completion_tokens for r in rows)
    return TrafficTotals(
        requests=len(rows),
        prompt_tokens=sum(r.prompt_tokens for r in rows),
        completion_tokens=completion,
        tokens_per_s=round(completion / seconds, 2),
        latency_p50_ms=_percentile(latencies, 0.5),
        latency_p95_ms=_percentile(latencies, 0.95),
    )


def traffic(
    db: Session,
    *,
    minutes: int = 60,
    tenant_id: str | None = None,
    deployment_id: str | None = None,
) -> Traffic:
    """Inference requests per minute over the last ``minutes`` (the current minute included)."""
    now = utcnow()
    first = int(now.timestamp()) // BUCKET_S * BUCKET_S - (minutes - 1) * BUCKET_S
    since = datetime.fromtimestamp(first, UTC)
    where = []
    if tenant_id:
        where.append(InferenceRequest.tenant_id == tenant_id)
    if deployment_id:
        where.append(InferenceRequest.deployment_id == deployment_id)
    rows = _rows_since(db, since, *where)
    buckets: dict[int, list] = defaultdict(list)
    for row in rows:
        index = (int(row.created_at.timestamp()) - first) // BUCKET_S
        buckets[min(max(index, 0), minutes - 1)].append(row)
    points = []
    for i in range(minutes):
        part = buckets.get(i, [])
        totals = _totals(part, BUCKET_S)
        points.append(TrafficPoint(t=first + i * BUCKET_S, **totals.model_dump()))
    return Traffic(
        minutes=minutes,
        start=first,
        tenant_id=tenant_id,
        deployment_id=deployment_id,
        points=points,
        totals=_totals(rows, minutes * BUCKET_S),
    )


def traffic_summaries(
    db: Session, deployment_ids: list[str], *, minutes: int = 60
) -> dict[str, TrafficTotals]:
    """Last-``minutes`` totals (latency percentiles, tokens/s) for each listed deployment."""
    since = utcnow() - timedelta(minutes=minutes)
    by_deployment: dict[str, list] = defaultdict(list)
    if deployment_ids:
        for row in _rows_since(db, since, InferenceRequest.deployment_id.in_(deployment_ids)):
            by_deployment[row.deployment_id].append(row)
    return {d: _totals(by_deployment.get(d, []), minutes * 60) for d in deployment_ids}


class UsageDaily(BaseModel):
    object: Literal["admin.usage.daily"] = "admin.usage.daily"
    tenant_id: str | None
    days: list[str] = Field(description="UTC days, oldest first (YYYY-MM-DD)")
    series: dict[str, list[int]] = Field(description="Per usage kind, one amount per day")


def usage_daily(db: Session, *, tenant_id: str | None, days: int = 30) -> UsageDaily:
    """Daily usage per kind over the last ``days`` UTC days, zero-filled, for charts."""
    today = utcnow().date()
    first = today - timedelta(days=days - 1)
    labels = [(first + timedelta(days=i)).isoformat() for i in range(days)]
    index = {day: i for i, day in enumerate(labels)}
    series: dict[str, list[int]] = {}
    for row in usage_rows(db, tenant_id, start=first, end=today):
        values = series.setdefault(row.kind, [0] * days)
        values[index[row.period]] += row.amount
    return UsageDaily(tenant_id=tenant_id, days=labels, series=dict(sorted(series.items())))


class LossPoint(BaseModel):
    step: int
    train_loss: float | None
    valid_loss: float | None = None
    created_at: int


class JobMetrics(BaseModel):
    object: Literal["fine_tuning.job.metrics"] = "fine_tuning.job.metrics"
    job_id: str
    status: str
    total_steps: int | None = Field(description="Steps the run will take, once it has reported")
    points: list[LossPoint] = Field(description="One per step, ascending")
    checkpoints: list[int] = Field(description="Steps with a saved checkpoint")


def _number(value: object) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value) if math.isfinite(value) else None


def job_metrics(db: Session, job: FineTuneJob) -> JobMetrics:
    """The loss curve: metrics events plus checkpoint metrics, one point per step (a resumed
    run re-reports steps; the latest report wins)."""
    by_step: dict[int, LossPoint] = {}
    total: int | None = None
    events = db.scalars(
        select(JobEvent).where(JobEvent.job_id == job.id, JobEvent.type == "metrics")
    )
    checkpoints = list(
        db.scalars(
            select(JobCheckpoint).where(JobCheckpoint.job_id == job.id).order_by(JobCheckpoint.step)
        )
    )
    reports = [(e.id, e.data, e.created_at) for e in events]
    reports += [(c.id, {**c.metrics, "step": c.step}, c.created_at) for c in checkpoints]
    for _, data, created_at in sorted(reports, key=lambda r: r[2]):
        step = data.get("step")
        if not isinstance(step, int) or isinstance(step, bool):
            continue
        if isinstance(data.get("total_steps"), int):
            total = data["total_steps"]
        by_step[step] = LossPoint(
            step=step,
            train_loss=_number(data.get("train_loss")),
            valid_loss=_number(data.get("valid_loss")),
            created_at=epoch(created_at) or 0,
        )
    return JobMetrics(
        job_id=job.id,
        status=job.status,
        total_steps=total,
        points=[by_step[s] for s in sorted(by_step)],
        checkpoints=[c.step for c in checkpoints],
    )


def deployment_experts(db: Session, deployment: Deployment) -> ExpertStatsPublic:
    """Routing counts per layer and expert, summed over the replicas of the version being
    served (a rolling update starts the counts afresh)."""
    version = deployment.observed_version_id or deployment.model_version_id
    rows = db.scalars(
        select(ExpertStats).where(
            ExpertStats.deployment_id == deployment.id, ExpertStats.model_version_id == version
        )
    ).all()
    counts: list[list[int]] = []
    for row in rows:
        for layer_index, layer in enumerate(row.counts):
            if layer_index == len(counts):
                counts.append([0] * len(layer))
            total = counts[layer_index]
            if len(total) < len(layer):
                total.extend([0] * (len(layer) - len(total)))
            for expert, n in enumerate(layer):
                total[expert] += int(n)
    load = [[n / max(1, sum(layer)) for n in layer] for layer in counts]
    return ExpertStatsPublic(
        deployment_id=deployment.id,
        model_version_id=version,
        replicas=len(rows),
        tokens=sum(r.tokens for r in rows),
        counts=counts,
        load=load,
        shards=rows[0].shards if rows else [],
    )


def parse_day(value: str | None) -> date | None:
    """A ``YYYY-MM-DD`` form field, or None when empty or malformed."""
    if not value:
        return None
    try:
        return date.fromisoformat(value)
    except ValueError:
        return None
