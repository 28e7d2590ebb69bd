"""MoE experts layer: transformers' implementations vs moeplane, against the roofline.

    python bench/kernels.py                  # CPU, float32: full table (minutes on 2 cores)
    python bench/kernels.py --quick          # smoke run
    python bench/kernels.py --tokens 1,8     # some sizes only
    python bench/kernels.py --device cuda    # GPU, bfloat16, and the full Qwen3-30B-A3B
                                             # layer (bench/gpu_check.sh)

"moeplane" is the default (CUDA: Triton; CPU: the C kernel, up to 256 rows per expert);
"moeplane torch" is its torch path alone.

Everything is measured in this one run. Each row's round-robin also times two
probes of the machine's limits, under the same conditions as the implementations:
a ``sum`` over 1 GiB (memory bandwidth) and a square GEMM (peak: the faster of
matmul and, on CPU, oneDNN). Every call starts with cold caches: a large buffer is
read first on CPU (written on GPU), so weights come from DRAM as they would in a
real multi-layer model. On CPU a written buffer would leave the cache full of dirty
lines, whose write-back the next call pays for: 1.08x at 1 token on Zen 5, 1.01x
at 8-32, traffic that the roofline does not count. roofline = max(weight bytes of
the experts actually hit / bandwidth, FLOPs / GEMM peak); "x roof" = time /
roofline (1.0 is the physical limit). "x roof" and moeplane's "% bandwidth" and
"% peak" are medians over the rounds of each round's own ratio (a call and its
round's probes run within a second of each other); the other columns are medians.
The shared hosts this runs on switch between bandwidth levels every few seconds
(about 34 and 58 GB/s on 2026-11-29), so a probe run apart from a row misstates
its limit; the summary also counts the target against the best limits seen
anywhere in the run, the stricter reading.
"""

from __future__ import annotations

import argparse
import functools
import platform
import random
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


def rounds_ms(
    calls: dict[str, Callable[[], object]], repeats: int, flush: torch.Tensor, dev: Device
) -> dict[str, list[float]]:
    """Each call's ms in each of ``repeats`` rounds (round r is element r), run
    round-robin so that load from other users of the (shared) machine hits every
    implementation alike; each round runs them in a new order (seeded), so none
    always runs right after the same other: what ran just before moved a call's
    time by up to 16 %, and on Zen 5 a one-token call right after a big GEMM or
    batched_mm took 1.07-1.12x as long as right after a read, despite the flush
    between. (Rotating a fixed order, as before 2026-11-30 midday, kept each call's
    predecessor: moeplane ran after batched_mm in nearly every round.)"""
    for call in calls.values():  # warm-up: allocator, MKL buffers, Triton compiles, and
        call()  # moeplane's packed copies of the weights, which the second call makes
        call()
    times: dict[str, list[float]] = {name: [] for name in calls}
    names = list(calls)
    for r in range(repeats):
        for name in random.Random(r).sample(names, len(names)):
            times[name].append(_timed(calls[name], flush, dev) * 1e3)
    return times


PROBE_READ, PROBE_GEMM = "probe: sum 1 GiB", "probe: GEMM"


