"""SwiGLU experts in plain PyTorch (CPU and GPU), over rows sorted by expert.

Two strategies, picked by size (see ``choose_strategy``; numbers in
docs/kernels.md):

* ``grouped_mm`` -- ``torch._grouped_mm`` over the sorted rows: two calls for
  the whole layer, each active expert's weights read once, no Python loop.
  Used on GPU for bf16, and on CPU without oneDNN for small and medium batches.
* ``expert_loop`` -- per *active* expert: gather its rows, GEMM, SwiGLU,
  GEMM, scale, ``index_add_`` into the output, all while the slice is hot
  in cache and without any ``(rows, H)`` buffer. Its own autograd Function
  runs the backward as the same loop. Used on CPU at every size when
  oneDNN is there: its GEMMs (``torch.ops.mkldnn._linear_pointwise``, the op
  Inductor's CPU backend uses) ran the whole layer 1.4-2.2x faster than
  ``_grouped_mm`` or MKL's sgemm (which both use, and which on an AMD
  AVX-512 host streamed thin GEMMs at 10-17 GB/s where ``sum`` reads 50).
  Without oneDNN it runs large batches only, with ``F.linear``. The Python
  and op-call overhead, ~50 us per active expert, is up to a fifth of the
  layer at 32 tokens with 128 experts.

Small inference batches on CPU skip both: ``use_native`` sends them to the C
kernel (``cpu_native``).
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F

__all__ = [
    "TorchPathTuning",
    "choose_strategy",
    "cpu_gemm",
    "fused_expert_loop",
    "grouped_mm_swiglu",
    "prepack",
    "use_native",
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
    # GEMMs of the loop on CPU: "auto" (oneDNN where torch has it and the
    # experts are big enough), "onednn" or "aten" (``F.linear``, MKL's sgemm).
    cpu_gemm: str = "auto"
    # "auto" uses oneDNN from this many elements per expert matrix (H * I):
    # each oneDNN call costs ~12 us against ~2 us for ``F.linear``, which wins
    # on small experts. Measured (E64, 8-128 tokens): H256/I128 aten 2.1 vs
    # 3.2 ms; H512/I256 (2**17) onednn 4.9-10.0 vs 5.6-11.7 ms.
    onednn_min_expert_elements: int = 2**17
    # Up to this many mean rows per expert, inference on CPU (float32) runs the
    # C kernel (cpu_native), which streams each weight once for all its rows.
    # Its time over the oneDNN loop's (E64/E128, H1024 I384, cold, 2 cores):
    # 0.4-0.5 at <= 4 rows, 0.56-0.6 at 16, 0.79 at 32-64, 0.89-0.95 at
    # 128-256 (the largest measured).
    native_max_rows_per_expert: float = 256
    # ... and while its scratch (tokens * top_k * (2H + 3I) floats) fits here;
    # cpu_native keeps buffers up to this size per thread.
    native_max_scratch_bytes: int = 256 * 2**20

    def __post_init__(self) -> None:
        assert self.cpu_loop_min_rows_per_expert >= 1
        assert self.cpu_gemm in ("auto", "onednn", "aten"), f"bad cpu_gemm {self.cpu_gemm!r}"


DEFAULT_TUNING = TorchPathTuning()


def choose_strategy(
    device: torch.device,
    dtype: torch.dtype,
    num_rows: int,
    num_experts: int,
    tuning: TorchPathTuning = DEFAULT_TUNING,
    *,
    gemm: str = "aten",
    sizes: tuple[int, int] = (0, 0),
) -> str:
    """``"grouped_mm"`` or ``"expert_loop"`` for this call (a pure function).

    ``gemm`` is the loop's CPU GEMM (``cpu_gemm``): with oneDNN the loop wins
    at every size measured (bench/kernels.py, docs/kernels.md). ``sizes`` is
    ``(H, I)``: ``_grouped_mm`` needs rows of a multiple of 16 bytes.
    """
    if not _HAS_GROUPED_MM or any(n * dtype.itemsize % 16 for n in sizes):
        return "expert_loop"
    if device.type == "cuda":
        # CUDA grouped_mm is bf16-only (SM80+); the loop covers everything else.
        ok = dtype == torch.bfloat16 and torch.cuda.get_device_capability(device) >= (8, 0)
        return "grouped_mm" if ok else "expert_loop"
    if gemm == "onednn":
        return "expert_loop"
    rows_per_expert = num_rows / max(num_experts, 1)
    if rows_per_expert >= tuning.cpu_loop_min_rows_per_expert:
        return "expert_loop"
    return "grouped_mm"


def use_native(
    device: torch.device,
    dtype: torch.dtype,
    num_rows: int,
    num_experts: int,
    tuning: TorchPathTuning = DEFAULT_TUNING,
    *,
    scratch_bytes: int = 0,
) -> bool:
    """Whether a forward-only call of this size, needing ``scratch_bytes`` of C
    scratch, should run the C kernel (a pure function)."""
    if device.type != "cpu" or dtype != torch.float32:
        return False
    if scratch_bytes > tuning.native_max_scratch_bytes:
        return False
    return num_rows / max(num_experts, 1) <= tuning.native_max_rows_per_expert


def prepack(
    max_rows_per_expert: int,
    packed_min_rows: int,
    seen_before: bool,
    enabled: bool,
) -> bool:
    """Whether the C kernel packs a weight tensor now and keeps the copy (as much memory
    again), where copies are ``enabled`` (``cpu_native.packed_copies``): on the second call
    with that tensor (not a view made per call), once an expert has the rows
    (``packed_min_rows``, the build's) for the packed path, which then stops transposing
    the weights on every call (1.11-1.30x faster at 64-512 tokens on a Xeon). Decode-only
    processes never pack."""
    return enabled and seen_before and max_rows_per_expert >= packed_min_rows


def cpu_gemm(
    device: torch.device,
    dtype: torch.dtype,
    expert_elements: int,
    tuning: TorchPathTuning = DEFAULT_TUNING,
) -> str:
    """The expert loop's GEMM, ``"onednn"`` or ``"aten"``, for experts of
    ``expert_elements`` (``H * I``) on ``device`` in ``dtype``."""
    if device.type != "cpu" or dtype not in (torch.float32, torch.bfloat16):
        return "aten"
    if tuning.cpu_gemm == "aten":
        return "aten"
    if tuning.cpu_gemm == "onednn":
        assert _onednn_works(dtype), f"cpu_gemm='onednn' but oneDNN's linear fails here in {dtype}"
        return "onednn"
    big = expert_elements >= tuning.onednn_min_expert_elements
    return "onednn" if big and _onednn_works(dtype) else "aten"


def _onednn_linear(x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """``x @ weight.T`` through oneDNN (no bias, no fused op)."""
    return torch.ops.mkldnn._linear_pointwise(x, weight, None, "none", [], "")


@functools.cache
def _onednn_works(dtype: torch.dtype) -> bool:
    """Whether this torch build runs oneDNN's linear in ``dtype`` on this CPU, and
    right (checked once per dtype). bfloat16 fails on CPUs without AVX-512 (e.g.
    AMD Zen 3: "could not create a primitive descriptor")."""
    if not torch.backends.mkldnn.is_available():
        return False
    try:
        # fixed values: drawing random ones would move the caller's seeded RNG stream
        x = torch.arange(15, dtype=torch.float32).reshape(3, 5) / 7
        w = torch.arange(20, dtype=torch.float32).reshape(4, 5) / 11
        x, w = x.to(dtype), w.to(dtype)
        tol = 1e-4 if dtype == torch.float32 else 2e-2
        got = _onednn_linear(x, w).float()
        return bool(torch.allclose(got, x.float() @ w.float().t(), rtol=tol, atol=tol))
    except (AttributeError, RuntimeError):  # op missing or not built for this CPU
        return False


_LINEAR: dict[str, Callable[[torch.Tensor, torch.Tensor], torch.Tensor]] = {
    "aten": F.linear,
    "onednn": _onednn_linear,
}


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
    *,
    gemm: str = "aten",
) -> torch.Tensor:
    """Weighted expert outputs summed per token, one GEMM pair per active expert.

    Args:
        hidden: ``(T, H)``.
        gate_up_proj: ``(G, 2I, H)``; down_proj: ``(G, H, I)``.
        row_weights: ``(R,)`` routing weight of each sorted row.
        token_index: ``(R,)`` token of each sorted row.
        counts: ``(G,)`` rows per expert, summing to ``R``.
        gemm: ``"aten"`` (``F.linear``) or ``"onednn"`` (CPU; see ``cpu_gemm``).

    Returns:
        ``(T, H)``: sum over the rows of each token (zero for tokens with none).
    """
    assert gate_up_proj.size(0) == down_proj.size(0) == counts.numel()
    assert row_weights.shape == token_index.shape
    assert hidden.dtype == gate_up_proj.dtype == down_proj.dtype, "cast before calling"
    linear = _LINEAR[gemm]
    return _FusedExpertLoop.apply(
        hidden,
        gate_up_proj,
        down_proj,
        row_weights.to(hidden.dtype),
        token_index,
        counts.tolist(),
        linear,
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
    def forward(ctx, hidden, gate_up_proj, down_proj, row_weights, token_index, counts, linear):  # type: ignore[override]
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
            gate_up = linear(x, gate_up_proj[expert])  # (c, 2I)
            if kept is not None:
                kept.copy_(gate_up)
            act = F.silu(gate_up[:, :inter]).mul_(gate_up[:, inter:])  # (c, I)
            y = linear(act, down_proj[expert])  # (c, H)
            out.index_add_(0, tokens, y.mul_(row_weights[start:stop].unsqueeze(-1)))
            start = stop
        assert start == token_index.numel(), "counts must cover every row"
        if needs_grad:
            ctx.save_for_backward(hidden, gate_up_proj, down_proj, row_weights, token_index)
            ctx.gate_up_all = gate_up_all
        ctx.counts = counts
        ctx.linear = linear
        return out

    @staticmethod
    def backward(ctx, grad_out):  # type: ignore[override]
        hidden, gate_up_proj, down_proj, row_weights, token_index = ctx.saved_tensors
        gate_up_all = ctx.gate_up_all
        inter = down_proj.size(-1)
        linear = ctx.linear
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
            grad_act_unweighted = linear(grad_token, down_proj[expert].t())  # (c, I)
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
                grad_hidden.index_add_(0, tokens, linear(grad_gate_up, gate_up_proj[expert].t()))
            start = stop
        return grad_hidden, grad_gu, grad_down, grad_rw, None, None, None
