"""Plain-PyTorch references for moeplane.kernels, same signatures, obviously correct."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def ref_route(
    router_logits: torch.Tensor, top_k: int, renormalize: bool
) -> tuple[torch.Tensor, torch.Tensor]:
    probs = F.softmax(router_logits.double(), dim=-1)  # (tokens, experts)
    weights, expert_ids = torch.topk(probs, top_k, dim=-1)  # (tokens, top_k)
    if renormalize:
        weights = weights / weights.sum(dim=-1, keepdim=True)
    return weights.to(router_logits.dtype), expert_ids


def ref_experts(
    hidden: torch.Tensor,
    gate_up_proj: torch.Tensor,
    down_proj: torch.Tensor,
    weights: torch.Tensor,
    expert_ids: torch.Tensor,
    *,
    expert_range: tuple[int, int] | None = None,
) -> torch.Tensor:
    """A loop over every expert, token by token routing; fp32 math."""
    num_held = gate_up_proj.size(0)
    start, stop = (0, num_held) if expert_range is None else expert_range
    local_weights = expert_range is not None and num_held == stop - start
    inter = down_proj.size(-1)
    out = torch.zeros(hidden.shape, dtype=torch.float32, device=hidden.device)
    for expert in range(start, stop):
        tokens, slot = torch.where(expert_ids == expert)  # (n,), (n,)
        if tokens.numel() == 0:
            continue
        index = expert - start if local_weights else expert
        x = hidden[tokens].float()  # (n, H)
        gate_up = x @ gate_up_proj[index].float().t()  # (n, 2I)
        act = F.silu(gate_up[:, :inter]) * gate_up[:, inter:]  # (n, I)
        y = act @ down_proj[index].float().t()  # (n, H)
        out = out.index_add(0, tokens, y * weights[tokens, slot].float().unsqueeze(-1))
    return out.to(hidden.dtype)
