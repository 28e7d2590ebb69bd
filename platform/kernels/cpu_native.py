"""Small-batch experts on CPU in C (``csrc/moe_small.c``), compiled on first use.

At decode sizes (a few rows per expert) the layer only has to stream each
active expert's weights once. The C loop loads each weight once, multiplies it
with all of the expert's rows in registers, and fuses gather, SwiGLU, the
routing weight and the sum over top-k, with no per-call setup (a oneDNN GEMM
costs ~12 us to set up). It runs on the calling thread: on 2 cores a second
thread made it slower (1.5 vs 4.6 ms at one token: torch's OpenMP workers
still spin after the previous op), so ``torch_path.use_native`` only picks it
where torch runs on few threads.

The library is built with the system C compiler (``$CC``, else ``cc``) for this
CPU (``-march=native``) into ``$XDG_CACHE_HOME/moeplane/kernels`` (default
``~/.cache/moeplane/kernels``), keyed by source, compiler and CPU flags, and
loaded with ``ctypes`` (which releases the GIL during calls). Without a
compiler, or if the build fails, ``available()`` is False and callers use the
torch path; the reason is logged once. Inference only (float32, contiguous
weights): under autograd the torch path runs.
"""

from __future__ import annotations

import ctypes
import functools
import hashlib
import itertools
import logging
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import torch

__all__ = ["available", "small_batch_experts"]

log = logging.getLogger(__name__)

_SOURCE = Path(__file__).with_name("csrc") / "moe_small.c"
_FLAGS = ("-O3", "-march=native", "-ffp-contract=fast", "-fPIC", "-shared")
_I64 = ctypes.c_int64
_PTR = ctypes.c_void_p


def available() -> bool:
    """Whether the C kernel is built (or builds now) and loads."""
    return _library() is not None


def small_batch_experts(
    hidden: torch.Tensor,
    gate_up_proj: torch.Tensor,
    down_proj: torch.Tensor,
    row_weights: torch.Tensor,
    token_index: torch.Tensor,
    counts: torch.Tensor,
) -> torch.Tensor:
    """``torch_path.fused_expert_loop``'s arguments and result (``(T, H)``, each
    token's weighted sum over its rows), forward only, float32 on CPU."""
    lib = _library()
    assert lib is not None, "the C kernel is not available (see available())"
    assert hidden.dtype == gate_up_proj.dtype == down_proj.dtype == torch.float32
    assert not (hidden.requires_grad and torch.is_grad_enabled()), "forward only"
    inter, size = down_proj.size(-1), hidden.size(1)
    hidden, gate_up_proj, down_proj = (t.contiguous() for t in (hidden, gate_up_proj, down_proj))
    token_index = token_index.to(torch.int64).contiguous()
    row_weights = row_weights.to(torch.float32).contiguous()

    counts_list = counts.tolist()
    starts = [0, *itertools.accumulate(counts_list)][:-1]
    active = [e for e, count in enumerate(counts_list) if count]
    out = torch.zeros_like(hidden)
    if not active:
        return out
    experts = torch.tensor(active, dtype=torch.int64)
    row_start = torch.tensor([starts[e] for e in active], dtype=torch.int64)
    row_count = torch.tensor([counts_list[e] for e in active], dtype=torch.int64)
    scratch = torch.empty(lib.moe_small_scratch_floats(size, inter), dtype=torch.float32)
    lib.moe_small_experts(
        hidden.data_ptr(),
        gate_up_proj.data_ptr(),
        down_proj.data_ptr(),
        token_index.data_ptr(),
        row_weights.data_ptr(),
        experts.data_ptr(),
        row_start.data_ptr(),
        row_count.data_ptr(),
        len(active),
        size,
        inter,
        out.data_ptr(),
        scratch.data_ptr(),
    )
    return out


@functools.cache
def _library() -> ctypes.CDLL | None:
    try:
        path = _build()
        lib = ctypes.CDLL(str(path))
    except (OSError, RuntimeError, subprocess.SubprocessError) as exc:
        log.warning("moeplane: C experts kernel unavailable, using the torch path: %s", exc)
        return None
    lib.moe_small_scratch_floats.argtypes = [_I64, _I64]
    lib.moe_small_scratch_floats.restype = _I64
    lib.moe_small_experts.argtypes = [_PTR] * 8 + [_I64, _I64, _I64, _PTR, _PTR]
    lib.moe_small_experts.restype = None
    return lib


def _build() -> Path:
    """The compiled library for this source, compiler and CPU, building it if needed."""
    compiler = shutil.which(os.environ.get("CC", "cc"))
    if compiler is None:
        raise RuntimeError("no C compiler (set CC, or install gcc)")
    source = _SOURCE.read_bytes()
    version = subprocess.run(
        [compiler, "--version"], capture_output=True, text=True, check=True, timeout=30
    ).stdout
    key = hashlib.sha256(
        b"\0".join([source, " ".join(_FLAGS).encode(), version.encode(), _cpu_signature().encode()])
    ).hexdigest()[:16]
    caches = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    cache = caches / "moeplane" / "kernels"
    target = cache / f"moe_small-{key}.so"
    if target.exists():
        return target
    cache.mkdir(parents=True, exist_ok=True)
    # Build beside the target and rename: concurrent processes never load a half-written file.
    fd, tmp = tempfile.mkstemp(dir=cache, suffix=".so.tmp")
    os.close(fd)
    try:
        done = subprocess.run(
            [compiler, *_FLAGS, "-o", tmp, str(_SOURCE), "-lm"],
            capture_output=True,
            text=True,
            timeout=120,
        )
        if done.returncode != 0:
            raise RuntimeError(f"{compiler} failed: {done.stderr.strip()[-2000:]}")
        os.replace(tmp, target)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    log.info("moeplane: built the C experts kernel at %s", target)
    return target


def _cpu_signature() -> str:
    """What ``-march=native`` depends on: the machine and, on Linux, the CPU flags."""
    flags = ""
    try:
        with open("/proc/cpuinfo") as info:
            flags = next((line for line in info if line.startswith("flags")), "")
    except OSError:
        pass
    return f"{os.uname().machine} {flags}"
