"""Triton experts for CUDA, in the style of vLLM's ``fused_moe``.

The one place Triton is imported: without it (or without a GPU and without
``TRITON_INTERPRET=1``) ``is_available()`` is False and nothing here runs.

Pipeline: a block-aligned sort (each expert's rows padded to ``BLOCK_M`` so a
program block never mixes experts), then one kernel per GEMM:

1. ``gate_up`` kernel: gathers token rows, computes the gate and up tiles of
   the same columns and writes ``silu(gate) * up`` -- the ``(R, 2I)``
   pre-activation never reaches memory.
2. ``down`` kernel: multiplies by the routing weight and writes each (token,
   k) row in routing order; a ``sum`` over ``top_k`` finishes (deterministic,
   no atomics).

Forward only: under autograd the torch path runs (see api.experts).
Triton itself is imported on first use (``_triton_kernels``), so importing
``moeplane.kernels`` never imports it, and ``TRITON_INTERPRET`` only has to be
set before that first use.
"""

from __future__ import annotations

import functools
import importlib
import importlib.util
import os

import torch

__all__ = ["BLOCK_CONFIGS", "align_block_size", "fused_experts", "is_available"]

# Tuned block sizes are data: keyed by the largest mean rows per expert they
# serve. Untuned on real GPUs (no GPU in this project's CI); vLLM's defaults.
# A config may also name the launch's "num_warps" and "num_stages" (Triton's
# defaults otherwise); bench/triton_configs.py times candidates on a GPU.
BLOCK_CONFIGS: tuple[tuple[float, dict[str, int]], ...] = (
    (16.0, {"BLOCK_M": 16, "BLOCK_N": 64, "BLOCK_K": 64}),
    (128.0, {"BLOCK_M": 32, "BLOCK_N": 64, "BLOCK_K": 64}),
    (float("inf"), {"BLOCK_M": 64, "BLOCK_N": 128, "BLOCK_K": 32}),
)


_LAUNCH_OPTIONS = ("num_warps", "num_stages")


def is_available() -> bool:
    """Triton installed, and a GPU or the CPU interpreter to run it on."""
    if importlib.util.find_spec("triton") is None:
        return False
    return torch.cuda.is_available() or os.environ.get("TRITON_INTERPRET") == "1"


def pick_config(rows_per_expert: float) -> dict[str, int]:
    for limit, config in BLOCK_CONFIGS:
        if rows_per_expert <= limit:
            return config
    raise AssertionError("BLOCK_CONFIGS must end with an unbounded entry")


