"""``experts``: the whole expert computation, permute -> SwiGLU -> unpermute.

Picks the backend (Triton on CUDA for inference, the torch path otherwise)
and handles ``expert_range`` -- the contiguous slice of experts an expert
shard owns.
"""

from __future__ import annotations

import torch

from moeplane.kernels import cpu_native, torch_path, triton_path
from moeplane.kernels.permute import permute, unpermute

__all__ = ["experts"]

_BACKENDS = ("auto", "torch", "triton", "native")


def experts(
    hidden: torch.Tensor,
    gate_up_proj: torch.Tensor,
    down_proj: torch.Tensor,
    weights: torch.Tensor,
    expert_ids: torch.Tensor,
    *,
    expert_range: tuple[int, int] | None = None,
    backend: str = "auto",
) -> torch.Tensor:
    """Weighted sum of SwiGLU experts for each token, in transformers' layout.

    Args:
        hidden: ``(tokens, H)``.
        gate_up_proj: ``(E_w, 2I, H)``: gate rows ``[:I]``, up rows ``[I:]``.
        down_proj: ``(E_w, H, I)``.
        weights: ``(tokens, top_k)`` routing weights (from ``route``).
        expert_ids: ``(tokens, top_k)`` *global* expert ids.
        expert_range: ``(start, stop)``: compute only experts ``start..stop-1``
            and return their partial sum (pairs routed elsewhere add zero).
            The weights may hold either all experts (``E_w >= stop``, sliced
            here without a copy) or only the shard's slice
            (``E_w == stop - start``, local index ``id - start``). When both
            readings fit (``start == 0``) they are the same thing.
        backend: ``"auto"``, ``"torch"``, ``"triton"`` (needs the package, and
            a GPU or ``TRITON_INTERPRET=1``; no autograd) or ``"native"`` (the
            C kernel for small batches on CPU, float32; no autograd). ``"auto"``
            picks Triton on CUDA and the C kernel on CPU at small batches when
            no gradient is needed, else the torch path.

    Returns:
        ``(tokens, H)`` in ``hidden``'s dtype. Differentiable w.r.t. ``hidden``,
        ``weights``, ``gate_up_proj`` and ``down_proj`` on the torch backend.
    """
    # Shapes are read once: in a decode step every Python call here runs with cold caches
    # (~5 us each; cpu_native._run).
    hs, gs, ds = hidden.shape, gate_up_proj.shape, down_proj.shape
    assert len(hs) == 2, f"hidden must be (tokens, H), got {tuple(hs)}"
    assert weights.shape == expert_ids.shape and weights.shape[0] == hs[0]
    assert len(gs) == 3 and len(ds) == 3 and gs[0] == ds[0]
    assert gs[1] == 2 * ds[2], "gate_up must be (E, 2I, H)"
    assert gs[2] == ds[1] == hs[1]
    assert backend in _BACKENDS, f"backend must be one of {_BACKENDS}"

    num_experts, start = gs[0], 0
    if expert_range is not None:
        gate_up_proj, down_proj, num_experts, start = _shard_weights(
            gate_up_proj, down_proj, expert_range
        )
    out_dtype = hidden.dtype
    # transformers casts activations to the weights' dtype (a no-op .to costs ~20 us cold)
    x = _as(hidden, gate_up_proj.dtype)

    needs_grad = torch.is_grad_enabled() and any(
        t.requires_grad for t in (x, gate_up_proj, down_proj, weights)
    )
    if backend in ("triton", "native"):
        assert not needs_grad, f"the {backend} path is forward-only; use backend='torch' to train"
    # Triton is forward-only here: under autograd the torch path runs.
    auto_triton = x.is_cuda and not needs_grad and triton_path.is_available()
    if backend == "triton" or (backend == "auto" and auto_triton):
        out = triton_path.fused_experts(x, gate_up_proj, down_proj, weights, expert_ids, start)
        return _as(out, out_dtype)

    if backend == "native" or (
        backend == "auto"
        and _auto_native(x, down_proj, needs_grad, expert_ids, expert_range, num_experts)
    ):
        out = cpu_native.inference_experts(
            x, gate_up_proj, down_proj, weights, expert_ids, first_expert=start
        )
        return _as(out, out_dtype)

    plan = permute(expert_ids, start + num_experts)
    lo, hi = plan.row_range(None if expert_range is None else (start, start + num_experts))
    counts = plan.counts[start : start + num_experts]  # (G,)
    token_index = plan.token_index[lo:hi]  # (R,)
    gemm = torch_path.cpu_gemm(x.device, x.dtype, down_proj.size(1) * down_proj.size(2))
    strategy = torch_path.choose_strategy(
        x.device, x.dtype, hi - lo, num_experts, gemm=gemm, sizes=tuple(down_proj.shape[1:])
    )
    if strategy == "grouped_mm":
        rows = x.index_select(0, token_index)  # (R, H)
        expert_out = torch_path.grouped_mm_swiglu(rows, gate_up_proj, down_proj, counts)
        return unpermute(expert_out, weights, plan, rows=(lo, hi)).to(out_dtype)
    assert strategy == "expert_loop", strategy
    row_weights = weights.reshape(-1)[plan.sorted_rows[lo:hi]]  # (R,)
    out = torch_path.fused_expert_loop(
        x, gate_up_proj, down_proj, row_weights, token_index, counts, gemm=gemm
    )
    return out.to(out_dtype)


def _as(t: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    return t if t.dtype == dtype else t.to(dtype)


def _shard_weights(
    gate_up_proj: torch.Tensor,
    down_proj: torch.Tensor,
    expert_range: tuple[int, int],
) -> tuple[torch.Tensor, torch.Tensor, int, int]:
    """The weights of a shard's experts, their count and first global id."""
    start, stop = expert_range
    assert 0 <= start <= stop, f"bad expert_range {expert_range}"
    held = gate_up_proj.size(0)
    if held == stop - start:  # the shard's own slice
        return gate_up_proj, down_proj, held, start
    assert held >= stop, f"weights hold {held} experts: neither all of them nor {expert_range}"
    return gate_up_proj[start:stop], down_proj[start:stop], stop - start, start


def _auto_native(
    x: torch.Tensor,
    down_proj: torch.Tensor,
    needs_grad: bool,
    expert_ids: torch.Tensor,
    expert_range: tuple[int, int] | None,
    num_experts: int,
) -> bool:
    # cheap checks first: the first availability check builds the C library
    if needs_grad or not x.is_cpu or x.dtype != torch.float32:
        return False
    if not cpu_native.available():
        return False
    rows = expert_ids.numel()
    if expert_range is not None:  # only the pairs this shard owns
        rows = int(((expert_ids >= expert_range[0]) & (expert_ids < expert_range[1])).sum())
    scratch = cpu_native.scratch_bytes(expert_ids.numel(), x.shape[1], down_proj.shape[2])
    return torch_path.use_native(x.device, x.dtype, rows, num_experts, scratch_bytes=scratch)
