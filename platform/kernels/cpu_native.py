"""SwiGLU experts on CPU in C (``csrc/moe_small.c``) for inference, compiled on first use.

One C call sorts the routed pairs by expert, gathers the rows, reads every
active expert's weights once for all of its rows (dot products at decode
sizes, a packed GEMM microkernel from 9 rows per expert, 3 on Zen 5) and fuses
SwiGLU, the routing weight and the sum over top-k: no Python work per expert and no
per-call GEMM setup (a oneDNN GEMM costs ~12 us to set up). It was faster than
the oneDNN expert loop at every size measured (docs/kernels.md). By default
(``packed_copies``) the packed microkernel's weight panels are packed once per
weight tensor and kept while it lives unchanged (``_packed``; as much memory
again for the experts' weights, no float changes).

It runs in torch's own OpenMP pool, on ``torch.get_num_threads()`` threads:
the library is built with ``-fopenmp`` and links ``libgomp.so.1``, which the
loader resolves to the copy torch loaded. (A pool of its own was slower on 2
cores, 1.5 vs 4.6 ms at one token: torch's OpenMP workers still spin after
the previous op and took the second core.)

The library is built with the system C compiler (``$CC``, else ``cc``) for this
CPU (``-march=native``) into ``$XDG_CACHE_HOME/moeplane/kernels`` (default
``~/.cache/moeplane/kernels``), keyed by source, compiler, flags and CPU, and
loaded with ``ctypes`` (which releases the GIL during calls). Without a
compiler, or if the build fails, ``available()`` is False and callers use the
torch path; the reason is logged once. If only the OpenMP build fails, it
runs on one thread. Inference only (float32): under autograd the torch path
runs.
"""

from __future__ import annotations

import ctypes
import functools
import hashlib
import logging
import os
import shutil
import subprocess
import tempfile
import threading
from collections.abc import Callable
from pathlib import Path

import torch
from torch.utils.weak import WeakIdKeyDictionary

from moeplane.kernels import torch_path

__all__ = ["available", "inference_experts", "packed_copies", "scratch_bytes", "variant"]

log = logging.getLogger(__name__)

_SOURCE = Path(__file__).with_name("csrc") / "moe_small.c"
_FLAGS = ("-O3", "-march=native", "-ffp-contract=fast", "-fPIC", "-shared")
_I64 = ctypes.c_int64
_PTR = ctypes.c_void_p
_SCRATCH_KEEP_BYTES = torch_path.DEFAULT_TUNING.native_max_scratch_bytes
_buffers = threading.local()  # scratch per calling thread (ctypes calls run without the GIL)
# weight tensor -> ((data_ptr, version, shape) it had, {id(library): its packed copy, or the
# most rows an expert had in a call that passed it, enough for the packed path: pack next})
_packed_weights: WeakIdKeyDictionary = WeakIdKeyDictionary()
_COPIES_MODES = ("auto", "on", "off")
_copies_mode = "auto"  # packed_copies()
_packed_lock = threading.Lock()


def available() -> bool:
    """Whether the C kernel is built (or builds now) and loads."""
    return _library() is not None


def packed_copies(mode: str) -> None:
    """Whether this process keeps packed copies of weight tensors (as much memory again for
    the experts' weights): ``"auto"`` (the default: the build's ``PREPACK_PAYS``, on unless
    built otherwise), ``"on"`` or ``"off"``. With copies the packed path runs from 9 rows per
    expert (3 on AMD Zen 5): against no copies 1.1-1.3x faster at 64-512 tokens on an Intel
    Xeon, 1.02-1.14x on AMD Zen 3 (whose AVX2 build otherwise runs token tiles there).
    Single-token decode runs the same either way. ``"off"`` also drops the copies kept so
    far. A serving replica sets it from its deployment's ``resources.packed_weights``;
    ``prepack=`` of a call says whether that call uses a copy, within the same paths."""
    global _copies_mode
    assert mode in _COPIES_MODES, f"packed_copies must be one of {_COPIES_MODES}, got {mode!r}"
    with _packed_lock:
        _copies_mode = mode
        if mode == "off":
            _packed_weights.clear()


