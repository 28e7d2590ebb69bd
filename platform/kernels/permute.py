"""Steps 2 and 4 of the MoE pipeline: sort (token, k) pairs by expert, and undo it.

A *row* is one (token, k) pair; there are ``S = tokens * top_k`` of them. Rows
are numbered ``token * top_k + k`` in routing order ("flat" order) and sorted
stably by expert id ("sorted" order), so each expert owns one contiguous run
of sorted rows and a contiguous range of experts owns a contiguous run too.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

__all__ = ["PermutePlan", "permute", "unpermute"]


@dataclass(frozen=True)
class PermutePlan:
    """Where every (token, k) row goes when sorted by expert."""

    sorted_rows: torch.Tensor  # (S,) flat row index at each sorted position
    token_index: torch.Tensor  # (S,) token of each sorted row (sorted_rows // top_k)
    sorted_expert_ids: torch.Tensor  # (S,) expert id of each sorted row, non-decreasing
    inverse: torch.Tensor  # (S,) sorted position of each flat row
    counts: torch.Tensor  # (>= num_experts,) rows per expert id, int64
    num_tokens: int
    top_k: int
    num_experts: int

    @property
    def num_rows(self) -> int:
        return self.num_tokens * self.top_k

    def row_range(self, expert_range: tuple[int, int] | None) -> tuple[int, int]:
        """Sorted rows ``[lo, hi)`` owned by experts ``[start, stop)``.

        Needs the counts on the host (a device sync on GPU), so only call it
        when a slice of experts is really asked for.
        """
        if expert_range is None:
            return 0, self.num_rows
        start, stop = expert_range
        assert 0 <= start <= stop <= self.num_experts, (expert_range, self.num_experts)
        bounds = torch.stack([self.counts[:start].sum(), self.counts[:stop].sum()])  # (2,)
        lo, hi = bounds.tolist()  # one host sync for both
        return lo, hi


def permute(expert_ids: torch.Tensor, num_experts: int) -> PermutePlan:
    """Sort the ``(tokens, top_k)`` routing choices by expert.

    Ids ``>= num_experts`` (e.g. expert-parallel sentinels) are allowed: they
    sort after every real expert and no expert range owns them.
    """
    assert expert_ids.dim() == 2, f"expected (tokens, top_k), got {tuple(expert_ids.shape)}"
    num_tokens, top_k = expert_ids.shape
    flat_ids = expert_ids.reshape(-1)  # (S,)
    sorted_expert_ids, sorted_rows = torch.sort(flat_ids, stable=True)  # (S,), (S,)
    inverse = torch.empty_like(sorted_rows)
    inverse[sorted_rows] = torch.arange(sorted_rows.numel(), device=sorted_rows.device)
    counts = torch.bincount(flat_ids, minlength=num_experts)  # (>= num_experts,)
    return PermutePlan(
        sorted_rows=sorted_rows,
        token_index=sorted_rows // top_k,
        sorted_expert_ids=sorted_expert_ids,
        inverse=inverse,
        counts=counts,
        num_tokens=num_tokens,
        top_k=top_k,
        num_experts=num_experts,
    )


def unpermute(
    expert_out: torch.Tensor,
    weights: torch.Tensor,
    plan: PermutePlan,
    rows: tuple[int, int] | None = None,
) -> torch.Tensor:
    """Weighted sum over top-k of the expert outputs, back in token order.

    Args:
        expert_out: ``(hi - lo, hidden)`` outputs of sorted rows ``[lo, hi)``.
        weights: ``(tokens, top_k)`` routing weights.
        plan: the plan ``expert_out`` was computed with.
        rows: ``(lo, hi)``; rows outside it (experts another shard owns)
            contribute zero. ``None`` means all rows.

    Returns:
        ``(tokens, hidden)`` in ``expert_out``'s dtype. A gather and a
        weighted sum over ``top_k`` rather than ``index_add_``: deterministic
        on GPU.
    """
    lo, hi = (0, plan.num_rows) if rows is None else rows
    assert expert_out.size(0) == hi - lo, (expert_out.shape, lo, hi)
    hidden = expert_out.size(-1)
    if lo == 0 and hi == plan.num_rows:
        index = plan.inverse  # (S,)
        source = expert_out  # (S, hidden)
    else:
        # Rows owned elsewhere read an appended zero row.
        zero = expert_out.new_zeros(1, hidden)
        source = torch.cat([expert_out, zero])  # (hi - lo + 1, hidden)
        index = plan.inverse - lo  # (S,)
        index = index.masked_fill((plan.inverse < lo) | (plan.inverse >= hi), hi - lo)
    gathered = source.index_select(0, index)  # (S, hidden)
    gathered = gathered.view(plan.num_tokens, plan.top_k, hidden)  # (tokens, top_k, hidden)
    # (tokens, 1, top_k) @ (tokens, top_k, hidden): one batched GEMM, ~15x faster on CPU
    # than a broadcast multiply and a sum over the small top_k axis.
    scale = weights.to(gathered.dtype).unsqueeze(1)  # (tokens, 1, top_k)
    return torch.bmm(scale, gathered).squeeze(1)  # (tokens, hidden)
