"""The Serve application of one deployment: `build(args)` is its import path.

The reconciler deploys ``moeplane.serving.app:build`` with a `ServingSpec` as ``args``. Each
replica is a `ModelServer`: a continuous-batching `Engine` in front of either the model itself
(``expert_shards = 1``, dense or MoE) or a gang of expert-shard actors (`moeplane.serving.moe`).
The gateway calls ``generate`` through a Serve handle and streams the chunks.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator
from dataclasses import asdict
from typing import Any
from urllib.parse import unquote, urlparse

from ray import serve
from ray.serve.config import AutoscalingConfig, AutoscalingPolicy

from moeplane.serving.engine import Engine, GenerationRequest
from moeplane.serving.metering import Meter
from moeplane.serving.runner import SamplingParams
from moeplane.serving.spec import ServingSpec

__all__ = ["ModelServer", "build", "deployment_options"]

log = logging.getLogger(__name__)

_STATS_INTERVAL_S = 2.0  # how often a replica saves its routing counts (when they changed)


def _local_path(uri: str) -> str:
    parsed = urlparse(uri)
    assert parsed.scheme == "file", f"serving reads file:// checkpoints, got {uri}"
    return unquote(parsed.path)


class ModelServer:
    """One replica: engine loop + model (or its shard gang) + metering."""

    def __init__(self, args: dict[str, Any]):
        import torch
        from transformers import AutoTokenizer

        from moeplane.modeling.checkpoint import read_config

        self.spec = spec = ServingSpec.from_args(args)
        path = _local_path(spec.artifact_uri)
        self.tokenizer = AutoTokenizer.from_pretrained(path)
        config = read_config(path)
        self.top_k = int(getattr(config, "num_experts_per_tok", 0) or 0)
        eos = config.eos_token_id
        eos_ids = set(eos if isinstance(eos, list) else [eos])
        eos_ids |= {i for i in (self.tokenizer.eos_token_id,) if i is not None}
        self.gang = None
        if spec.expert_shards > 1:
            from moeplane.serving.moe import ShardGang

            self.gang = ShardGang(path, spec.expert_shards, spec.resources)
            self.shards = self.gang.infos
            step = self.gang.step
        else:
            from moeplane.kernels import cpu_native
            from moeplane.serving.runner import ModelRunner
            from moeplane.serving.shard import load_shard_model

            torch.set_num_threads(max(1, int(spec.resources.cpus_per_shard)))
            cpu_native.packed_copies(spec.resources.packed_weights)
            model, info = load_shard_model(path, 1, 0)
            self.runner = ModelRunner(model)
            self.shards = [asdict(info)] if info is not None else []

            async def step(plan):
                return await asyncio.to_thread(self.runner.step, plan)

        self.engine = Engine(
            step,
            self.tokenizer,
            max_batch_size=spec.max_batch_size,
            eos_token_ids=eos_ids,
            on_finish=self._on_finish,
        )
        self.meter = Meter(spec.database_url, spec.deployment_id, spec.model, spec.model_version_id)
        self.replica_id = serve.get_replica_context().replica_id.unique_id
        self._started: dict[str, float] = {}
        self._meta: dict[str, str] = {}
        self._tokens = 0
        self._saved_tokens = -1
        self._stats_task: asyncio.Task | None = None  # started by the first request

    # -- metering ------------------------------------------------------------------------
    def _on_finish(
        self, request: GenerationRequest, prompt: int, completion: int, reason: str
    ) -> None:
        started = self._started.pop(request.request_id, time.monotonic())
        tenant_id = self._meta.pop(request.request_id, "")
        self._tokens += prompt + completion
        latency_ms = (time.monotonic() - started) * 1000
        asyncio.get_running_loop().run_in_executor(
            None,
            lambda: self.meter.record(
                request_id=request.request_id,
                tenant_id=tenant_id,
                prompt_tokens=prompt,
                completion_tokens=completion,
                finish_reason=reason,
                latency_ms=latency_ms,
            ),
        )

    async def _counts(self) -> list[list[int]]:
        if self.gang is not None:
            return await self.gang.expert_counts()
        return self.runner.expert_counts()

    async def _save_stats_loop(self) -> None:
        while True:
            await asyncio.sleep(_STATS_INTERVAL_S)
            if self._tokens == self._saved_tokens:
                continue
            try:
                counts = await self._counts()
                if counts:
                    tokens = sum(counts[0]) // max(1, self.top_k)
                    await asyncio.to_thread(
                        self.meter.save_expert_counts, self.replica_id, counts, tokens, self.shards
                    )
                self._saved_tokens = self._tokens
            except Exception:  # statistics are best effort; serving goes on
                log.exception("could not save routing statistics")

    # -- the API the gateway calls --------------------------------------------------------
    async def generate(self, request: dict[str, Any]) -> AsyncIterator[dict[str, Any]]:
        """Stream chunks for one request: {text, token_ids, finish_reason, usage}."""
        gen = GenerationRequest(
            request_id=request["request_id"],
            prompt_ids=list(request["prompt_ids"]),
            max_tokens=int(request["max_tokens"]),
            sampling=SamplingParams(**request.get("sampling", {})),
            stop=list(request.get("stop") or []),
        )
        if self._stats_task is None:
            self._stats_task = asyncio.get_running_loop().create_task(self._save_stats_loop())
        self._started[gen.request_id] = time.monotonic()
        self._meta[gen.request_id] = request["tenant_id"]
        async for chunk in self.engine.generate(gen):
            yield {
                "text": chunk.text,
                "token_ids": chunk.token_ids,
                "finish_reason": chunk.finish_reason,
                "prompt_tokens": chunk.prompt_tokens,
                "completion_tokens": chunk.completion_tokens,
            }

    async def stats(self) -> dict[str, Any]:
        load = self.engine.load()
        return {
            "replica_id": self.replica_id,
            "generation": self.spec.generation,
            "model_version_id": self.spec.model_version_id,
            "expert_counts": await self._counts(),
            "shards": self.shards,
            "load": asdict(load),
        }

    def record_autoscaling_stats(self) -> dict[str, float]:
        """Custom metrics for the token autoscaling policy (serving/autoscale.py)."""
        return {"tokens": float(self.engine.load().tokens)}

    async def check_health(self) -> None:
        """Serve replaces the replica when this raises: a dead shard breaks the gang."""
        if self.gang is not None:
            await self.gang.ping()


def deployment_options(spec: ServingSpec) -> dict[str, Any]:
    """Serve options for the spec: resources, gang bundles, autoscaling, rolling updates."""
    scaling = spec.autoscaling
    autoscaling: dict[str, Any] = {
        "min_replicas": scaling.min_replicas,
        "max_replicas": scaling.max_replicas,
        "initial_replicas": scaling.min_replicas,
        "target_ongoing_requests": scaling.target_ongoing_requests,
        "upscale_delay_s": scaling.upscale_delay_s,
        "downscale_delay_s": scaling.downscale_delay_s,
        "metrics_interval_s": 1.0,
        "look_back_period_s": max(2.0, min(10.0, scaling.upscale_delay_s)),
    }
    if scaling.policy == "tokens":
        autoscaling["policy"] = AutoscalingPolicy(
            policy_function="moeplane.serving.autoscale:TokenTargetPolicy",
            policy_kwargs={"target_tokens_per_replica": scaling.target_tokens_per_replica},
        )
    bundles = spec.replica_bundles
    options: dict[str, Any] = {
        "name": "ModelServer",
        "autoscaling_config": AutoscalingConfig(**autoscaling),
        # the engine batches; Serve may queue a few more per replica than one batch holds
        "max_ongoing_requests": max(2 * spec.max_batch_size, 4),
        # replacements start before old replicas stop: a rolling update never drops capacity
        "max_surge_percent": 100,
        "health_check_period_s": 2.0,
        "health_check_timeout_s": 30.0,
        "graceful_shutdown_timeout_s": 60.0,
    }
    if spec.expert_shards > 1:
        options["ray_actor_options"] = {"num_cpus": bundles[0]["CPU"]}
        options["placement_group_bundles"] = bundles
        options["placement_group_strategy"] = "STRICT_PACK"
    else:
        options["ray_actor_options"] = {
            "num_cpus": spec.resources.cpus_per_shard,
            "num_gpus": spec.resources.gpus_per_shard,
        }
    return options


def build(args: dict[str, Any]) -> serve.Application:
    """The application builder named in the reconciler's Serve config."""
    spec = ServingSpec.from_args(args)
    deployment = serve.deployment(ModelServer).options(**deployment_options(spec))
    return deployment.bind(spec.to_args())