def scratch_bytes(rows: int, hidden: int, inter: int) -> int:
    """Bytes of scratch a call over ``rows`` (token, k) pairs needs on torch's threads."""
    lib = _library()
    assert lib is not None, "the C kernel is not available (see available())"
    floats = _scratch_numels(lib, rows, hidden, inter, 0, torch.get_num_threads())[0]
    return floats * 4 + rows * 8  # and the sort's int64 per row


def inference_experts(
    hidden: torch.Tensor,
    gate_up_proj: torch.Tensor,
    down_proj: torch.Tensor,
    weights: torch.Tensor,
    expert_ids: torch.Tensor,
    first_expert: int = 0,
    *,
    prepack: bool | None = None,
) -> torch.Tensor:
    """Weighted sum of SwiGLU experts per token, forward only, float32 on CPU.

    Args:
        hidden: ``(T, H)``.
        gate_up_proj: ``(G, 2I, H)`` and down_proj ``(G, H, I)``: experts
            ``first_expert .. first_expert + G - 1``.
        weights: ``(T, top_k)`` routing weights; expert_ids ``(T, top_k)``
            global ids (pairs routed outside the ``G`` experts add zero).
        prepack: use (and keep, while the weight tensors live unchanged) copies
            of the weights packed for the packed path: True packs now, False
            never, None when ``torch_path.prepack`` says so (``packed_copies``).

    Returns:
        ``(T, H)``.
    """
    lib = _library()
    assert lib is not None, "the C kernel is not available (see available())"
    return _run(
        lib, hidden, gate_up_proj, down_proj, weights, expert_ids, first_expert, prepack=prepack
    )


def variant(*defines: str, openmp: bool = True) -> Callable[..., torch.Tensor]:
    """``inference_experts`` of the C file built with extra ``-D`` defines, e.g.
    ``variant("-DLANES=16")``: the tests run the vector widths and paths that this
    CPU's own build does not pick (16 lanes build on AVX2 too, as pairs of registers).
    ``openmp=False`` builds the one-thread fallback, which works through every
    thread's share of the work itself."""
    lib = _load(tuple(defines), openmp)
    assert lib is not None, f"the C kernel does not build with {defines}"
    return functools.partial(_run, lib)


def _run(
    lib: ctypes.CDLL,
    hidden: torch.Tensor,
    gate_up_proj: torch.Tensor,
    down_proj: torch.Tensor,
    weights: torch.Tensor,
    expert_ids: torch.Tensor,
    first_expert: int = 0,
    *,
    prepack: bool | None = None,
) -> torch.Tensor:
    # Each Python step here runs with cold caches in a decode step (the layer's weights
    # stream through L2 and L3 between calls), where it costs ~5-25 us, not the ~0.1-1 us
    # of a warm loop: no-op conversions and lookups are skipped (docs/kernels-cpu.md).
    assert hidden.dtype == gate_up_proj.dtype == down_proj.dtype == torch.float32
    assert not (hidden.requires_grad and torch.is_grad_enabled()), "forward only"
    tokens, size = hidden.shape
    num_experts, _, inter = down_proj.shape
    top_k = expert_ids.shape[1]
    # the paths' switch points follow the mode, not whether a copy exists yet
    copies = _copies_mode == "on" or (_copies_mode == "auto" and lib.prepack_pays)
    # An expert has at most one row per token: below the packed path's switch point no packed
    # copy is read, so none is looked up or noted (the same floats either way).
    packed, packed_ptrs = None, (None, None)
    if prepack or (prepack is None and tokens >= lib.packed_min_rows_by_copies[copies]):
        packed = [_packed(lib, w, prepack, copies) for w in (gate_up_proj, down_proj)]
        packed_ptrs = [None if p is None else p.data_ptr() for p in packed]
    hidden = hidden.contiguous()
    gate_up_proj = gate_up_proj.contiguous()
    down_proj = down_proj.contiguous()
    if expert_ids.dtype != torch.int64:
        expert_ids = expert_ids.to(torch.int64)
    if weights.dtype != torch.float32:
        weights = weights.to(torch.float32)
    expert_ids, weights = expert_ids.contiguous(), weights.contiguous()
    out = torch.empty_like(hidden)
    threads = torch.get_num_threads()
    floats, ints = _scratch_numels(lib, tokens * top_k, size, inter, num_experts, threads)
    floats, ints = _scratch("floats", floats, torch.float32), _scratch("ints", ints, torch.int64)
    most = lib.moe_small_experts(
        hidden.data_ptr(),
        gate_up_proj.data_ptr(),
        down_proj.data_ptr(),
        *packed_ptrs,
        expert_ids.data_ptr(),
        weights.data_ptr(),
        tokens,
        top_k,
        first_expert,
        num_experts,
        size,
        inter,
        out.data_ptr(),
        floats.data_ptr(),
        ints.data_ptr(),
        threads,
        copies,
    )
    if packed is not None and prepack is None and copies:
        _note_rows(lib, (gate_up_proj, down_proj), packed, most)
    return out


