"""Block sizes for the Triton experts kernels, timed on this GPU.

    python bench/triton_configs.py                              # CUDA, bfloat16 (~2 min)
    TRITON_INTERPRET=1 python bench/triton_configs.py --smoke   # CPU: a tiny shape, checks only

``triton_path.BLOCK_CONFIGS`` holds vLLM's default block sizes, never tuned on a GPU here.
For each shape and token count this times ``triton_path.fused_experts`` with each candidate
config (``BLOCK_M`` / ``BLOCK_N`` / ``BLOCK_K``, ``num_warps``, ``num_stages``), the output of
each checked against the default config's first, and prints one table: the default's and the
fastest config's time, the fastest config, and the weight bandwidth and tensor-core throughput
it reaches. Candidates whose ``BLOCK_M`` is far above the mean rows per expert (mostly padding)
are skipped; a config that fails to compile (e.g. too much shared memory) is reported as such.
Times are medians of ``triton.testing.do_bench`` (which clears the L2 cache before each call:
weights come from HBM, as in a multi-layer model). Edit ``BLOCK_CONFIGS`` from the table: it
is keyed by the largest mean rows per expert each config serves.
"""

from __future__ import annotations

import argparse
import functools
import os
import sys
import time
from pathlib import Path

_HERE = Path(__file__).resolve().parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != _HERE]

import torch

from moeplane.kernels import route, triton_path

# (name, experts, top_k, hidden, inter): bench/kernels.py's GPU shapes
SHAPES = (
    ("E64 top8 H1024 I384", 64, 8, 1024, 384),
    ("E128 top8 H2048 I768 (Qwen3-30B-A3B)", 128, 8, 2048, 768),
)
TOKENS = (1, 8, 32, 128, 512, 2048, 8192)
# vLLM's kind of candidates for Hopper, small to large BLOCK_M
CANDIDATES = tuple(
    {"BLOCK_M": m, "BLOCK_N": n, "BLOCK_K": k, "num_warps": w, "num_stages": s}
    for m, n, k, w, s in (
        (16, 64, 64, 4, 3),
        (16, 128, 64, 4, 4),
        (16, 64, 128, 4, 4),
        (16, 256, 64, 8, 3),
        (32, 64, 64, 4, 4),
        (32, 128, 64, 4, 3),
        (64, 64, 64, 4, 4),
        (64, 128, 64, 4, 3),
        (64, 128, 64, 8, 4),
        (64, 256, 64, 8, 3),
        (128, 128, 64, 8, 3),
        (128, 256, 64, 8, 3),
    )
)
SMOKE = ((("tiny", 8, 2, 32, 16),), (1, 9), ({"BLOCK_M": 16, "BLOCK_N": 16, "BLOCK_K": 16},))


def label(config: dict[str, int]) -> str:
    text = f"{config['BLOCK_M']}x{config['BLOCK_N']}x{config['BLOCK_K']}"
    if "num_warps" in config:
        text += f" w{config['num_warps']} s{config['num_stages']}"
    return text


def useful(config: dict[str, int], rows_per_expert: float) -> bool:
    """Whether a config's BLOCK_M is not mostly padding at this many rows per expert."""
    return config["BLOCK_M"] <= max(16.0, 2 * rows_per_expert)


def timed_ms(fn, cuda: bool) -> float:
    if cuda:
        import triton.testing

        return triton.testing.do_bench(fn, warmup=10, rep=40, return_mode="median")
    start = time.perf_counter()
    fn()
    return (time.perf_counter() - start) * 1e3


def sweep(shapes, tokens_list, candidates, device: torch.device, dtype: torch.dtype) -> str:
    cuda = device.type == "cuda"
    gen = torch.Generator(device=device).manual_seed(0)
    lines = [
        "| shape | tokens | rows per expert | default | default ms | best | best ms "
        "| default / best | best weight GB/s | best TFLOP/s | configs (failed) |",
        "|---|---:|---:|---|---:|---|---:|---:|---:|---:|---|",
    ]
    for name, experts, top_k, hidden, inter in shapes:
        gate_up = torch.randn(experts, 2 * inter, hidden, generator=gen, device=device)
        down = torch.randn(experts, hidden, inter, generator=gen, device=device)
        gate_up, down = (gate_up * hidden**-0.5).to(dtype), (down * inter**-0.5).to(dtype)
        for tokens in tokens_list:
            x = torch.randn(tokens, hidden, generator=gen, device=device).to(dtype)
            logits = torch.randn(tokens, experts, generator=gen, device=device)
            weights, ids = route(logits, top_k, renormalize=True)
            weights = weights.to(dtype)
            rows_per_expert = tokens * top_k / experts
            default = triton_path.pick_config(rows_per_expert)
            want = triton_path.fused_experts(x, gate_up, down, weights, ids)
            times: dict[str, float] = {}
            failed = []
            for config in (default, *(c for c in candidates if useful(c, rows_per_expert))):
                run = functools.partial(
                    triton_path.fused_experts, x, gate_up, down, weights, ids, config=config
                )
                try:
                    got = run()
                except Exception as exc:  # a config that does not build here: OutOfResources
                    failed.append(f"{label(config)}: {type(exc).__name__}")
                    continue
                torch.testing.assert_close(got, want, rtol=2e-2, atol=2e-2, msg=label(config))
                times[label(config)] = timed_ms(run, cuda)
            best = min(times, key=times.get)
            active = int(torch.unique(ids).numel())
            size = torch.finfo(dtype).bits // 8
            weight_bytes = active * 3 * hidden * inter * size
            flops = 2 * tokens * top_k * 3 * hidden * inter
            ms = times[best]
            lines.append(
                f"| {name} | {tokens} | {rows_per_expert:.2f} | {label(default)} "
                f"| {times[label(default)]:.3f} | {best} | {ms:.3f} "
                f"| {times[label(default)] / ms:.2f} | {weight_bytes / ms / 1e6:.0f} "
                f"| {flops / ms / 1e9:.1f} | {len(times)} ({'; '.join(failed) or 'none'}) |"
            )
            print(lines[-1], flush=True)
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--smoke", action="store_true", help="tiny shape: checks, no timing")
    parser.add_argument("--tokens", help="comma-separated token counts")
    args = parser.parse_args()
    if not triton_path.is_available():
        sys.exit("Triton needs a GPU here, or TRITON_INTERPRET=1 with --smoke")
    cuda = torch.cuda.is_available() and os.environ.get("TRITON_INTERPRET") != "1"
    if not cuda and not args.smoke:
        sys.exit("no GPU: the interpreter is for --smoke only (timings would mean nothing)")
    shapes, tokens, candidates = SMOKE if args.smoke else (SHAPES, TOKENS, CANDIDATES)
    if args.tokens:
        tokens = tuple(int(t) for t in args.tokens.split(","))
    device = torch.device("cuda" if cuda else "cpu")
    where = torch.cuda.get_device_name(device) if cuda else "CPU (TRITON_INTERPRET=1)"
    print(f"Triton experts configs on {where}, torch {torch.__version__}, bfloat16", flush=True)
    table = sweep(shapes, tokens, candidates, device, torch.bfloat16)
    print()
    print(table)


if __name__ == "__main__":
    main()
