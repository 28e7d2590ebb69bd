"""The Serve application of a ``recommender`` deployment: `build(args)` is its import path.

The reconciler deploys ``moeplane.serving.recommend:build`` with a `ServingSpec` whose
``options`` carry ``catalog_id`` and ``index_uri``. Each replica loads that index and the query
encoder once and answers ``recommend(payload)`` with the same pure scoring the evaluation uses
(`moeplane.recommend.scoring`). A new index is a new ``index_uri``: a rolling update.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from ray import serve
from ray.serve.config import AutoscalingConfig

from moeplane.serving.spec import ServingSpec

__all__ = ["DEPLOYMENT_NAME", "RecommenderServer", "build", "deployment_options", "loop_handle"]

DEPLOYMENT_NAME = "RecommenderServer"
# User code on the replica's own event loop, not a second one in a thread (one hop less: the
# scoring runs in a worker thread anyway, so nothing blocks the loop).
_REPLICA_ENV = {"RAY_SERVE_RUN_USER_CODE_IN_SEPARATE_THREAD": "0"}

log = logging.getLogger(__name__)


class RecommenderServer:
    """One replica: a catalog's index in memory, scoring on a worker thread."""

    def __init__(self, args: dict[str, Any]):
        import torch

        from moeplane.modeling.embeddings import EmbeddingModel
        from moeplane.recommend.engine import Recommender, load_index_uri

        self.spec = spec = ServingSpec.from_args(args)
        # one thread per replica: on a busy host more threads make each request slower
        torch.set_num_threads(max(1, int(spec.resources.cpus_per_shard)))
        index = load_index_uri(spec.options["index_uri"])
        index.search_matrix  # noqa: B018 (picks its dtype now, with this replica's threads)
        self.recommender = Recommender(index, EmbeddingModel().encode)
        log.info("catalog %s: %d products", spec.options.get("catalog_id"), len(index))

    async def recommend(self, payload: dict[str, Any]) -> dict[str, Any]:
        return await asyncio.to_thread(self.recommender.handle, payload)

    def stats(self) -> dict[str, Any]:
        return {
            "generation": self.spec.generation,
            "catalog_id": self.spec.options.get("catalog_id"),
            "products": len(self.recommender.index),
        }


def deployment_options(spec: ServingSpec) -> dict[str, Any]:
    scaling = spec.autoscaling
    return {
        "name": DEPLOYMENT_NAME,
        "autoscaling_config": AutoscalingConfig(
            min_replicas=scaling.min_replicas,
            max_replicas=scaling.max_replicas,
            initial_replicas=scaling.min_replicas,
            target_ongoing_requests=scaling.target_ongoing_requests,
            upscale_delay_s=scaling.upscale_delay_s,
            downscale_delay_s=scaling.downscale_delay_s,
        ),
        "max_ongoing_requests": 32,
        "max_surge_percent": 100,  # a new index serves before the old replicas stop
        "health_check_period_s": 5.0,
        "graceful_shutdown_timeout_s": 10.0,
        "ray_actor_options": {
            "num_cpus": spec.resources.cpus_per_shard,
            "runtime_env": {"env_vars": dict(_REPLICA_ENV)},
        },
    }


def loop_handle(app_name: str) -> Any:
    """A unary handle to the app's recommender for the calling event loop (the API's): its
    router runs on that loop, not on Serve's router thread, and requests and replies go over
    gRPC, not through the object store (Serve's ``RAY_SERVE_THROUGHPUT_OPTIMIZED`` mode, for
    this handle only). A call took 3-4 ms instead of 6-7 on 2 cores. Make and use it on the
    loop only; Ray must be connected."""
    from ray.serve.handle import DeploymentHandle

    handle = DeploymentHandle(DEPLOYMENT_NAME, app_name)
    handle._init(_run_router_in_separate_loop=False)
    return handle.options(_by_reference=False)


def build(args: dict[str, Any]) -> serve.Application:
    """The application builder named in the reconciler's Serve config."""
    spec = ServingSpec.from_args(args)
    deployment = serve.deployment(RecommenderServer).options(**deployment_options(spec))
    return deployment.bind(spec.to_args())