def _packed(
    lib: ctypes.CDLL, w: torch.Tensor, prepack: bool | None, copies: bool
) -> torch.Tensor | None:
    """``w`` (E, N, K) packed by ``lib``'s ``moe_pack_weights`` (builds differ in panel
    width), kept while ``w`` lives unchanged (same storage, no in-place update since), or
    None: the call packs block by block. With ``prepack`` None and ``copies`` kept in this
    process (``packed_copies``) a tensor is packed on the call after one whose busiest
    expert had the rows for the packed path (``_note_rows``, ``torch_path.prepack``; a view
    made per call is never seen twice). Decode calls cost a dict lookup here and no torch
    op: with cold caches each op costs ~0.1 ms, a twentieth of a one-token layer."""
    if prepack is False or not w.is_contiguous():
        return None
    if w not in _packed_weights and not prepack:
        return None
    with _packed_lock:
        key, copies = _entry(w)
        state = copies.get(id(lib))
        if isinstance(state, torch.Tensor):
            return state
        if not prepack and not torch_path.prepack(
            state or 0, lib.packed_min_rows, state is not None, copies
        ):
            return None
        experts, n, k = w.shape
        out = torch.empty(lib.moe_packed_floats(experts, n, k), dtype=torch.float32)
        lib.moe_pack_weights(w.data_ptr(), experts, n, k, out.data_ptr())
        _packed_weights[w] = (key, copies | {id(lib): out})
        return out


def _note_rows(
    lib: ctypes.CDLL,
    tensors: tuple[torch.Tensor, ...],
    packed: list[torch.Tensor | None],
    most: int,
) -> None:
    """After a call whose busiest expert had the rows for the packed path, remember that of
    each weight tensor not packed yet (contiguous ones): the next call packs it."""
    if most < lib.packed_min_rows:
        return
    with _packed_lock:
        for w, copy in zip(tensors, packed, strict=True):
            if copy is not None or not w.is_contiguous():
                continue
            key, copies = _entry(w)
            _packed_weights[w] = (key, copies | {id(lib): int(most)})


def _entry(w: torch.Tensor) -> tuple[tuple, dict[int, torch.Tensor | int]]:
    """``w``'s key now (storage, version, shape) and what is kept for it under that key
    (nothing once it changed)."""
    key = (w.data_ptr(), w._version, tuple(w.shape))
    known = _packed_weights.get(w)
    return key, known[1] if known is not None and known[0] == key else {}


@functools.lru_cache(maxsize=4096)
def _scratch_numels(
    lib: ctypes.CDLL, rows: int, size: int, inter: int, num_experts: int, threads: int
) -> tuple[int, int]:
    """Floats and int64s of scratch a call needs (remembered: a ctypes call costs ~15 us
    with cold caches)."""
    return (
        lib.moe_small_scratch_floats(rows, size, inter, threads),
        lib.moe_small_scratch_ints(rows, num_experts),
    )


def _scratch(name: str, numel: int, dtype: torch.dtype) -> torch.Tensor:
    """A buffer of at least ``numel`` elements, kept per thread between calls: a fresh
    multi-MB tensor costs page faults on every call (glibc returns big blocks to the OS),
    which made 512 tokens 2x slower. Buffers past ``_SCRATCH_KEEP_BYTES`` are not kept."""
    buf = getattr(_buffers, name, None)
    if buf is not None and buf.numel() >= numel:
        return buf
    buf = torch.empty(numel, dtype=dtype)
    if numel * buf.element_size() <= _SCRATCH_KEEP_BYTES:
        setattr(_buffers, name, buf)
    return buf


