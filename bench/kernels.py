"""MoE experts layer: transformers' implementations vs moeplane, against the roofline.

    python bench/kernels.py            # full table (a few minutes on 2 cores)
    python bench/kernels.py --quick    # smoke run

Everything is measured in this one run: memory bandwidth (sum over a buffer
far larger than the last-level cache), GEMM peak (square sgemm), and each
implementation's median time with cold caches (a large buffer is written
between repeats, so weights come from DRAM as they would in a real multi-layer
model). roofline = max(weight bytes of the experts actually hit / bandwidth,
FLOPs / GEMM peak); "x roof" = time / roofline (1.0 is the physical limit).
"""

from __future__ import annotations

import argparse
import functools
import platform
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

# Run as a script, bench/ is sys.path[0] and this file would shadow the
# `kernels` package transformers probes for on import.
_HERE = Path(__file__).resolve().parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != _HERE]

import torch
from transformers import Qwen3MoeConfig
from transformers.integrations.moe import (
    batched_mm_experts_forward,
    grouped_mm_experts_forward,
)
from transformers.models.qwen3_moe.modeling_qwen3_moe import Qwen3MoeExperts

from moeplane.kernels import route, transformers_integration

# batched_mm gathers one (2I*H + H*I) weight copy per (token, k) pair; skip it
# past this much memory (the machine is shared, 24 GiB).
BATCHED_MM_MAX_BYTES = 4 * 2**30
FLUSH_BYTES = 768 * 2**20  # > 2x the 300 MiB L3 this machine reports
BYTES_FP32 = 4


@dataclass(frozen=True)
class Shape:
    name: str
    num_experts: int
    top_k: int
    hidden: int
    inter: int

    def config(self) -> Qwen3MoeConfig:
        return Qwen3MoeConfig(
            hidden_size=self.hidden,
            moe_intermediate_size=self.inter,
            num_experts=self.num_experts,
            num_experts_per_tok=self.top_k,
        )


SHAPES = (
    Shape("E64 top8 H1024 I384", 64, 8, 1024, 384),
    # Qwen3-30B-A3B (E=128, top-8, H=2048, I=768) with H and I halved to fit.
    Shape("E128 top8 H1024 I384 (Qwen3-30B-A3B /2)", 128, 8, 1024, 384),
)
TOKENS = (1, 8, 32, 128, 512, 2048)


def median_ms(
    calls: dict[str, Callable[[], object]], repeats: int, flush: torch.Tensor
) -> dict[str, float]:
    """Median ms of each call, run round-robin so that load from other users
    of the (shared) machine hits every implementation alike."""
    for call in calls.values():
        call()  # warm-up: allocator, MKL buffers
    times: dict[str, list[float]] = {name: [] for name in calls}
    for _ in range(repeats):
        for name, call in calls.items():
            times[name].append(_timed(call, flush))
    return {name: statistics.median(ts) * 1e3 for name, ts in times.items()}


