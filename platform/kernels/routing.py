"""Step 1 of the MoE pipeline: pick ``top_k`` experts per token from router logits."""

from __future__ import annotations

import torch

__all__ = ["route"]


def route(
    router_logits: torch.Tensor, top_k: int, renormalize: bool
) -> tuple[torch.Tensor, torch.Tensor]:
    """Softmax (in fp32) over experts, then top-k.

    Matches transformers' ``Qwen3MoeTopKRouter``: ``renormalize`` is Qwen3's
    ``norm_topk_prob`` (the chosen probabilities are rescaled to sum to one).

    Args:
        router_logits: ``(tokens, num_experts)``.
        top_k: experts per token.
        renormalize: rescale the top-k probabilities to sum to one.

    Returns:
        ``(weights, expert_ids)``, both ``(tokens, top_k)``; ``weights`` in the
        logits' dtype, ``expert_ids`` int64.
    """
    assert router_logits.dim() == 2, f"expected (tokens, experts), got {tuple(router_logits.shape)}"
    assert 0 < top_k <= router_logits.size(-1), f"top_k={top_k} out of range"
    probs = torch.softmax(router_logits, dim=-1, dtype=torch.float32)  # (tokens, experts)
    weights, expert_ids = torch.topk(probs, top_k, dim=-1)  # (tokens, top_k)
    if renormalize:
        weights = weights / weights.sum(dim=-1, keepdim=True)
    return weights.to(router_logits.dtype), expert_ids
