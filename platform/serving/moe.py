"""The expert-sharded gang: S shard actors that run one model in lock-step.

A replica of a MoE deployment with ``expert_shards = S > 1`` reserves S+1 bundles
(``placement_group_bundles``, STRICT_PACK: one node, so gloo's rendezvous is the replica's own
address). Bundle 0 is the replica itself (engine loop, tokenizer, no weights); bundle i+1 runs
shard i. Shard i holds every non-expert weight and experts [i*E/S, (i+1)*E/S) of every MoE
layer, loaded straight from the checkpoint (`moeplane.serving.shard.load_shard_model`).

One step = one `ExpertShard.step` call on every shard with the same plan: each runs the same
attention, router and its local experts, and one all-reduce per MoE layer sums the partial
expert outputs, so every shard ends the step with the unsharded model's hidden states. Only
shard 0 samples. The replica's single engine loop is the only caller, so the shards' collectives
always line up (independent concurrent steps would interleave all-reduces and deadlock).

The shard actors are owned by the replica: when Serve replaces a replica, its shards die with
it; when a shard dies, the replica's health check fails and Serve replaces the replica.
"""

from __future__ import annotations

import asyncio
import socket
from dataclasses import asdict
from typing import Any

import ray
from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

from moeplane.serving.runner import StepPlan
from moeplane.serving.spec import Resources

__all__ = ["ExpertShard", "ShardGang"]


class ExpertShard:
    """One shard of a replica's model (a Ray actor; see ShardGang)."""

    def __init__(
        self,
        path: str,
        num_shards: int,
        rank: int,
        init_method: str,
        num_threads: int,
        packed_weights: str = "auto",
    ) -> None:
        import torch
        import torch.distributed as dist

        from moeplane.kernels import cpu_native
        from moeplane.serving.runner import ModelRunner
        from moeplane.serving.shard import load_shard_model

        torch.set_num_threads(num_threads)
        cpu_native.packed_copies(packed_weights)
        dist.init_process_group("gloo", init_method=init_method, rank=rank, world_size=num_shards)
        model, self.shard_info = load_shard_model(path, num_shards, rank)
        self.runner = ModelRunner(model, sample=rank == 0)

    def step(self, plan: StepPlan) -> dict[str, int]:
        return self.runner.step(plan)

    def info(self) -> dict[str, Any]:
        return asdict(self.shard_info)

    def expert_counts(self) -> list[list[int]]:
        return self.runner.expert_counts()

    def ping(self) -> bool:
        return True


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class ShardGang:
    """Starts the S shard actors in the calling replica's placement group and drives them."""

    def __init__(self, path: str, num_shards: int, resources: Resources):
        pg = ray.util.get_current_placement_group()
        assert pg is not None, "an expert-sharded replica must run in its placement group"
        init_method = f"tcp://127.0.0.1:{_free_port()}"  # STRICT_PACK: all shards on this node
        actor = ray.remote(ExpertShard)
        self.shards = [
            actor.options(
                num_cpus=resources.cpus_per_shard,
                num_gpus=resources.gpus_per_shard,
                max_restarts=0,  # a lost shard breaks the gang: the replica is replaced whole
                scheduling_strategy=PlacementGroupSchedulingStrategy(
                    placement_group=pg, placement_group_bundle_index=rank + 1
                ),
            ).remote(
                path,
                num_shards,
                rank,
                init_method,
                max(1, int(resources.cpus_per_shard)),
                resources.packed_weights,
            )
            for rank in range(num_shards)
        ]
        self.infos = ray.get([s.info.remote() for s in self.shards])  # waits for every load

    async def step(self, plan: StepPlan) -> dict[str, int]:
        results = await asyncio.gather(*(s.step.remote(plan) for s in self.shards))
        return results[0]  # only shard 0 samples

    async def expert_counts(self) -> list[list[int]]:
        return await self.shards[0].expert_counts.remote()

    async def ping(self, timeout_s: float = 10.0) -> None:
        await asyncio.wait_for(
            asyncio.gather(*(s.ping.remote() for s in self.shards)), timeout=timeout_s
        )