def _library() -> ctypes.CDLL | None:
    return _load((), True)


@functools.cache
def _load(defines: tuple[str, ...], openmp: bool) -> ctypes.CDLL | None:
    try:
        path = _build(defines, openmp)
        lib = ctypes.CDLL(str(path))
    except (OSError, RuntimeError, subprocess.SubprocessError) as exc:
        log.warning("moeplane: C experts kernel unavailable, using the torch path: %s", exc)
        return None
    lib.moe_small_scratch_floats.argtypes = [_I64, _I64, _I64, _I64]
    lib.moe_small_scratch_floats.restype = _I64
    lib.moe_small_scratch_ints.argtypes = [_I64, _I64]
    lib.moe_small_scratch_ints.restype = _I64
    lib.moe_small_experts.argtypes = [_PTR] * 7 + [_I64] * 6 + [_PTR] * 3 + [ctypes.c_int] * 2
    lib.moe_packed_floats.argtypes = [_I64, _I64, _I64]
    lib.moe_packed_floats.restype = _I64
    lib.moe_pack_weights.argtypes = [_PTR, _I64, _I64, _I64, _PTR]
    lib.moe_pack_weights.restype = None
    lib.moe_packed_min_rows.argtypes = [ctypes.c_int]
    lib.moe_packed_min_rows.restype = _I64
    lib.packed_min_rows = lib.moe_packed_min_rows(1)  # with copies kept: when to pack
    lib.packed_min_rows_by_copies = (lib.moe_packed_min_rows(0), lib.packed_min_rows)
    lib.moe_prepack_pays.argtypes = []
    lib.moe_prepack_pays.restype = _I64
    lib.prepack_pays = bool(lib.moe_prepack_pays())
    lib.moe_small_experts.restype = _I64
    return lib


def _build(defines: tuple[str, ...] = (), openmp: bool = True) -> Path:
    """The compiled library for this source, compiler and CPU, building it if needed.

    With OpenMP where torch uses it: the library then links ``libgomp.so.1``,
    which the loader resolves to the copy torch already loaded (same soname),
    so the kernel runs in torch's thread pool.
    """
    compiler = shutil.which(os.environ.get("CC", "cc"))
    if compiler is None:
        raise RuntimeError("no C compiler (set CC, or install gcc)")
    if not any(define.startswith("-DTUNE_ZEN") for define in defines):
        defines = (*_tuning(), *defines)
    if openmp and torch._C.has_openmp:
        try:
            return _build_with(compiler, (*_FLAGS, *defines, "-fopenmp"))
        except RuntimeError as exc:
            log.warning("moeplane: C experts kernel built without OpenMP (one thread): %s", exc)
    return _build_with(compiler, (*_FLAGS, *defines))


def _tuning() -> tuple[str, ...]:
    """The C file's tuning for this CPU family (csrc/moe_small.c): ``TUNE_ZEN`` on AMD, 5 from
    family 26 (Zen 5) on, 1 before."""
    if "AuthenticAMD" not in _cpuinfo("vendor_id"):
        return ()
    family = _cpuinfo("cpu family").rpartition(":")[2].strip()
    return ("-DTUNE_ZEN=5",) if family.isdigit() and int(family) >= 26 else ("-DTUNE_ZEN=1",)


def _build_with(compiler: str, flags: tuple[str, ...]) -> Path:
    source = _SOURCE.read_bytes()
    version = subprocess.run(
        [compiler, "--version"], capture_output=True, text=True, check=True, timeout=30
    ).stdout
    key = hashlib.sha256(
        b"\0".join([source, " ".join(flags).encode(), version.encode(), _cpu_signature().encode()])
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
            [compiler, *flags, "-o", tmp, str(_SOURCE), "-lm"],
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
    """What ``-march=native`` depends on: the machine and, on Linux, the CPU's vendor and
    flags."""
    return f"{os.uname().machine} {_cpuinfo('vendor_id')} {_cpuinfo('flags')}"


def _cpuinfo(field: str) -> str:
    """The first ``field`` line of /proc/cpuinfo, or "" where there is none."""
    try:
        with open("/proc/cpuinfo") as info:
            return next((line.strip() for line in info if line.startswith(field)), "")
    except OSError:
        return ""