class Probes:
    """The machine's limits as calls for a row's round-robin (``rounds_ms``)."""

    def __init__(self, dev: Device) -> None:
        self.big = torch.ones(2**30 // 4, device=dev.device)
        self.n = n = 8192 if dev.cuda else 2048
        a = torch.randn(n, n, device=dev.device, dtype=dev.dtype)
        b = torch.randn(n, n, device=dev.device, dtype=dev.dtype)
        gemms: dict[str, Callable[[], object]] = {"matmul": lambda: a @ b}
        if not dev.cuda and torch_path.cpu_gemm(a.device, a.dtype, a.numel()) == "onednn":
            # the loop's oneDNN GEMM beats MKL's sgemm on some CPUs: the peak is the faster one
            bt = b.t().contiguous()
            gemms["onednn"] = lambda: torch_path._LINEAR["onednn"](a, bt)
        self.gemm = min(gemms.values(), key=lambda g: min(_timed(g, None, dev) for _ in range(3)))

    def calls(self) -> dict[str, Callable[[], object]]:
        return {PROBE_READ: self.big.sum, PROBE_GEMM: self.gemm}

    def limits(self, ms: dict[str, float]) -> tuple[float, float]:
        """(bandwidth bytes/s, GEMM FLOP/s) from the probes' times in ms."""
        return 2**30 / (ms[PROBE_READ] / 1e3), 2 * self.n**3 / (ms[PROBE_GEMM] / 1e3)

    def best(self, repeats: int, flush: torch.Tensor, dev: Device) -> tuple[float, float]:
        """The limits as the fastest of ``repeats`` calls each."""
        fastest = {
            name: min(_timed(call, flush, dev) for _ in range(repeats)) * 1e3
            for name, call in self.calls().items()
        }
        return self.limits(fastest)


def _timed(fn: Callable[[], object], flush: torch.Tensor | None, dev: Device) -> float:
    if flush is not None:  # evict the weights from cache
        flush.zero_() if dev.cuda else flush.sum()  # read on CPU: clean lines
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
    flush = torch.ones(FLUSH_BYTES // 4, device=dev.device)
    probes = Probes(dev)
    before = probes.best(repeats, flush, dev)
    rows = _rows(tokens_list, shapes, repeats, flush, dev, probes)
    after = probes.best(repeats, flush, dev)
    # The stricter reading: the fastest this machine showed anywhere in the run.
    best = tuple(max(lim) for lim in zip(before, after, *(r["limits"] for r in rows), strict=True))
    where = torch.cuda.get_device_name(dev.device) if dev.cuda else f"{threads} threads"
    names = list(rows[0]["times"])
    row_bw = [r["limits"][0] / 1e9 for r in rows]
    row_peak = [r["limits"][1] / 1e9 for r in rows]
    lines = [
        f"machine: {platform.machine()}, torch {torch.__version__}, {where}, {dev.dtype}; "
        f"bandwidth {min(row_bw):.1f}-{max(row_bw):.1f} GB/s and GEMM peak "
        f"{min(row_peak):.0f}-{max(row_peak):.0f} GFLOP/s by row (best seen {best[0] / 1e9:.1f} "
        f"GB/s, {best[1] / 1e9:.0f} GFLOP/s); median of {repeats}, cold cache",
        "",
        "| shape | tokens | GB/s | GFLOP/s | roofline ms | "
        + " | ".join(f"{n} ms" for n in names)
        + " | moeplane x roof | moeplane % bandwidth | moeplane % peak | vs best transformers |",
        "|---|---:|---:|---:|---:|" + "---:|" * (len(names) + 4),
    ]
    within = within_best = small = fast_small = not_slower = 0
    gpu = {"bandwidth": [0, 0], "peak": [0, 0], "faster than grouped_mm": [0, 0]}
    for row in rows:
        times = row["times"]
        bandwidth, peak = row["limits"]
        roof_ms = _roofline_ms(row, row["limits"])
        ours = times["moeplane"]
        fastest = min(t for n, t in times.items() if not n.startswith("moeplane") and t is not None)
        used_bw, used_peak = row["used_bw"], row["used_peak"]
        cells = [f"{t:.2f}" if t is not None else "OOM/skipped" for t in times.values()]
        lines.append(
            f"| {row['shape']} | {row['tokens']} | {bandwidth / 1e9:.1f} | {peak / 1e9:.0f} | "
            f"{roof_ms:.2f} | "
            + " | ".join(cells)
            + f" | {row['x_roof']:.2f}x | {used_bw:.0%} | {used_peak:.0%} | "
            f"{fastest / ours:.2f}x faster |"
        )
        within += row["x_roof"] <= 1.5
        within_best += ours <= 1.5 * _roofline_ms(row, best)
        small += row["tokens"] <= 32
        fast_small += row["tokens"] <= 32 and fastest >= 2 * ours
        not_slower += ours <= fastest
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
        f"targets: within 1.5x of roofline {within}/{len(rows)} rows "
        f"({within_best}/{len(rows)} against the best limits seen); "
        f">= 2x faster than the best transformers at <= 32 tokens {fast_small}/{small}; "
        f"not slower than the best transformers {not_slower}/{len(rows)}",
    ]
    return "\n".join(lines)


def _roofline_ms(row: dict, limits: tuple[float, float]) -> float:
    return max(row["weight_bytes"] / limits[0], row["flops"] / limits[1]) * 1e3


def _rows(
    tokens_list: tuple[int, ...],
    shapes: tuple[Shape, ...],
    repeats: int,
    flush: torch.Tensor,
    dev: Device,
    probes: Probes,
) -> list[dict]:
    """Times of every implementation and the machine's limits, measured together
    (round-robin) for each row; prints a progress line per row."""
    rows = []
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
                rounds = rounds_ms(calls | probes.calls(), repeats, flush, dev)
            measured = {name: statistics.median(ts) for name, ts in rounds.items()}
            row = {
                "shape": shape.name,
                "experts": shape.num_experts,
                "tokens": tokens,
                "weight_bytes": active * 3 * shape.hidden * shape.inter * size,
                "flops": 2 * tokens * shape.top_k * 3 * shape.hidden * shape.inter,
                "times": {name: measured.get(name) for name in impls},
                "limits": probes.limits(measured),
            }
            # moeplane against the limits measured in the same round, the median over rounds
            per_round = [
                probes.limits({PROBE_READ: read, PROBE_GEMM: gemm})
                for read, gemm in zip(rounds[PROBE_READ], rounds[PROBE_GEMM], strict=True)
            ]
            pairs = list(zip(rounds["moeplane"], per_round, strict=True))
            row["x_roof"] = statistics.median(
                ms / _roofline_ms(row, limits) for ms, limits in pairs
            )
            row["used_bw"] = statistics.median(
                row["weight_bytes"] / ms * 1e3 / limits[0] for ms, limits in pairs
            )
            row["used_peak"] = statistics.median(
                row["flops"] / ms * 1e3 / limits[1] for ms, limits in pairs
            )
            bandwidth, peak = row["limits"]
            roof_ms = _roofline_ms(row, row["limits"])
            print(
                f"{shape.name} tokens={tokens} {bandwidth / 1e9:.1f} GB/s {peak / 1e9:.0f} "
                f"GFLOP/s roof {roof_ms:.2f} ms (x{row['x_roof']:.2f}) {row['times']}",
                flush=True,
            )
            rows.append(row)
        del module
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="few sizes, 2 repeats")
    parser.add_argument("--repeats", type=int, default=None)
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    parser.add_argument("--tokens", help="comma-separated token counts (default: all sizes)")
    args = parser.parse_args()
    dev = Device(
        torch.device(args.device), torch.bfloat16 if args.device == "cuda" else torch.float32
    )
    shapes = GPU_SHAPES if dev.cuda else SHAPES
    tokens = (1, 32, 256) if args.quick else (GPU_TOKENS if dev.cuda else TOKENS)
    if args.tokens:
        tokens = tuple(int(t) for t in args.tokens.split(","))
        assert all(t >= 1 for t in tokens), f"--tokens must be positive, got {args.tokens}"
    repeats = args.repeats or (2 if args.quick else 7)
    assert repeats >= 1
    table = run(tokens, shapes[:1] if args.quick else shapes, repeats, dev)
    print()
    print(table)


if __name__ == "__main__":
    main()
