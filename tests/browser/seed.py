"""A small, realistic platform state for the dashboard's tests (and its README screenshot):
tenants and keys through the domain functions, jobs, events, versions, a deployment, metered
requests and routing statistics as the ORM rows the workers would write. No Ray needed."""

from __future__ import annotations

import math
import random
from dataclasses import dataclass
from datetime import timedelta

from moeplane.store.db import Database
from moeplane.store.ids import new_id
from moeplane.store.jobs import add_checkpoint, add_event
from moeplane.store.models import (
    Deployment,
    ExpertStats,
    FineTuneJob,
    InferenceRequest,
    utcnow,
)
from moeplane.store.registry import ensure_model, register_version
from moeplane.store.usage import record_usage
from tests.factories import TenantFixture, make_tenant

EVIL_NAME = "<script>alert('pwned')</script><img src=x onerror=alert(1)>"
LAYERS, EXPERTS = 4, 8
MOE_CONFIG = {
    "family": "qwen3_moe",
    "num_layers": LAYERS,
    "hidden_size": 64,
    "num_experts": EXPERTS,
    "top_k": 2,
    "params_total": 6_291_456,
    "params_active": 2_359_296,
}


@dataclass
class Seeded:
    acme: TenantFixture
    evil: TenantFixture
    base_version_id: str
    done_job_id: str
    running_job_id: str
    queued_job_id: str
    tuned_version_id: str
    deployment_id: str
    requests: int


def _job(tenant_id: str, base_version_id: str, status: str, **fields) -> FineTuneJob:
    now = utcnow()
    return FineTuneJob(
        id=new_id("ftjob"),
        tenant_id=tenant_id,
        status=status,
        model="qwen3-moe-tiny",
        base_version_id=base_version_id,
        training_file=new_id("file"),
        method="lora",
        hyperparameters={"n_epochs": 3, "batch_size": 4, "learning_rate_multiplier": 1.0},
        lora={"r": 8, "alpha": 16},
        suffix="support",
        seed=42,
        estimated_tokens=48_000,
        estimated_compute=1,
        created_at=now - timedelta(minutes=50),
        queued_at=now - timedelta(minutes=50),
        **fields,
    )


def _loss(step: int) -> float:
    return round(2.9 * math.exp(-step / 14) + 0.55 + 0.05 * math.sin(step), 4)


