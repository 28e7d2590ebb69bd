"""MoE experts layer: transformers' implementations vs moeplane, against the roofline.

    python bench/kernels.py                  # CPU, float32: full table (minutes on 2 cores)
    python bench/kernels.py --quick          # smoke run
    python bench/kernels.py --device cuda    # GPU, bfloat16, and the full Qwen3-30B-A3B
                                             # layer (bench/gpu_check.sh)

"moeplane" is the default (CUDA: Triton; CPU: the C kernel, up to 256 rows per expert);
"moeplane torch" is its torch path alone.

Everything is measured in this one run: memory bandwidth (sum over a buffer
far larger than the last-level cache; best of before, after and between
rows), GEMM peak (square GEMM: the faster of matmul and, on CPU, oneDNN),
and each implementation's median time with cold
caches (a large buffer is written between repeats, so weights come from DRAM
as they would in a real multi-layer model). roofline = max(weight bytes of the
experts actually hit / bandwidth, FLOPs / GEMM peak); "x roof" = time /
roofline (1.0 is the physical limit).
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

from moeplane.kernels import experts, route, torch_path, transformers_integration

# batched_mm gathers one (2I*H + H*I) weight copy per (token, k) pair; skip it
# past this much memory (the machine is shared, 24 GiB).
BATCHED_MM_MAX_BYTES = 4 * 2**30
FLUSH_BYTES = 768 * 2**20  # > 2x the 300 MiB L3 this machine reports (and an H200's 60 MB L2)


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
GPU_SHAPES = (SHAPES[0], Shape("E128 top8 H2048 I768 (Qwen3-30B-A3B)", 128, 8, 2048, 768))
TOKENS = (1, 8, 32, 128, 512, 2048)
GPU_TOKENS = (*TOKENS, 8192)


@dataclass(frozen=True)
class Device:
    """Where the layer runs: ``cpu`` in float32 (sgemm peak) or ``cuda`` in bfloat16."""

    device: torch.device
    dtype: torch.dtype

    @property
    def cuda(self) -> bool:
        return self.device.type == "cuda"

    def sync(self) -> None:
        if self.cuda:
            torch.cuda.synchronize(self.device)


def median_ms(
    calls: dict[str, Callable[[], object]], repeats: int, flush: torch.Tensor, dev: Device
) -> dict[str, float]:
    """Median ms of each call, run round-robin so that load from other users
    of the (shared) machine hits every implementation alike; each round starts
    one implementation later, so none always runs right after the same other
    (what ran just before moved a call's time by up to 16 %)."""
    for call in calls.values():
        call()  # warm-up: allocator, MKL buffers, Triton compiles
    times: dict[str, list[float]] = {name: [] for name in calls}
    names = list(calls)
    for r in range(repeats):
        for name in names[r % len(names) :] + names[: r % len(names)]:
            times[name].append(_timed(calls[name], flush, dev))
    return {name: statistics.median(ts) * 1e3 for name, ts in times.items()}


def bandwidth(repeats: int, flush: torch.Tensor, dev: Device) -> float:
    """Bytes/s a ``sum`` over 1 GiB reads: best of ``repeats``."""
    big = torch.ones(2**30 // 4, device=dev.device)
    return 2**30 / min(_timed(big.sum, flush, dev) for _ in range(repeats))


def machine_limits(repeats: int, flush: torch.Tensor, dev: Device) -> tuple[float, float]:
    """(bandwidth bytes/s, GEMM FLOP/s in the benchmark's dtype): best of ``repeats``."""
    bytes_per_s = bandwidth(repeats, flush, dev)
    n = 8192 if dev.cuda else 2048
    a = torch.randn(n, n, device=dev.device, dtype=dev.dtype)
    b = torch.randn(n, n, device=dev.device, dtype=dev.dtype)
    gemms: dict[str, Callable[[], object]] = {"matmul": lambda: a @ b}
    if not dev.cuda and torch_path.cpu_gemm(a.device, a.dtype, a.numel()) == "onednn":
        # the loop's oneDNN GEMM beats MKL's sgemm on some CPUs: the peak is the faster one
        bt = b.t().contiguous()
        gemms["onednn"] = lambda: torch_path._LINEAR["onednn"](a, bt)
    best = float("inf")
    for gemm in gemms.values():
        gemm()
        best = min(best, *(_timed(gemm, None, dev) for _ in range(repeats)))
    return bytes_per_s, 2 * n**3 / best


def _timed(fn: Callable[[], object], flush: torch.Tensor | None, dev: Device) -> float:
    if flush is not None:
        flush.fill_(1.0)  # evict the weights from cache
    dev.sync()
    start = time.perf_counter()
    fn()
    dev.sync()
    return time.perf_counter() - start


def implementations(
    module: Qwen3MoeExperts, shape: Shape, tokens: int, dev: Device
) -> dict[str, Callable | None]:
    eager = Qwen3MoeExperts.forward.__wrapped__  # the loop transformers ships as "eager"
    size = torch.finfo(dev.dtype).bits // 8
    gathered = tokens * shape.top_k * 3 * shape.hidden * shape.inter * size
    impls: dict[str, Callable | None] = {
        "eager": lambda *a: eager(module, *a),
        "grouped_mm": lambda *a: grouped_mm_experts_forward(module, *a),
        "batched_mm": None
        if gathered > BATCHED_MM_MAX_BYTES
        else lambda *a: batched_mm_experts_forward(module, *a),
        # the default: on CUDA (inference) Triton; on CPU the C kernel (<= 256 rows per expert)
        "moeplane": lambda *a: transformers_integration.moeplane_experts_forward(module, *a),
    }
    # moeplane's torch path alone (GPU: without Triton; CPU: without the C small-batch kernel)
    impls["moeplane torch"] = lambda h, ids, w: experts(
        h, module.gate_up_proj, module.down_proj, w, ids, backend="torch"
    )
    return impls


def run(tokens_list: tuple[int, ...], shapes: tuple[Shape, ...], repeats: int, dev: Device) -> str:
    threads = torch.get_num_threads()
    flush = torch.empty(FLUSH_BYTES // 4, device=dev.device)
    bandwidth, peak = machine_limits(repeats, flush, dev)
    rows, bandwidth_seen = _rows(tokens_list, shapes, repeats, flush, dev, bandwidth, peak)
    # The machine is shared: measure the limits again (bandwidth also after every row)
    # and keep the best seen, so the roofline is the fastest this machine showed in the run.
    bandwidth2, peak2 = machine_limits(repeats, flush, dev)
    bandwidth, peak = max(bandwidth, bandwidth2, bandwidth_seen), max(peak, peak2)
    where = torch.cuda.get_device_name(dev.device) if dev.cuda else f"{threads} threads"
    names = list(rows[0]["times"])
    lines = [
        f"machine: {platform.machine()}, torch {torch.__version__}, {where}, {dev.dtype}; "
        f"measured bandwidth {bandwidth / 1e9:.1f} GB/s, GEMM peak {peak / 1e9:.0f} GFLOP/s; "
        f"median of {repeats}, cold cache",
        "",
        "| shape | tokens | roofline ms | "
        + " | ".join(f"{n} ms" for n in names)
        + " | moeplane x roof | moeplane % bandwidth | moeplane % peak | vs best transformers |",
        "|---|---:|---:|" + "---:|" * (len(names) + 4),
    ]
    met = {"within 1.5x of roofline": 0, "2x faster than transformers (<= 32 tokens)": 0}
    small = not_slower = 0
    gpu = {"bandwidth": [0, 0], "peak": [0, 0], "faster than grouped_mm": [0, 0]}
    for row in rows:
        times = row["times"]
        roof_ms = max(row["weight_bytes"] / bandwidth, row["flops"] / peak) * 1e3
        ours = times["moeplane"]
        best = min(t for n, t in times.items() if not n.startswith("moeplane") and t is not None)
        used_bw = row["weight_bytes"] / (ours / 1e3) / bandwidth
        used_peak = row["flops"] / (ours / 1e3) / peak
        cells = [f"{t:.2f}" if t is not None else "OOM/skipped" for t in times.values()]
        lines.append(
            f"| {row['shape']} | {row['tokens']} | {roof_ms:.2f} | "
            + " | ".join(cells)
            + f" | {ours / roof_ms:.2f}x | {used_bw:.0%} | {used_peak:.0%} | "
            f"{best / ours:.2f}x faster |"
        )
        met["within 1.5x of roofline"] += ours <= 1.5 * roof_ms
        small += row["tokens"] <= 32
        met["2x faster than transformers (<= 32 tokens)"] += (
            row["tokens"] <= 32 and best >= 2 * ours
        )
        not_slower += ours <= best
        if row["tokens"] <= 32:
            gpu["bandwidth"][0] += used_bw >= 0.6
            gpu["bandwidth"][1] += 1
        if row["tokens"] >= 2048 and row["experts"] == 128:
            gpu["peak"][0] += used_peak >= 0.5
            gpu["peak"][1] += 1
        gpu["faster than grouped_mm"][0] += ours < times["grouped_mm"]
        gpu["faster than grouped_mm"][1] += 1
    if dev.cuda:
        lines += [
            "",
            "targets (GPU): >= 60% of bandwidth at <= 32 tokens {}/{}; >= 50% of peak at >= 2048 "
            "tokens, 128 experts {}/{}; faster than grouped_mm {}/{}".format(
                *gpu["bandwidth"], *gpu["peak"], *gpu["faster than grouped_mm"]
            ),
        ]
        return "\n".join(lines)
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
    dev: Device,
    bandwidth_before: float,
    peak: float,
) -> tuple[list[dict], float]:
    """Times of every implementation, and the best bandwidth measured between rows
    (a neighbour's load during the first measurement would otherwise understate the
    roofline); prints a progress line per row."""
    rows = []
    best_bandwidth = bandwidth_before
    gen = torch.Generator(device=dev.device).manual_seed(0)
    size = torch.finfo(dev.dtype).bits // 8
    for shape in shapes:
        with torch.device(dev.device):
            module = Qwen3MoeExperts(shape.config()).eval()
        with torch.no_grad():
            module.gate_up_proj.normal_(std=shape.hidden**-0.5, generator=gen)
            module.down_proj.normal_(std=shape.inter**-0.5, generator=gen)
        module.to(dev.dtype)
        for tokens in tokens_list:
            hidden = torch.randn(tokens, shape.hidden, generator=gen, device=dev.device)
            logits = torch.randn(tokens, shape.num_experts, generator=gen, device=dev.device)
            weights, ids = route(logits, shape.top_k, renormalize=True)
            hidden, weights = hidden.to(dev.dtype), weights.to(dev.dtype)
            active = int(torch.unique(ids).numel())
            impls = implementations(module, shape, tokens, dev)
            calls = {n: functools.partial(f, hidden, ids, weights) for n, f in impls.items() if f}
            with torch.no_grad():
                measured = median_ms(calls, repeats, flush, dev)
            row = {
                "shape": shape.name,
                "experts": shape.num_experts,
                "tokens": tokens,
                "weight_bytes": active * 3 * shape.hidden * shape.inter * size,
                "flops": 2 * tokens * shape.top_k * 3 * shape.hidden * shape.inter,
                "times": {name: measured.get(name) for name in impls},
            }
            best_bandwidth = max(best_bandwidth, bandwidth(3, flush, dev))
            roof_ms = max(row["weight_bytes"] / best_bandwidth, row["flops"] / peak) * 1e3
            print(f"{shape.name} tokens={tokens} roof~{roof_ms:.2f} ms {measured}", flush=True)
            rows.append(row)
        del module
    return rows, best_bandwidth


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="few sizes, 2 repeats")
    parser.add_argument("--repeats", type=int, default=None)
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    args = parser.parse_args()
    dev = Device(
        torch.device(args.device), torch.bfloat16 if args.device == "cuda" else torch.float32
    )
    shapes = GPU_SHAPES if dev.cuda else SHAPES
    tokens = (1, 32, 256) if args.quick else (GPU_TOKENS if dev.cuda else TOKENS)
    repeats = args.repeats or (2 if args.quick else 7)
    assert repeats >= 1
    table = run(tokens, shapes[:1] if args.quick else shapes, repeats, dev)
    print()
    print(table)


if __name__ == "__main__":
    main()
