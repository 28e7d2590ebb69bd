"""The C experts kernel with its weights on 4 KiB pages vs transparent huge pages.

    python bench/huge_pages.py                 # E64 top8 H1024 I384, 1-512 tokens
    python bench/huge_pages.py --experts 128 --seconds 20

Whether a process should run with ``THP_MEM_ALLOC_ENABLE=1`` (torch's CPU
allocator then asks for huge pages, ``madvise(MADV_HUGEPAGE)``, for blocks of
2 MB and more: fewer TLB misses while the weights stream). Serving does not set
it: the gains measured so far were not consistent (docs/benchmarks.md). One
process holds two copies of the weights, one on ordinary pages and one madvised
on a 2 MiB boundary before it is written, and times the same call on each,
alternating which goes first, with the last-level cache flushed before every
call. Prints the medians and the median of each round's ratio (huge / 4 KiB;
below 1 is faster). Needs THP in "madvise" or "always" mode
(/sys/kernel/mm/transparent_hugepage/enabled).
"""

from __future__ import annotations

import argparse
import ctypes
import statistics
import sys
import time
from pathlib import Path

_HERE = Path(__file__).resolve().parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != _HERE]

import torch

from moeplane.kernels import cpu_native, route

_MADV_HUGEPAGE = 14
_HUGE = 2 << 20


def huge_copy(t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """A copy of ``t`` on huge pages, and the buffer that owns it (keep it alive)."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.madvise.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
    n = t.numel()
    raw = torch.empty(n + _HUGE // 4, dtype=t.dtype)  # room to start on a 2 MiB boundary
    start = (-raw.data_ptr()) % _HUGE // 4
    out = raw[start : start + n]
    if libc.madvise(out.data_ptr(), n * 4 // _HUGE * _HUGE, _MADV_HUGEPAGE) != 0:
        sys.exit(f"madvise failed (errno {ctypes.get_errno()}): no huge pages here")
    out.copy_(t.reshape(-1))  # first touch after madvise: the pages fault in huge
    return out.view(t.shape), raw


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tokens", default="1,8,32,128,512")
    parser.add_argument("--experts", type=int, default=64)
    parser.add_argument("--top-k", type=int, default=8)
    parser.add_argument("--hidden", type=int, default=1024)
    parser.add_argument("--inter", type=int, default=384)
    parser.add_argument("--seconds", type=float, default=12.0, help="per size")
    args = parser.parse_args()
    if not cpu_native.available():
        sys.exit("the C kernel does not build here (see the log)")
    kernel = cpu_native.inference_experts
    gen = torch.Generator().manual_seed(0)
    e, h, i = args.experts, args.hidden, args.inter
    small = {
        "gate_up": torch.randn(e, 2 * i, h, generator=gen) * h**-0.5,
        "down": torch.randn(e, h, i, generator=gen) * i**-0.5,
    }
    copies = {name: huge_copy(t) for name, t in small.items()}
    huge = {name: copy for name, (copy, _) in copies.items()}
    pages = {"4 KiB": small, "huge": huge}
    flush = torch.empty(768 << 18)  # 768 MiB, as bench/kernels.py
    print(f"E{e} top{args.top_k} H{h} I{i}, {torch.get_num_threads()} threads, float32, cold")
    print("tokens | rounds | 4 KiB ms | huge ms | huge / 4 KiB")
    for tokens in (int(t) for t in args.tokens.split(",")):
        x = torch.randn(tokens, h, generator=gen)
        weights, ids = route(torch.randn(tokens, e, generator=gen), args.top_k, True)
        want = kernel(x, small["gate_up"], small["down"], weights, ids)
        assert torch.equal(kernel(x, huge["gate_up"], huge["down"], weights, ids), want)
        rounds: list[dict[str, float]] = []
        end = time.monotonic() + args.seconds
        while time.monotonic() < end or len(rounds) < 3:
            order = list(pages) if len(rounds) % 2 == 0 else list(pages)[::-1]
            ms = {}
            for name in order:
                flush.fill_(1.0)
                start = time.perf_counter()
                kernel(x, pages[name]["gate_up"], pages[name]["down"], weights, ids)
                ms[name] = (time.perf_counter() - start) * 1e3
            rounds.append(ms)
        cells = [f"{statistics.median(r[name] for r in rounds):.2f}" for name in pages]
        ratio = statistics.median(r["huge"] / r["4 KiB"] for r in rounds)
        print(f"{tokens} | {len(rounds)} | " + " | ".join(cells) + f" | {ratio:.3f}")


if __name__ == "__main__":
    main()