def machine_limits(repeats: int, flush: torch.Tensor) -> tuple[float, float]:
    """(bandwidth bytes/s, sgemm FLOP/s): best of ``repeats``."""
    big = torch.ones(2**30 // BYTES_FP32)  # 1 GiB
    bandwidth = big.numel() * BYTES_FP32 / min(_timed(big.sum, flush) for _ in range(repeats))
    n = 2048
    a, b = torch.randn(n, n), torch.randn(n, n)
    a @ b
    best = min(_timed(lambda: a @ b, flush=None) for _ in range(repeats))
    return bandwidth, 2 * n**3 / best


def _timed(fn: Callable[[], object], flush: torch.Tensor | None) -> float:
    if flush is not None:
        flush.fill_(1.0)  # evict the weights from cache
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def implementations(module: Qwen3MoeExperts, shape: Shape, tokens: int) -> dict[str, Callable]:
    eager = Qwen3MoeExperts.forward.__wrapped__  # the loop transformers ships as "eager"
    gathered = tokens * shape.top_k * 3 * shape.hidden * shape.inter * BYTES_FP32
    return {
        "eager": lambda *a: eager(module, *a),
        "grouped_mm": lambda *a: grouped_mm_experts_forward(module, *a),
        "batched_mm": None
        if gathered > BATCHED_MM_MAX_BYTES
        else lambda *a: batched_mm_experts_forward(module, *a),
        "moeplane": lambda *a: transformers_integration.moeplane_experts_forward(module, *a),
    }


def run(tokens_list: tuple[int, ...], shapes: tuple[Shape, ...], repeats: int) -> str:
    threads = torch.get_num_threads()
    flush = torch.empty(FLUSH_BYTES // BYTES_FP32)
    bandwidth, peak = machine_limits(repeats, flush)
    rows = _rows(tokens_list, shapes, repeats, flush, bandwidth, peak)
    # The cores are shared: measure the limits again and keep the best seen,
    # so the roofline is the fastest this machine showed during the run.
    bandwidth2, peak2 = machine_limits(repeats, flush)
    bandwidth, peak = max(bandwidth, bandwidth2), max(peak, peak2)
    lines = [
        f"machine: {platform.machine()}, torch {torch.__version__}, {threads} threads; "
        f"measured bandwidth {bandwidth / 1e9:.1f} GB/s, sgemm peak {peak / 1e9:.0f} GFLOP/s; "
        f"median of {repeats}, cold cache",
        "",
        "| shape | tokens | roofline ms | eager ms | grouped_mm ms | batched_mm ms | "
        "moeplane ms | moeplane x roof | vs best transformers |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    met = {"within 1.5x of roofline": 0, "2x faster than transformers (<= 32 tokens)": 0}
    small = not_slower = 0
    for row in rows:
        times = row["times"]
        roof_ms = max(row["weight_bytes"] / bandwidth, row["flops"] / peak) * 1e3
        ours = times["moeplane"]
        best = min(t for n, t in times.items() if n != "moeplane" and t is not None)
        cells = [f"{t:.1f}" if t is not None else "OOM/skipped" for t in times.values()]
        lines.append(
            f"| {row['shape']} | {row['tokens']} | {roof_ms:.1f} | "
            + " | ".join(cells)
            + f" | {ours / roof_ms:.2f}x | {best / ours:.2f}x faster |"
        )
        met["within 1.5x of roofline"] += ours <= 1.5 * roof_ms
        small += row["tokens"] <= 32
        met["2x faster than transformers (<= 32 tokens)"] += (
            row["tokens"] <= 32 and best >= 2 * ours
        )
        not_slower += ours <= best
    lines += [
        "",
        f"targets: within 1.5x of roofline {met['within 1.5x of roofline']}/{len(rows)} rows; "
        f">= 2x faster than the best transformers at <= 32 tokens "
        f"{met['2x faster than transformers (<= 32 tokens)']}/{small}; "
        f"not slower than the best transformers {not_slower}/{len(rows)}",
    ]
    return "\n".join(lines)


def _rows(
    tokens_list: tuple[int, ...],
    shapes: tuple[Shape, ...],
    repeats: int,
    flush: torch.Tensor,
    bandwidth: float,
    peak: float,
) -> list[dict]:
    """Times of every implementation; prints a progress line per row."""
    rows = []
    gen = torch.Generator().manual_seed(0)
    for shape in shapes:
        module = Qwen3MoeExperts(shape.config()).eval()
        with torch.no_grad():
            module.gate_up_proj.normal_(std=shape.hidden**-0.5, generator=gen)
            module.down_proj.normal_(std=shape.inter**-0.5, generator=gen)
        for tokens in tokens_list:
            hidden = torch.randn(tokens, shape.hidden, generator=gen)
            logits = torch.randn(tokens, shape.num_experts, generator=gen)
            weights, ids = route(logits, shape.top_k, renormalize=True)
            active = int(torch.unique(ids).numel())
            impls = implementations(module, shape, tokens)
            calls = {n: functools.partial(f, hidden, ids, weights) for n, f in impls.items() if f}
            with torch.no_grad():
                measured = median_ms(calls, repeats, flush)
            row = {
                "shape": shape.name,
                "tokens": tokens,
                "weight_bytes": active * 3 * shape.hidden * shape.inter * BYTES_FP32,
                "flops": 2 * tokens * shape.top_k * 3 * shape.hidden * shape.inter,
                "times": {name: measured.get(name) for name in impls},
            }
            roof_ms = max(row["weight_bytes"] / bandwidth, row["flops"] / peak) * 1e3
            print(f"{shape.name} tokens={tokens} roof~{roof_ms:.1f} ms {measured}", flush=True)
            rows.append(row)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="few sizes, 2 repeats")
    parser.add_argument("--repeats", type=int, default=None)
    args = parser.parse_args()
    tokens = (1, 32, 256) if args.quick else TOKENS
    repeats = args.repeats or (2 if args.quick else 7)
    assert repeats >= 1
    table = run(tokens, SHAPES[:1] if args.quick else SHAPES, repeats)
    print()
    print(table)


if __name__ == "__main__":
    main()
