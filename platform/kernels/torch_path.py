"""SwiGLU experts in plain PyTorch (CPU and GPU), over rows sorted by expert.

Two strategies, picked by size (see ``choose_strategy``; numbers in
docs/kernels.md):

* ``grouped_mm`` -- ``torch._grouped_mm`` over the sorted rows: two calls for
  the whole layer, each active expert's weights read once, no Python loop.
  Used for small and medium batches, and on GPU for bf16.
* ``expert_loop`` -- per *active* expert: gather its rows, ``mm``, SwiGLU,
  ``mm``, scale, ``index_add_`` into the output, all while the slice is hot
  in cache and without any ``(rows, H)`` buffer. Used for large batches on
  CPU, where MKL's big GEMMs beat ``_grouped_mm``'s per-group kernel and
  the Python overhead (~10 us per expert) is noise next to GEMMs of that
  size. Its own autograd Function runs the backward as the same loop.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

__all__ = [
    "TorchPathTuning",
    "choose_strategy",
    "fused_expert_loop",
    "grouped_mm_swiglu",
]

_HAS_GROUPED_MM = hasattr(torch, "_grouped_mm")


@dataclass(frozen=True)
class TorchPathTuning:
    """Measured switch points (bench/kernels.py, docs/kernels.md)."""

    # Mean rows per expert from which the fused per-expert loop beats
    # ``_grouped_mm`` on CPU. Measured (cold weights, 2 cores, H=1024, I=384):
    # grouped_mm ahead at <= 32 rows (97 vs 126 ms at 32), the loop ahead from
    # 64 (86 vs 128 ms) to 256 rows (202 vs 295 ms).
    cpu_loop_min_rows_per_expert: int = 48

    def __post_init__(self) -> None:
        assert self.cpu_loop_min_rows_per_expert >= 1


DEFAULT_TUNING = TorchPathTuning()


def choose_strategy(
    device: torch.device,
    dtype: torch.dtype,
    num_rows: int,
    num_experts: int,
    tuning: TorchPathTuning = DEFAULT_TUNING,
) -> str:
    """``"grouped_mm"`` or ``"expert_loop"`` for this call (a pure function)."""
    if not _HAS_GROUPED_MM:
        return "expert_loop"
    if device.type == "cuda":
        # CUDA grouped_mm is bf16-only (SM80+); the loop covers everything else.
        ok = dtype == torch.bfloat16 and torch.cuda.get_device_capability(device) >= (8, 0)
        return "grouped_mm" if ok else "expert_loop"
    rows_per_expert = num_rows / max(num_experts, 1)
    if rows_per_expert >= tuning.cpu_loop_min_rows_per_expert:
        return "expert_loop"
    return "grouped_mm"


def grouped_mm_swiglu(
    rows: torch.Tensor, gate_up_proj: torch.Tensor, down_proj: torch.Tensor, counts: torch.Tensor
) -> torch.Tensor:
    """``down(silu(gate(x)) * up(x))`` for rows already sorted by expert.

    Args:
        rows: ``(R, H)`` hidden states, grouped by expert.
        gate_up_proj: ``(G, 2I, H)`` weights of the ``G`` experts the rows use.
        down_proj: ``(G, H, I)``.
        counts: ``(G,)`` rows per expert, summing to ``R``.

    Returns:
        ``(R, H)`` unweighted expert outputs, same order as ``rows``.
    """
    assert gate_up_proj.size(0) == down_proj.size(0) == counts.numel()
    assert rows.dtype == gate_up_proj.dtype == down_proj.dtype, "cast before calling"
    if rows.size(0) == 0:
        return rows.new_zeros(0, down_proj.size(1))
    offsets = torch.cumsum(counts, dim=0, dtype=torch.int32)  # (G,)
    inter = down_proj.size(-1)
    gate_up = torch._grouped_mm(rows, gate_up_proj.transpose(-2, -1), offs=offsets)  # (R, 2I)
    act = F.silu(gate_up[:, :inter]) * gate_up[:, inter:]  # (R, I)
    return torch._grouped_mm(act, down_proj.transpose(-2, -1), offs=offsets)  # (R, H)


def fused_expert_loop(
    hidden: torch.Tensor,
    gate_up_proj: torch.Tensor,
    down_proj: torch.Tensor,
    row_weights: torch.Tensor,
    token_index: torch.Tensor,
    counts: torch.Tensor,
) -> torch.Tensor:
    """Weighted expert outputs summed per token, one ``mm`` pair per active expert.

    Args:
        hidden: ``(T, H)``.
        gate_up_proj: ``(G, 2I, H)``; down_proj: ``(G, H, I)``.
        row_weights: ``(R,)`` routing weight of each sorted row.
        token_index: ``(R,)`` token of each sorted row.
        counts: ``(G,)`` rows per expert, summing to ``R``.

    Returns:
        ``(T, H)``: sum over the rows of each token (zero for tokens with none).
    """
    assert gate_up_proj.size(0) == down_proj.size(0) == counts.numel()
    assert row_weights.shape == token_index.shape
    assert hidden.dtype == gate_up_proj.dtype == down_proj.dtype, "cast before calling"
    return _FusedExpertLoop.apply(
        hidden, gate_up_proj, down_proj, row_weights.to(hidden.dtype), token_index, counts.tolist()
    )


def _silu_grad(gate: torch.Tensor) -> torch.Tensor:
    sig = torch.sigmoid(gate)
    return sig * (1 + gate * (1 - sig))


class _FusedExpertLoop(torch.autograd.Function):
    """Per active expert: gather its rows, GEMM, SwiGLU, GEMM, scale by the
    routing weight, ``index_add_`` into the token output.

    No ``(rows, H)`` buffer is ever built: on CPU each fresh 64 MB tensor costs
    ~25 ms of page faults (glibc returns big blocks to the OS), more than the
    copies themselves. Backward needs no recomputation: the routing-weight
    gradient is ``<grad_out @ down, act>``, a by-product of ``grad_act``.
    """

    @staticmethod
    def forward(ctx, hidden, gate_up_proj, down_proj, row_weights, token_index, counts):  # type: ignore[override]
        inter = down_proj.size(-1)
        out = torch.zeros_like(hidden)  # (T, H)
        needs_grad = any(ctx.needs_input_grad[:4])
        # Kept for backward: the pre-activation, (R, 2I), so backward skips GEMM 1.
        gate_up_all = hidden.new_empty(token_index.numel(), 2 * inter) if needs_grad else None
        start = 0
        for expert, count in enumerate(counts):
            if count == 0:
                continue
            stop = start + count
            tokens = token_index[start:stop]  # (c,)
            kept = None if gate_up_all is None else gate_up_all[start:stop]
            x = hidden.index_select(0, tokens)  # (c, H)
            gate_up = torch.mm(x, gate_up_proj[expert].t(), out=kept)  # (c, 2I)
            act = F.silu(gate_up[:, :inter]).mul_(gate_up[:, inter:])  # (c, I)
            y = torch.mm(act, down_proj[expert].t())  # (c, H)
            out.index_add_(0, tokens, y.mul_(row_weights[start:stop].unsqueeze(-1)))
            start = stop
        assert start == token_index.numel(), "counts must cover every row"
        if needs_grad:
            ctx.save_for_backward(hidden, gate_up_proj, down_proj, row_weights, token_index)
            ctx.gate_up_all = gate_up_all
        ctx.counts = counts
        return out

    @staticmethod
    def backward(ctx, grad_out):  # type: ignore[override]
        hidden, gate_up_proj, down_proj, row_weights, token_index = ctx.saved_tensors
        gate_up_all = ctx.gate_up_all
        inter = down_proj.size(-1)
        grad_out = grad_out.contiguous()
        need = ctx.needs_input_grad
        grad_hidden = torch.zeros_like(hidden) if need[0] else None
        grad_gu = torch.zeros_like(gate_up_proj) if need[1] else None
        grad_down = torch.zeros_like(down_proj) if need[2] else None
        grad_rw = torch.zeros_like(row_weights) if need[3] else None
        start = 0
        for expert, count in enumerate(ctx.counts):
            if count == 0:
                continue
            stop = start + count
            tokens = token_index[start:stop]  # (c,)
            rw = row_weights[start:stop].unsqueeze(-1)  # (c, 1)
            gate_up = gate_up_all[start:stop]  # (c, 2I)
            gate, up = gate_up[:, :inter], gate_up[:, inter:]  # (c, I) each
            silu_gate = F.silu(gate)
            act = silu_gate * up  # (c, I)
            grad_token = grad_out.index_select(0, tokens)  # (c, H)
            grad_act_unweighted = torch.mm(grad_token, down_proj[expert])  # (c, I)
            if grad_rw is not None:
                grad_rw[start:stop] = (grad_act_unweighted * act).sum(-1)
            if grad_down is not None:
                torch.mm((grad_token * rw).t(), act, out=grad_down[expert])  # (H, I)
            grad_act = grad_act_unweighted.mul_(rw)  # (c, I)
            grad_gate_up = torch.cat(
                [grad_act * up * _silu_grad(gate), grad_act * silu_gate], dim=1
            )  # (c, 2I)
            if grad_gu is not None:
                x = hidden.index_select(0, tokens)  # (c, H)
                torch.mm(grad_gate_up.t(), x, out=grad_gu[expert])  # (2I, H)
            if grad_hidden is not None:
                grad_hidden.index_add_(0, tokens, torch.mm(grad_gate_up, gate_up_proj[expert]))
            start = stop
        return grad_hidden, grad_gu, grad_down, grad_rw, None, None
