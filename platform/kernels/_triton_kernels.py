"""Triton kernels of the fused MoE path; imported only by ``triton_path._kernels``.

Both are GEMMs over rows sorted by expert and padded to ``BLOCK_M``
(``triton_path.align_block_size``); a block whose expert is ``-1`` is unused.
Accumulation is fp32. ``FP32_DOT`` multiplies in true fp32: for fp32 inputs (no
TF32), and under ``TRITON_INTERPRET=1``, whose bf16 ``tl.dot`` is wrong in
triton 3.9 (bf16 -> fp32 products are exact, so the result is the same).
"""

from __future__ import annotations

import triton
import triton.language as tl


@triton.jit
def gate_up_silu_kernel(
    x_ptr, w_ptr, act_ptr, sorted_rows_ptr, block_expert_ptr,
    num_rows, top_k, hidden_size, inter,
    stride_x, stride_we, stride_wn, stride_act,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr, FP32_DOT: tl.constexpr,
):  # fmt: skip
    pid_m = tl.program_id(0)
    pid_n = tl.program_id(1)
    expert = tl.load(block_expert_ptr + pid_m)
    if expert < 0:
        return
    offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    rows = tl.load(sorted_rows_ptr + offs_m)
    row_mask = rows < num_rows
    tokens = rows // top_k
    offs_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    n_mask = offs_n < inter
    offs_k = tl.arange(0, BLOCK_K)
    w_base = w_ptr + expert.to(tl.int64) * stride_we
    acc_gate = tl.full((BLOCK_M, BLOCK_N), 0.0, tl.float32)
    acc_up = tl.full((BLOCK_M, BLOCK_N), 0.0, tl.float32)
    for k0 in range(0, hidden_size, BLOCK_K):
        k = k0 + offs_k
        k_mask = k < hidden_size
        a = tl.load(
            x_ptr + tokens[:, None] * stride_x + k[None, :],
            mask=row_mask[:, None] & k_mask[None, :],
            other=0.0,
        )
        w_mask = k_mask[:, None] & n_mask[None, :]
        w_gate = tl.load(w_base + offs_n[None, :] * stride_wn + k[:, None], mask=w_mask, other=0.0)
        w_up = tl.load(
            w_base + (offs_n[None, :] + inter) * stride_wn + k[:, None], mask=w_mask, other=0.0
        )
        if FP32_DOT:
            a = a.to(tl.float32)
            acc_gate += tl.dot(a, w_gate.to(tl.float32), input_precision="ieee")
            acc_up += tl.dot(a, w_up.to(tl.float32), input_precision="ieee")
        else:
            acc_gate += tl.dot(a, w_gate)
            acc_up += tl.dot(a, w_up)
    # silu from builtins (likewise tl.full, not tl.zeros): the interpreter cannot call
    # triton's @jit helpers when triton was imported before TRITON_INTERPRET was set.
    act = acc_gate / (1.0 + tl.exp(-acc_gate)) * acc_up
    tl.store(
        act_ptr + offs_m[:, None] * stride_act + offs_n[None, :],
        act.to(act_ptr.dtype.element_ty),
        mask=row_mask[:, None] & n_mask[None, :],
    )


@triton.jit
def down_weighted_kernel(
    act_ptr, w_ptr, out_ptr, sorted_rows_ptr, block_expert_ptr, route_w_ptr,
    num_rows, hidden_size, inter,
    stride_act, stride_we, stride_wn, stride_out,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr, FP32_DOT: tl.constexpr,
):  # fmt: skip
    pid_m = tl.program_id(0)
    pid_n = tl.program_id(1)
    expert = tl.load(block_expert_ptr + pid_m)
    if expert < 0:
        return
    offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    rows = tl.load(sorted_rows_ptr + offs_m)
    row_mask = rows < num_rows
    offs_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    n_mask = offs_n < hidden_size
    offs_k = tl.arange(0, BLOCK_K)
    w_base = w_ptr + expert.to(tl.int64) * stride_we
    acc = tl.full((BLOCK_M, BLOCK_N), 0.0, tl.float32)
    for k0 in range(0, inter, BLOCK_K):
        k = k0 + offs_k
        k_mask = k < inter
        a = tl.load(
            act_ptr + offs_m[:, None] * stride_act + k[None, :],
            mask=row_mask[:, None] & k_mask[None, :],
            other=0.0,
        )
        w = tl.load(
            w_base + offs_n[None, :] * stride_wn + k[:, None],
            mask=k_mask[:, None] & n_mask[None, :],
            other=0.0,
        )
        if FP32_DOT:
            acc += tl.dot(a.to(tl.float32), w.to(tl.float32), input_precision="ieee")
        else:
            acc += tl.dot(a, w)
    route_w = tl.load(route_w_ptr + rows, mask=row_mask, other=0.0)
    acc = acc * route_w[:, None]
    tl.store(
        out_ptr + rows[:, None] * stride_out + offs_n[None, :],
        acc.to(out_ptr.dtype.element_ty),
        mask=row_mask[:, None] & n_mask[None, :],
    )
