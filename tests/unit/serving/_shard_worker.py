"""One expert shard in a spawned process (a module of its own so the child imports little)."""

from __future__ import annotations

from pathlib import Path

import torch
import torch.distributed as dist

from moeplane.serving.runner import ModelRunner, StepPlan
from moeplane.serving.shard import ShardedExperts, load_shard_model


def run_shard(
    rank: int, world: int, init_method: str, path: Path, plans: list[StepPlan], prompts, out: Path
) -> None:
    """Run ``plans`` on shard ``rank`` (rank 0 samples); save its tokens, logits and counts."""
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=init_method, rank=rank, world_size=world)
    try:
        model, info = load_shard_model(path, world, rank)
        runner = ModelRunner(model, sample=rank == 0)
        tokens = [runner.step(plan) for plan in plans]
        with torch.inference_mode():
            logits = [model(torch.tensor([p])).logits[0] for p in prompts]  # (L, V) each
        experts = [m for m in model.modules() if isinstance(m, ShardedExperts)]
        torch.save(
            {
                "info": info,
                "tokens": tokens,
                "logits": logits,
                "counts": runner.expert_counts(),
                "expert_params": sum(p.numel() for m in experts for p in m.parameters()),
                "expert_ranges": [m.expert_range for m in experts],
                "tied": model.lm_head.weight is model.model.embed_tokens.weight,
                "meta": [n for n, p in model.named_parameters() if p.is_meta],
            },
            out / f"rank{rank}.pt",
        )
    finally:
        dist.destroy_process_group()
