"""SwiGLU experts in plain PyTorch (CPU and GPU), over rows sorted by expert.

Two strategies, picked by size (see ``choose_strategy``; numbers in
docs/kernels.md):

* ``grouped_mm`` -- ``torch._grouped_mm`` over the sorted rows: two calls for
  the whole layer, each active expert's weights read once, no Python loop.
  Used for small and medium batches, and on GPU for bf16.
* ``expert_loop`` -- one ``torch.mm`` pair per *active* expert on contiguous
  row slices, SwiGLU fused in between while the slice is hot in cache. On CPU
  MKL's large GEMMs beat ``_grouped_mm``'s per-group kernel once experts get
  tens of rows; the Python overhead (~10 us per expert) is noise next to
  GEMMs of that size. Has its own autograd Function so the backward is the
  same loop.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

__all__ = ["TorchPathTuning", "choose_strategy", "swiglu_experts_sorted"]

_HAS_GROUPED_MM = hasattr(torch, "_grouped_mm")


@dataclass(frozen=True)
class TorchPathTuning:
    """Measured switch points (bench/kernels.py, docs/kernels.md)."""

    # Mean rows per expert from which the per-expert MKL loop beats
    # ``_grouped_mm`` on CPU: measured (cold weights, 2 cores) a tie at 128
    # rows, the loop ~20% faster at 256, ``_grouped_mm`` faster below 64.
    cpu_loop_min_rows_per_expert: int = 128

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


def swiglu_experts_sorted(
    rows: torch.Tensor,
    gate_up_proj: torch.Tensor,
    down_proj: torch.Tensor,
    counts: torch.Tensor,
    strategy: str,
) -> torch.Tensor:
    """``down(silu(gate(x)) * up(x))`` for rows already sorted by expert.

    Args:
        rows: ``(R, H)`` hidden states, grouped by expert.
        gate_up_proj: ``(G, 2I, H)`` weights of the ``G`` experts the rows use.
        down_proj: ``(G, H, I)``.
        counts: ``(G,)`` rows per expert, summing to ``R``.
        strategy: from ``choose_strategy``.

    Returns:
        ``(R, H)`` unweighted expert outputs, same order as ``rows``.
    """
    assert gate_up_proj.size(0) == down_proj.size(0) == counts.numel()
    assert rows.dtype == gate_up_proj.dtype == down_proj.dtype, "cast before calling"
    if rows.size(0) == 0:
        return rows.new_zeros(0, down_proj.size(1))
    if strategy == "grouped_mm":
        return _grouped_mm_swiglu(rows, gate_up_proj, down_proj, counts)
    assert strategy == "expert_loop", strategy
    return _ExpertLoopSwiGLU.apply(rows, gate_up_proj, down_proj, counts.tolist())


def _grouped_mm_swiglu(
    rows: torch.Tensor, gate_up_proj: torch.Tensor, down_proj: torch.Tensor, counts: torch.Tensor
) -> torch.Tensor:
    offsets = torch.cumsum(counts, dim=0, dtype=torch.int32)  # (G,)
    inter = down_proj.size(-1)
    gate_up = torch._grouped_mm(rows, gate_up_proj.transpose(-2, -1), offs=offsets)  # (R, 2I)
    act = F.silu(gate_up[:, :inter]) * gate_up[:, inter:]  # (R, I)
    return torch._grouped_mm(act, down_proj.transpose(-2, -1), offs=offsets)  # (R, H)


def _silu_grad(gate: torch.Tensor) -> torch.Tensor:
    sig = torch.sigmoid(gate)
    return sig * (1 + gate * (1 - sig))


class _ExpertLoopSwiGLU(torch.autograd.Function):
    """Loop over active experts; forward and backward are both plain ``mm``s."""

    @staticmethod
    def forward(ctx, rows, gate_up_proj, down_proj, counts: list[int]):  # type: ignore[override]
        inter = down_proj.size(-1)
        out = rows.new_empty(rows.size(0), down_proj.size(1))  # (R, H)
        needs_grad = any(ctx.needs_input_grad[:3])
        # Only what backward needs: the pre-activation (R, 2I) -- far smaller
        # than weights -- so backward does not redo the first GEMM.
        gate_up_all = rows.new_empty(rows.size(0), 2 * inter) if needs_grad else None
        start = 0
        for expert, count in enumerate(counts):
            if count == 0:
                continue
            stop = start + count
            kept = None if gate_up_all is None else gate_up_all[start:stop]
            gate_up = torch.mm(rows[start:stop], gate_up_proj[expert].t(), out=kept)  # (c, 2I)
            act = F.silu(gate_up[:, :inter]) * gate_up[:, inter:]  # (c, I)
            torch.mm(act, down_proj[expert].t(), out=out[start:stop])  # (c, H)
            start = stop
        assert start == rows.size(0), "counts must cover every row"
        if needs_grad:
            ctx.save_for_backward(rows, gate_up_proj, down_proj, gate_up_all)
        ctx.counts = counts
        return out

    @staticmethod
    def backward(ctx, grad_out):  # type: ignore[override]
        rows, gate_up_proj, down_proj, gate_up_all = ctx.saved_tensors
        inter = down_proj.size(-1)
        grad_out = grad_out.contiguous()
        need_rows, need_gu, need_down = ctx.needs_input_grad[:3]
        grad_rows = torch.zeros_like(rows) if need_rows else None
        grad_gu = torch.zeros_like(gate_up_proj) if need_gu else None
        grad_down = torch.zeros_like(down_proj) if need_down else None
        start = 0
        for expert, count in enumerate(ctx.counts):
            if count == 0:
                continue
            stop = start + count
            gate_up = gate_up_all[start:stop]  # (c, 2I)
            gate, up = gate_up[:, :inter], gate_up[:, inter:]  # (c, I) each
            silu_gate = F.silu(gate)
            grad_y = grad_out[start:stop]  # (c, H)
            if grad_down is not None:
                torch.mm(grad_y.t(), silu_gate * up, out=grad_down[expert])  # (H, I)
            grad_act = torch.mm(grad_y, down_proj[expert])  # (c, I)
            grad_gate_up = torch.cat(
                [grad_act * up * _silu_grad(gate), grad_act * silu_gate], dim=1
            )  # (c, 2I)
            if grad_gu is not None:
                torch.mm(grad_gate_up.t(), rows[start:stop], out=grad_gu[expert])  # (2I, H)
            if grad_rows is not None:
                torch.mm(grad_gate_up, gate_up_proj[expert], out=grad_rows[start:stop])  # (c, H)
            start = stop
        return grad_rows, grad_gu, grad_down, None