def align_block_size(
    expert_ids: torch.Tensor, num_experts: int, start: int, block_m: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """vLLM's ``moe_align_block_size`` in torch, without a host sync.

    Returns:
        ``sorted_rows``: ``(P,)`` flat (token * top_k + k) row of each padded
        slot, ``S`` (one past the last row) for padding; and
        ``block_expert``: ``(P // block_m,)`` local expert of each block,
        ``-1`` for unused blocks. ``P`` is the worst case
        ``S + num_experts * (block_m - 1)`` rounded up to ``block_m``.
    """
    num_rows = expert_ids.numel()
    device = expert_ids.device
    local = expert_ids.reshape(-1) - start  # (S,)
    owned = (local >= 0) & (local < num_experts)
    local = torch.where(owned, local, num_experts)  # others sort last, into a dropped bin
    sorted_local, order = torch.sort(local, stable=True)  # (S,), (S,)
    counts = torch.bincount(local, minlength=num_experts + 1)[:num_experts]  # (G,)
    padded = (counts + block_m - 1) // block_m * block_m  # (G,)
    pad_start = torch.cumsum(padded, 0) - padded  # (G,)
    row_start = torch.cumsum(counts, 0) - counts  # (G,)
    capacity = num_rows + num_experts * (block_m - 1)
    capacity = (capacity + block_m - 1) // block_m * block_m
    sorted_rows = torch.full((capacity,), num_rows, dtype=torch.int64, device=device)
    keep = sorted_local < num_experts  # (S,)
    expert = sorted_local[keep]  # (S_owned,)
    position = torch.arange(num_rows, device=device)[keep]  # (S_owned,)
    slot = pad_start[expert] + position - row_start[expert]  # (S_owned,)
    sorted_rows[slot] = order[keep]
    blocks_per_expert = padded // block_m  # (G,)
    block_expert = torch.full((capacity // block_m,), -1, dtype=torch.int64, device=device)
    used = torch.repeat_interleave(
        torch.arange(num_experts, device=device), blocks_per_expert, output_size=None
    )  # (used_blocks,)
    block_expert[: used.numel()] = used
    return sorted_rows, block_expert


def fused_experts(
    hidden: torch.Tensor,
    gate_up_proj: torch.Tensor,
    down_proj: torch.Tensor,
    weights: torch.Tensor,
    expert_ids: torch.Tensor,
    start: int = 0,
    config: dict[str, int] | None = None,
) -> torch.Tensor:
    """Same contract as ``api.experts`` (weights already sliced to the shard,
    ``start`` its first global id); inference only."""
    assert is_available(), "Triton path needs triton and a GPU (or TRITON_INTERPRET=1)"
    gate_up_kernel, down_kernel = _kernels()
    num_tokens, top_k = expert_ids.shape
    num_experts, two_inter, hidden_size = gate_up_proj.shape
    inter = two_inter // 2
    num_rows = num_tokens * top_k
    if config is None:
        config = pick_config(num_rows / max(num_experts, 1))
    block_m, block_n, block_k = config["BLOCK_M"], config["BLOCK_N"], config["BLOCK_K"]
    launch = {key: config[key] for key in _LAUNCH_OPTIONS if key in config}
    unknown = set(config) - {"BLOCK_M", "BLOCK_N", "BLOCK_K", *_LAUNCH_OPTIONS}
    assert not unknown, f"unknown Triton config keys {sorted(unknown)}"
    sorted_rows, block_expert = align_block_size(expert_ids, num_experts, start, block_m)
    hidden = hidden.contiguous()
    gate_up_proj, down_proj = gate_up_proj.contiguous(), down_proj.contiguous()
    flat_weights = weights.reshape(-1).to(torch.float32).contiguous()  # (S,)
    # fp32 means fp32 (not TF32); the interpreter's bf16 dot is broken (triton 3.9).
    fp32_dot = hidden.dtype == torch.float32 or os.environ.get("TRITON_INTERPRET") == "1"

    act = hidden.new_empty(sorted_rows.numel(), inter)  # (P, I) padded sorted order
    grid = (block_expert.numel(), _cdiv(inter, block_n))
    gate_up_kernel[grid](
        hidden, gate_up_proj, act, sorted_rows, block_expert,
        num_rows, top_k, hidden_size, inter,
        hidden.stride(0), gate_up_proj.stride(0), gate_up_proj.stride(1), act.stride(0),
        BLOCK_M=block_m, BLOCK_N=block_n, BLOCK_K=block_k, FP32_DOT=fp32_dot, **launch,
    )  # fmt: skip
    rows_out = hidden.new_zeros(num_rows, hidden_size)  # (S, H) routing order
    grid = (block_expert.numel(), _cdiv(hidden_size, block_n))
    down_kernel[grid](
        act, down_proj, rows_out, sorted_rows, block_expert, flat_weights,
        num_rows, hidden_size, inter,
        act.stride(0), down_proj.stride(0), down_proj.stride(1), rows_out.stride(0),
        BLOCK_M=block_m, BLOCK_N=block_n, BLOCK_K=block_k, FP32_DOT=fp32_dot, **launch,
    )  # fmt: skip
    return rows_out.view(num_tokens, top_k, hidden_size).sum(dim=1)  # (tokens, H)


@functools.cache
def _kernels():
    """The jitted kernels; the one place the optional dependency is imported."""
    module = importlib.import_module("moeplane.kernels._triton_kernels")
    return module.gate_up_silu_kernel, module.down_weighted_kernel


def _cdiv(a: int, b: int) -> int:
    return (a + b - 1) // b
