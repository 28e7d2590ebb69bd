"""The Serve application of an ``embeddings`` deployment: `build(args)` is its import path.

The reconciler deploys ``moeplane.serving.embeddings:build`` with a `ServingSpec` as ``args``
(family ``sentence_embedding``). Each replica is an `EmbeddingServer`: concurrent requests are
gathered by ``@serve.batch`` (up to ``max_batch_size`` requests, or what arrived within a few
milliseconds) and encoded as one batch of texts, off the event loop. Like the LLM replicas it
meters where the work is done: one ``inference_requests`` row per request with its prompt
tokens (`moeplane.serving.metering.Meter`), keyed by the gateway's request id.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

import numpy as np
from ray import serve

from moeplane.serving.app import _local_path, deployment_options
from moeplane.serving.metering import Meter
from moeplane.serving.spec import ServingSpec

__all__ = ["EmbeddingServer", "build"]

log = logging.getLogger(__name__)

# how long the first request of a batch waits for company: a few ms cost little next to a
# forward pass (~10 ms for a short batch on one core) and let concurrent callers share one
_BATCH_WAIT_S = 0.005
_ENCODE_BATCH = 64  # texts per forward pass inside a gathered batch


class EmbeddingServer:
    """One replica: all-MiniLM-L6-v2 (or any sentence_embedding checkpoint) + metering."""

    def __init__(self, args: dict[str, Any]):
        import torch

        from moeplane.modeling.embeddings import EmbeddingModel

        self.spec = spec = ServingSpec.from_args(args)
        torch.set_num_threads(max(1, int(spec.resources.cpus_per_shard)))
        device = "cuda" if spec.resources.gpus_per_shard and torch.cuda.is_available() else "cpu"
        self.model = EmbeddingModel(_local_path(spec.artifact_uri), device=device)
        self._embed_batch.set_max_batch_size(max(1, spec.max_batch_size))
        self.meter = Meter(spec.database_url, spec.deployment_id, spec.model, spec.model_version_id)

    @serve.batch(max_batch_size=8, batch_wait_timeout_s=_BATCH_WAIT_S)
    async def _embed_batch(self, inputs: list[list[str]]) -> list[tuple[np.ndarray, list[int]]]:
        """Many requests' texts as one encode; each request gets its rows and token counts."""
        texts = [text for request in inputs for text in request]

        def work() -> tuple[np.ndarray, list[int]]:
            return self.model.encode(texts, _ENCODE_BATCH), self.model.count_tokens(texts)

        vectors, tokens = await asyncio.to_thread(work)  # (n, dim)
        out, start = [], 0
        for request in inputs:
            end = start + len(request)
            out.append((vectors[start:end], tokens[start:end]))
            start = end
        return out

    async def embed(self, request: dict[str, Any]) -> dict[str, Any]:
        """{request_id, tenant_id, input: [str]} -> {embeddings: (n, dim) float32,
        prompt_tokens}."""
        started = time.monotonic()
        vectors, tokens = await self._embed_batch(list(request["input"]))
        prompt_tokens = sum(tokens)
        latency_ms = (time.monotonic() - started) * 1000
        # billed off the request's path, as the LLM replicas do: the caller does not wait for
        # the database (a failed write is logged by the executor, the vectors still go out)
        asyncio.get_running_loop().run_in_executor(
            None,
            lambda: self.meter.record(
                request_id=request["request_id"],
                tenant_id=request["tenant_id"],
                prompt_tokens=prompt_tokens,
                completion_tokens=0,
                finish_reason="stop",
                latency_ms=latency_ms,
            ),
        )
        return {"embeddings": vectors, "prompt_tokens": prompt_tokens}


def build(args: dict[str, Any]) -> serve.Application:
    """The application builder named in the reconciler's Serve config."""
    spec = ServingSpec.from_args(args)
    options = deployment_options(spec) | {"name": "EmbeddingServer"}
    # batches are gathered here, so a replica takes several batches' worth of callers
    options["max_ongoing_requests"] = max(4 * spec.max_batch_size, 16)
    deployment = serve.deployment(EmbeddingServer).options(**options)
    return deployment.bind(spec.to_args())
