"""Builds of the C experts kernel against each other, measured in one process.

    python bench/kernel_variants.py                         # this CPU's build vs the others
    python bench/kernel_variants.py --tokens 16,128 \\
        --variant "tiles=-DXT_MIN_ROWS=9 -DXT_MAX_ROWS=96"   # any -D knobs of csrc/moe_small.c

Each variant is ``cpu_native.variant(*defines)``; the first column is the default
build. Knobs: LANES (8 or 16), XT_MIN_ROWS / XT_MAX_ROWS (token tiles), WR, MR,
PACKED_MIN_ROWS, PREFETCH_AHEAD (floats). Calls go round-robin over the variants with the last-level cache flushed
before each (weights from DRAM, as in bench/kernels.py), so a shared host's
slow minutes hit every variant alike; compare the ratios, not the times. Every
variant's output is checked against the default's first.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

_HERE = Path(__file__).resolve().parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != _HERE]

import torch

from moeplane.kernels import cpu_native, route

# The switches a CPU's own build leaves at their defaults (docs/kernels.md).
DEFAULT_VARIANTS = {
    "no token tiles": "-DXT_MIN_ROWS=1000",
    "token tiles 9-96": "-DXT_MIN_ROWS=9 -DXT_MAX_ROWS=96",
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tokens", default="1,8,32,128,512")
    parser.add_argument("--experts", type=int, default=64)
    parser.add_argument("--top-k", type=int, default=8)
    parser.add_argument("--hidden", type=int, default=1024)
    parser.add_argument("--inter", type=int, default=384)
    parser.add_argument("--repeats", type=int, default=11)
    parser.add_argument(
        "--variant", action="append", metavar="NAME=DEFINES", help="e.g. 'wr8=-DWR=8'"
    )
    args = parser.parse_args()
    specs = dict(v.split("=", 1) for v in args.variant) if args.variant else DEFAULT_VARIANTS
    if not cpu_native.available():
        sys.exit("the C kernel does not build here (see the log)")
    kernels = {"default": cpu_native.inference_experts} | {
        name: cpu_native.variant(*defines.split()) for name, defines in specs.items()
    }
    gen = torch.Generator().manual_seed(0)
    e, h, i = args.experts, args.hidden, args.inter
    gate_up = torch.randn(e, 2 * i, h, generator=gen) * h**-0.5
    down = torch.randn(e, h, i, generator=gen) * i**-0.5
    flush = torch.empty(64 << 20)  # 256 MB: more than any last-level cache here
    print(f"E{e} top{args.top_k} H{h} I{i}, {torch.get_num_threads()} threads, float32, cold")
    print("tokens | " + " | ".join(f"{name} ms" for name in kernels) + " | vs default")
    for tokens in (int(t) for t in args.tokens.split(",")):
        x = torch.randn(tokens, h, generator=gen)
        weights, ids = route(torch.randn(tokens, e, generator=gen), args.top_k, True)
        times: dict[str, list[float]] = {name: [] for name in kernels}
        want = kernels["default"](x, gate_up, down, weights, ids)
        for name, kernel in kernels.items():
            got = kernel(x, gate_up, down, weights, ids)
            torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-4, msg=name)
        for _ in range(args.repeats):
            for name, kernel in kernels.items():
                flush.add_(1.0)
                start = time.perf_counter()
                kernel(x, gate_up, down, weights, ids)
                times[name].append(time.perf_counter() - start)
        medians = {name: statistics.median(t) * 1e3 for name, t in times.items()}
        base = medians["default"]
        ratios = " ".join(f"{m / base:.2f}" for n, m in medians.items() if n != "default")
        print(f"{tokens} | " + " | ".join(f"{m:.2f}" for m in medians.values()) + f" | {ratios}")


if __name__ == "__main__":
    main()
