"""Builds of the C experts kernel against each other, measured in one process.

    python bench/kernel_variants.py                         # this CPU's build vs the others
    python bench/kernel_variants.py --tokens 16,128 \\
        --variant "tiles=-DXT_MIN_ROWS=9 -DXT_MAX_ROWS=96"   # any -D knobs of csrc/moe_small.c

Each variant is ``cpu_native.variant(*defines)``; the first column is the default
build, the next two the same with the weights packed block by block in every call
(``prepack=False``) and with packed copies of them kept (``prepack=True``), both on
the paths the build picks where copies are kept; the default and the variants keep
copies (``cpu_native.packed_copies``) unless built with -DPREPACK_PAYS=0, which also
brings back the paths without copies (token tiles on AVX2). Knobs: TUNE_ZEN (1: the
values measured on AMD Zen 3 and 4, which the build passes on AMD CPUs before family
26; 5: those and Zen 5's, from family 26 on; 0: those measured on an Intel Xeon),
LANES (8 or 16), XT_MIN_ROWS / XT_MAX_ROWS (token tiles), WR, MR (up to 12),
BLOCK_ROWS, PACKED_MIN_ROWS, SPREAD_PASSES, BALANCED_PASSES (passes of equal size),
ONE_PASS_FETCHES_ALL (a block's only pass fetches all of the next),
PREFETCH_AHEAD / PREFETCH_NEAR / NEAR_ROWS (prefetch distance in floats, and the
passes that take the near one), UNITS_PER_THREAD (work units per thread),
PREPACK_PAYS (keep packed copies), COPIES_MIN_ROWS (the packed path's start with copies).

Each round times a ``sum`` over 1 GiB (the bandwidth free at that moment), then
every variant, in a new order each round (the call right after the probe ran up to
14 % slower, and a rotated fixed order kept each variant's predecessor: on Zen 5 the
"packed per call" column, the default's own code at one token, measured 0.975 that
way and 1.006 since), with the last-level cache flushed before each call
(weights from DRAM, as in bench/kernels.py); each size runs for ``--seconds``.
The shared hosts here switch between bandwidth levels every few seconds (about 34
and 58 GB/s on a Zen 4 host), and a variant can win at one level and lose at the
other, so when the probes spread by more than 1.3x the rounds are also reported
split at the middle of that spread (groups of 10 rounds or more). Compare the
ratios (medians of each round's own ratio), not the times. Every variant's output
is checked against the default's first.
"""

from __future__ import annotations

import argparse
import functools
import random
import statistics
import sys
import time
from pathlib import Path

_HERE = Path(__file__).resolve().parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != _HERE]

import torch

from moeplane.kernels import cpu_native, route

# Each CPU family's tuning (one of them is this CPU's own: a control), and the paths without
# packed copies of the weights (docs/kernels-cpu.md).
DEFAULT_VARIANTS = {
    "Zen tuning": "-DTUNE_ZEN=1",
    "Xeon tuning": "-DTUNE_ZEN=0",
    "no copies": "-DPREPACK_PAYS=0",
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tokens", default="1,8,32,128,512")
    parser.add_argument("--experts", type=int, default=64)
    parser.add_argument("--top-k", type=int, default=8)
    parser.add_argument("--hidden", type=int, default=1024)
    parser.add_argument("--inter", type=int, default=384)
    parser.add_argument("--seconds", type=float, default=20.0, help="per size")
    parser.add_argument(
        "--variant", action="append", metavar="NAME=DEFINES", help="e.g. 'wr8=-DWR=8'"
    )
    args = parser.parse_args()
    specs = dict(v.split("=", 1) for v in args.variant) if args.variant else DEFAULT_VARIANTS
    if not cpu_native.available():
        sys.exit("the C kernel does not build here (see the log)")
    kernels = {
        "default": cpu_native.inference_experts,
        "packed per call": functools.partial(cpu_native.inference_experts, prepack=False),
        "packed copies": functools.partial(cpu_native.inference_experts, prepack=True),
    } | {name: cpu_native.variant(*defines.split()) for name, defines in specs.items()}
    gen = torch.Generator().manual_seed(0)
    e, h, i = args.experts, args.hidden, args.inter
    gate_up = torch.randn(e, 2 * i, h, generator=gen) * h**-0.5
    down = torch.randn(e, h, i, generator=gen) * i**-0.5
    # the "packed copies" column's own tensors (same values): copies kept for it would
    # otherwise serve the default build too (they are kept per tensor and build)
    own = {"packed copies": (gate_up.clone(), down.clone())}
    flush = torch.ones(64 << 20)  # 256 MB: more than any last-level cache here
    big = torch.ones(2**30 // 4)
    print(f"E{e} top{args.top_k} H{h} I{i}, {torch.get_num_threads()} threads, float32, cold")
    others = [name for name in kernels if name != "default"]
    print(
        "tokens | rounds | GB/s | "
        + " | ".join(f"{name} ms" for name in kernels)
        + " | "
        + " | ".join(f"{name} / default" for name in others)
    )
    for tokens in (int(t) for t in args.tokens.split(",")):
        x = torch.randn(tokens, h, generator=gen)
        weights, ids = route(torch.randn(tokens, e, generator=gen), args.top_k, True)
        want = kernels["default"](x, gate_up, down, weights, ids)
        for name, kernel in kernels.items():
            for _ in range(2):  # the second call packs the weights, where it does (prepack)
                got = kernel(x, *own.get(name, (gate_up, down)), weights, ids)
                torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-4, msg=name)
        rounds: list[dict[str, float]] = []
        end = time.monotonic() + args.seconds
        while time.monotonic() < end or len(rounds) < 3:
            flush.sum()  # read: clean lines, as bench/kernels.py
            start = time.perf_counter()
            big.sum()
            ms = {"GB/s": 2**30 / (time.perf_counter() - start) / 1e9}
            # a new order every round (seeded): a call's predecessor moves its time
            for name in random.Random(len(rounds)).sample(list(kernels), len(kernels)):
                flush.sum()
                start = time.perf_counter()
                kernels[name](x, *own.get(name, (gate_up, down)), weights, ids)
                ms[name] = (time.perf_counter() - start) * 1e3
            rounds.append(ms)
        groups = {f"{tokens}": rounds}
        low, high = min(r["GB/s"] for r in rounds), max(r["GB/s"] for r in rounds)
        if high > 1.3 * low:
            middle = (low + high) / 2
            groups[f"{tokens} below {middle:.0f} GB/s"] = [r for r in rounds if r["GB/s"] < middle]
            groups[f"{tokens} above {middle:.0f} GB/s"] = [r for r in rounds if r["GB/s"] >= middle]
        for level, group in groups.items():
            if len(group) < 10:
                continue
            cells = [f"{statistics.median(r[name] for r in group):.2f}" for name in kernels]
            ratios = [
                f"{statistics.median(r[name] / r['default'] for r in group):.3f}" for name in others
            ]
            gbs = statistics.median(r["GB/s"] for r in group)
            print(f"{level} | {len(group)} | {gbs:.1f} | " + " | ".join(cells + ratios))


if __name__ == "__main__":
    main()