def seed_platform(db: Database, *, seed: int = 0) -> Seeded:
    rng = random.Random(seed)
    acme = make_tenant(db, "acme", rpm=1200)
    evil = make_tenant(db, EVIL_NAME)
    make_tenant(db, "globex-retail")
    now = utcnow()
    with db.session() as s:
        base_model = ensure_model(
            s,
            model_id="qwen3-moe-tiny",
            tenant_id=None,
            family="qwen3_moe",
            base_model_id="qwen3-moe-tiny",
            description="Tiny Qwen3-MoE for tests and demos",
        )
        base = register_version(
            s, base_model, artifact_uri="file:///models/qwen3-moe-tiny", sha256="a" * 64,
            config=MOE_CONFIG,
        )  # fmt: skip
        dense = ensure_model(
            s, model_id="qwen3-tiny", tenant_id=None, family="qwen3", base_model_id="qwen3-tiny"
        )
        register_version(
            s, dense, artifact_uri="file:///models/qwen3-tiny", sha256="b" * 64,
            config={"family": "qwen3", "num_layers": 4, "params_total": 3_000_000},
        )  # fmt: skip

        done = _job(
            acme.id,
            base.id,
            "succeeded",
            started_at=now - timedelta(minutes=45),
            finished_at=now - timedelta(minutes=20),
            trained_tokens=47_512,
        )
        running = _job(acme.id, base.id, "running", started_at=now - timedelta(minutes=5))
        queued = _job(evil.id, base.id, "queued")
        s.add_all([done, running, queued])
        s.flush()
        started = now - timedelta(minutes=45)
        add_event(s, done, "Job started on 2 workers").created_at = started
        for step in range(1, 37):
            at = started + timedelta(seconds=40 * step)
            data = {"step": step, "total_steps": 36, "train_loss": _loss(step), "lr": 2e-3}
            if step % 12 == 0:
                add_checkpoint(s, done, step=step, uri=f"file:///ckpt/{done.id}/{step}",
                               metrics={"step": step, "train_loss": _loss(step)})  # fmt: skip
                event = add_event(s, done, f"Checkpoint saved at step {step}", data=data)
            else:
                event = add_event(
                    s, done, f"Step {step}: train loss {_loss(step):.4f}", type_="metrics",
                    data=data,
                )  # fmt: skip
            event.created_at = at
        finished = add_event(s, done, "Job succeeded: registered ft:qwen3-moe-tiny:acme:support")
        finished.created_at = now - timedelta(minutes=20)
        for step in range(1, 9):
            data = {"step": step, "total_steps": 36, "train_loss": _loss(step) + 0.1}
            add_event(s, running, f"Step {step}", type_="metrics", data=data)

        tuned_model = ensure_model(
            s,
            model_id=f"ft:qwen3-moe-tiny:acme:support:{done.id[-6:]}",
            tenant_id=acme.id,
            family="qwen3_moe",
            base_model_id="qwen3-moe-tiny",
        )
        tuned = register_version(
            s, tuned_model, artifact_uri=f"file:///ckpt/{done.id}/final", sha256="c" * 64,
            config=MOE_CONFIG, parent_version_id=base.id, job_id=done.id,
            dataset_sha256="d" * 64, hyperparameters=done.hyperparameters, seed=42,
        )  # fmt: skip
        done.result_version_id = tuned.id
        done.fine_tuned_model = tuned_model.id

        deployment = Deployment(
            id=new_id("dep"),
            tenant_id=acme.id,
            name="support",
            app_name="mp-acme-support",
            model=tuned_model.id,
            model_version_id=tuned.id,
            expert_shards=2,
            autoscaling={"min_replicas": 1, "max_replicas": 3, "policy": "tokens"},
            resources={"cpus_per_shard": 0.5, "gpus_per_shard": 0.0, "packed_weights": "off"},
            status="running",
            current_replicas=2,
            observed_generation=1,
            observed_version_id=tuned.id,
        )
        s.add(deployment)
        s.add(
            Deployment(
                id=new_id("dep"),
                tenant_id=evil.id,
                name="search",
                app_name="mp-evil-search",
                model="qwen3-tiny",
                model_version_id=base.id,
                status="deploying",
            )
        )
        s.flush()
        requests = 0
        for minute in range(58, -1, -1):
            for _ in range(rng.randint(2, 9) if minute % 17 else 0):
                s.add(
                    InferenceRequest(
                        id=new_id("req"),
                        tenant_id=acme.id,
                        deployment_id=deployment.id,
                        model=tuned_model.id,
                        prompt_tokens=rng.randint(20, 120),
                        completion_tokens=rng.randint(16, 96),
                        finish_reason="stop",
                        latency_ms=rng.uniform(180, 900),
                        created_at=now - timedelta(minutes=minute, seconds=rng.randint(0, 50)),
                    )
                )
                requests += 1
        for replica in ("replica-a", "replica-b"):
            counts = [
                [rng.randint(50, 400) * (3 if e == (layer * 3) % EXPERTS else 1) for e in range(8)]
                for layer in range(LAYERS)
            ]
            s.add(
                ExpertStats(
                    deployment_id=deployment.id,
                    replica_id=replica,
                    model_version_id=tuned.id,
                    counts=counts,
                    tokens=sum(counts[0]) // 2,
                )
            )
        for day in range(14):
            at = now - timedelta(days=day)
            record_usage(s, acme.id, "prompt_tokens", rng.randint(20_000, 60_000), at=at)
            record_usage(s, acme.id, "completion_tokens", rng.randint(10_000, 40_000), at=at)
            record_usage(s, evil.id, "completion_tokens", rng.randint(1_000, 5_000), at=at)
        record_usage(s, acme.id, "training_tokens", 47_512, at=now - timedelta(minutes=20))
        return Seeded(
            acme=acme,
            evil=evil,
            base_version_id=base.id,
            done_job_id=done.id,
            running_job_id=running.id,
            queued_job_id=queued.id,
            tuned_version_id=tuned.id,
            deployment_id=deployment.id,
            requests=requests,
        )
