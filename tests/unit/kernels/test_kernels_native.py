"""The C inference kernel (cpu_native) against the loop-over-experts reference."""

import concurrent.futures
import os

import pytest
import torch

from moeplane.kernels import cpu_native, experts, torch_path
from tests.unit.kernels.kernels_reference import ref_experts
from tests.unit.kernels.test_kernels_experts import SHAPES, _problem

pytestmark = pytest.mark.skipif(not cpu_native.available(), reason="no C compiler here")

# (tokens, experts, top_k, hidden, inter): hidden/inter off the vector width, experts with
# more rows than one register pass (8) takes, with 9-96 rows (token tiles on AVX2: wide and
# narrow tiles, passes of weight rows cut short) and with more (packed weights, in blocks of
# 2 vectors of weight rows, some partial).
NATIVE_SHAPES = [
    *SHAPES,
    (5, 4, 2, 37, 13),
    (40, 4, 1, 37, 13),
    (70, 2, 1, 40, 19),
    (64, 4, 4, 48, 24),
    (96, 1, 1, 24, 12),
    (100, 3, 2, 33, 17),
    (60, 3, 1, 37, 13),
    (300, 2, 1, 20, 40),
    (200, 4, 4, 64, 40),
    (128, 8, 8, 100, 36),
]

# Builds this CPU's own may not be: each vector width (16 lanes builds on AVX2 too, as pairs
# of registers) with each CPU family's tuning (Zen: dot products in blocks of 32 weight rows,
# others: blocks of 3; packed blocks fetched over all passes outside Zen 3/4), with packed
# copies of the weights (packed path from 9 rows, from 3 with Zen 5's tuning, no token tiles)
# and without ("no copies": packed from 12 rows on Zen, token tiles for 9-96 rows where the
# build has them), and the packed path's passes split otherwise (balanced on AVX-512 builds).
VARIANTS = {
    "8 lanes, Zen tuning": ("-DLANES=8", "-DTUNE_ZEN=1"),
    "8 lanes, Zen tuning, no copies": ("-DLANES=8", "-DTUNE_ZEN=1", "-DPREPACK_PAYS=0"),
    "8 lanes, Xeon tuning": ("-DLANES=8", "-DTUNE_ZEN=0"),
    "8 lanes, no token tiles, no copies": ("-DLANES=8", "-DXT_MIN_ROWS=1000", "-DPREPACK_PAYS=0"),
    "16 lanes, Zen tuning": ("-DLANES=16", "-DTUNE_ZEN=1"),
    "16 lanes, Zen tuning, no copies": ("-DLANES=16", "-DTUNE_ZEN=1", "-DPREPACK_PAYS=0"),
    "16 lanes, Xeon tuning": ("-DLANES=16", "-DTUNE_ZEN=0"),
    "16 lanes, Zen 5 tuning": ("-DLANES=16", "-DTUNE_ZEN=5"),
    "16 lanes, 12-row passes, not balanced": ("-DLANES=16", "-DMR=12", "-DBALANCED_PASSES=0"),
    "8 lanes, balanced passes": ("-DLANES=8", "-DBALANCED_PASSES=1"),
    "16 lanes, token tiles 9-96 rows, no copies": (
        "-DLANES=16",
        "-DXT_MIN_ROWS=9",
        "-DXT_MAX_ROWS=96",
        "-DPREPACK_PAYS=0",
    ),
}


@pytest.fixture(scope="module", params=VARIANTS)
def variant(request):
    return cpu_native.variant(*VARIANTS[request.param])


@pytest.mark.parametrize("shape", NATIVE_SHAPES, ids=str)
def test_native_matches_reference(shape):
    x, gate_up, down, weights, ids = _problem(*shape, torch.float32)
    out = experts(x, gate_up, down, weights, ids, backend="native")
    torch.testing.assert_close(
        out, ref_experts(x, gate_up, down, weights, ids), rtol=1e-4, atol=1e-4
    )


@pytest.mark.parametrize("shape", NATIVE_SHAPES, ids=str)
def test_every_build_variant_matches_reference(variant, shape):
    x, gate_up, down, weights, ids = _problem(*shape, torch.float32)
    torch.testing.assert_close(
        variant(x, gate_up, down, weights, ids),
        ref_experts(x, gate_up, down, weights, ids),
        rtol=1e-4,
        atol=1e-4,
    )


@pytest.mark.parametrize("local_weights", [False, True], ids=["global", "local"])
def test_native_expert_range_is_the_shards_partial_sum(local_weights):
    x, gate_up, down, weights, ids = _problem(16, 16, 4, 32, 16, torch.float32)
    start, stop = 4, 11
    held = (gate_up[start:stop], down[start:stop]) if local_weights else (gate_up, down)
    got = experts(x, *held, weights, ids, expert_range=(start, stop), backend="native")
    outside = (ids < start) | (ids >= stop)
    want = ref_experts(x, gate_up, down, weights.masked_fill(outside, 0.0), ids)
    torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-4)


def test_native_reads_non_contiguous_weights():
    x, gate_up, down, weights, ids = _problem(8, 8, 2, 32, 16, torch.float32)
    gate_up_t = gate_up.transpose(1, 2).contiguous().transpose(1, 2)  # same values, other strides
    got = experts(x, gate_up_t, down, weights, ids, backend="native")
    torch.testing.assert_close(
        got, ref_experts(x, gate_up, down, weights, ids), rtol=1e-4, atol=1e-4
    )


def test_native_is_forward_only():
    x, gate_up, down, weights, ids = _problem(4, 8, 2, 32, 16, torch.float32)
    with pytest.raises(AssertionError, match="forward-only"):
        experts(x.requires_grad_(), gate_up, down, weights, ids, backend="native")


@pytest.fixture
def native_calls(monkeypatch):
    """A list that gets one entry per call of the C kernel."""
    calls = []
    real = cpu_native.inference_experts
    monkeypatch.setattr(
        cpu_native, "inference_experts", lambda *a, **k: calls.append(1) or real(*a, **k)
    )
    return calls


def test_auto_runs_native_for_inference_up_to_its_limits(native_calls):
    calls = native_calls
    x, gate_up, down, weights, ids = _problem(8, 8, 2, 32, 16, torch.float32)
    with torch.no_grad():
        experts(x, gate_up, down, weights, ids)
    assert calls == [1]
    big = _problem(600, 2, 1, 32, 16, torch.float32)  # 300 rows per expert: the torch path
    with torch.no_grad():
        experts(*big)
    assert calls == [1]
    experts(x, gate_up.requires_grad_(), down, weights, ids).sum().backward()  # autograd: torch
    assert calls == [1] and gate_up.grad is not None


def test_auto_counts_only_the_shards_rows(native_calls):
    calls = native_calls
    # 600 tokens on expert 0 and 1 token on expert 1: shard (1, 2) has one row per expert
    x, gate_up, down, weights, _ = _problem(601, 2, 1, 32, 16, torch.float32)
    ids = torch.zeros(601, 1, dtype=torch.int64)
    ids[-1] = 1
    with torch.no_grad():
        got = experts(x, gate_up, down, weights, ids, expert_range=(1, 2))
    assert calls == [1]
    want = ref_experts(x, gate_up, down, weights.masked_fill(ids != 1, 0.0), ids)
    torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-4)


def test_native_ignores_ids_past_its_experts():
    # expert-parallel sentinels (id >= E) add zero, as in permute
    x, gate_up, down, weights, ids = _problem(12, 8, 2, 32, 16, torch.float32)
    ids = ids.clone()
    ids[::3, 0] = 8
    got = experts(x, gate_up, down, weights, ids, backend="native")
    want = ref_experts(x, gate_up, down, weights.masked_fill(ids == 8, 0.0), ids.clamp(max=7))
    torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-4)


def _on_threads(threads, fn, *args, **kwargs):
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(threads)
        return fn(*args, **kwargs)
    finally:
        torch.set_num_threads(before)


@pytest.mark.parametrize("prepack", [False, True], ids=["packed per call", "prepacked"])
@pytest.mark.parametrize("threads", [2, 3])
def test_native_gives_the_same_sums_on_any_thread_count(threads, prepack):
    # 24 rows per expert (token tiles on AVX2); threads split experts' weight rows. (Which
    # path runs depends on prepacking, so both calls take the same setting.)
    problem = _problem(48, 8, 4, 80, 40, torch.float32)
    one = _on_threads(1, cpu_native.inference_experts, *problem, prepack=prepack)
    many = _on_threads(threads, cpu_native.inference_experts, *problem, prepack=prepack)
    # every output float is computed by one thread in a fixed order: bitwise equal
    assert torch.equal(one, many)


def test_one_thread_build_takes_every_threads_share():
    # Built without OpenMP, one thread runs but is told 3: it works through its own units, then
    # takes the other two queues' units from their backs (what a fast thread does to a slow
    # one's). Each unit is computed once: the sums match the reference and the pool's bitwise.
    one_thread = cpu_native.variant(openmp=False)
    problem = _problem(40, 8, 3, 72, 40, torch.float32)
    got = _on_threads(3, one_thread, *problem)
    torch.testing.assert_close(got, ref_experts(*problem), rtol=1e-4, atol=1e-4)
    assert torch.equal(got, _on_threads(3, experts, *problem, backend="native"))


@pytest.mark.parametrize("prepack", [False, True], ids=["packed per call", "prepacked"])
def test_every_build_variant_gives_the_same_sums_on_2_and_3_threads(variant, prepack):
    # experts of 2-30 rows: dot products, token tiles or packed weights, by variant
    problem = _problem(40, 8, 3, 72, 40, torch.float32)
    one = _on_threads(1, variant, *problem, prepack=prepack)
    assert torch.equal(one, _on_threads(2, variant, *problem, prepack=prepack))
    assert torch.equal(one, _on_threads(3, variant, *problem, prepack=prepack))


def test_native_runs_in_torchs_openmp_runtime():
    if not torch._C.has_openmp or not os.path.exists("/proc/self/maps"):
        pytest.skip("torch without OpenMP, or no /proc")
    cpu_native.available()
    with open("/proc/self/maps") as maps:
        mapped = {line.split()[-1] for line in maps}
    # the soname the library links; other packages may bring their own renamed copies
    # (scikit-learn's libgomp-<hash>.so), which are not ours to share
    gomp = {path for path in mapped if os.path.basename(path).startswith("libgomp.so")}
    torch_lib = os.path.join(os.path.dirname(torch.__file__), "lib")
    assert gomp and all(os.path.dirname(path) == torch_lib for path in gomp), gomp


def test_use_native_by_device_dtype_rows_per_expert_and_scratch():
    cpu = torch.device("cpu")
    assert torch_path.use_native(cpu, torch.float32, 256 * 64, 64)
    assert not torch_path.use_native(cpu, torch.float32, 257 * 64, 64)
    assert torch_path.use_native(cpu, torch.float32, 8, 64, scratch_bytes=256 * 2**20)
    assert not torch_path.use_native(cpu, torch.float32, 8, 64, scratch_bytes=256 * 2**20 + 1)
    tight = torch_path.TorchPathTuning(native_max_rows_per_expert=1)
    assert not torch_path.use_native(cpu, torch.float32, 2 * 64, 64, tight)
    assert not torch_path.use_native(cpu, torch.bfloat16, 8, 64)
    assert not torch_path.use_native(torch.device("cuda"), torch.float32, 8, 64)


def test_scratch_bytes_covers_the_buffers_a_call_takes():
    x, gate_up, down, weights, ids = _problem(40, 4, 4, 48, 24, torch.float32, seed=3)
    need = cpu_native.scratch_bytes(ids.numel(), 48, 24)
    assert need >= ids.numel() * (2 * 48 + 3 * 24) * 4
    assert cpu_native.scratch_bytes(2 * ids.numel(), 48, 24) > need
    experts(x, gate_up, down, weights, ids, backend="native")
    # the kept float buffer is this call's (or a larger earlier one)
    assert cpu_native._buffers.floats.nbytes >= need - ids.numel() * 8


def test_build_is_cached_per_source_and_cpu(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    first = cpu_native._build()
    assert first.parent == tmp_path / "moeplane" / "kernels" and first.suffix == ".so"
    built_at = first.stat().st_mtime_ns
    assert cpu_native._build() == first and first.stat().st_mtime_ns == built_at
    assert [p.name for p in first.parent.iterdir()] == [first.name]  # no temporary files left


def test_amd_cpus_build_with_the_zen_tuning(monkeypatch):
    info = {"vendor_id": "vendor_id\t: AuthenticAMD"}
    monkeypatch.setattr(cpu_native, "_cpuinfo", lambda field: info.get(field, ""))
    assert cpu_native._tuning() == ("-DTUNE_ZEN=1",)  # no family line: the older tuning
    assert "AuthenticAMD" in cpu_native._cpu_signature()  # a build per vendor
    for family, tuning in [(23, "1"), (25, "1"), (26, "5"), (27, "5")]:  # Zen 5 is family 26
        info["cpu family"] = f"cpu family\t: {family}"
        assert cpu_native._tuning() == (f"-DTUNE_ZEN={tuning}",), family
    info["vendor_id"] = "vendor_id\t: GenuineIntel"
    assert cpu_native._tuning() == ()


def test_switch_points_per_tuning():
    # rows per expert from which the packed path runs, with copies kept and without
    libs = {zen: cpu_native._load((f"-DTUNE_ZEN={zen}", "-DLANES=16"), True) for zen in "015"}
    points = {zen: (lib.packed_min_rows, lib.moe_packed_min_rows(0)) for zen, lib in libs.items()}
    assert points == {"0": (9, 9), "1": (9, 12), "5": (3, 12)}


def test_build_without_a_compiler_says_so(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    monkeypatch.setenv("CC", "/nonexistent/cc")
    with pytest.raises(RuntimeError, match="no C compiler"):
        cpu_native._build()


def test_native_reuses_its_scratch_and_leaves_nothing_stale():
    big = _problem(64, 4, 4, 48, 24, torch.float32, seed=1)
    small = _problem(3, 4, 2, 48, 24, torch.float32, seed=2)
    for problem in (big, small, big):  # the small call runs in the big call's buffers
        got = experts(*problem, backend="native")
        torch.testing.assert_close(got, ref_experts(*problem), rtol=1e-4, atol=1e-4)
    floats = cpu_native._buffers.floats
    experts(*small, backend="native")
    assert cpu_native._buffers.floats is floats  # kept, not reallocated


def test_native_calls_from_several_threads_at_once():
    problems = [_problem(16, 8, 2, 64, 32, torch.float32, seed=s) for s in range(4)]
    want = [ref_experts(*p) for p in problems]
    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        got = list(pool.map(lambda p: experts(*p, backend="native"), problems * 3))
    for i, out in enumerate(got):
        torch.testing.assert_close(out, want[i % 4], rtol=1e-4, atol=1e-4)


def test_native_with_no_rows_gives_zeros():
    x, gate_up, down, weights, ids = _problem(3, 8, 2, 32, 16, torch.float32)
    none_here = torch.zeros_like(ids)  # every pair on expert 0, outside the shard (5, 8)
    got = experts(x, gate_up, down, weights, none_here, expert_range=(5, 8), backend="native")
    assert torch.equal(got, torch.zeros_like(x))
    empty = experts(x[:0], gate_up, down, weights[:0], ids[:0], backend="native")
    assert empty.shape == (0, 32)


# and experts of 50-150 rows, split among threads inside experts at rows that are not a multiple
# of a packed panel's (the panel holding the first row is read from an offset)
PREPACK_SHAPES = [*NATIVE_SHAPES, (300, 4, 2, 72, 40), (200, 3, 1, 37, 13)]


@pytest.mark.parametrize("shape", PREPACK_SHAPES, ids=str)
def test_prepacked_weights_give_the_same_sums(variant, shape):
    # packing the weights before the call changes where they come from, not the path or a float
    problem = _problem(*shape, torch.float32)
    want = variant(*problem, prepack=False)
    torch.testing.assert_close(want, ref_experts(*problem), rtol=1e-4, atol=1e-4)
    for threads in (1, 2, 3):
        assert torch.equal(_on_threads(threads, variant, *problem, prepack=True), want)


@pytest.fixture
def copies_on():
    cpu_native.packed_copies("on")  # whatever this build's default
    yield
    cpu_native.packed_copies("auto")


def test_weights_are_packed_on_their_second_call_and_repacked_after_an_update(copies_on):
    x, gate_up, down, weights, ids = _problem(256, 4, 2, 48, 24, torch.float32, seed=5)
    lib = id(cpu_native._library())

    def packed(w):
        copy = cpu_native._packed_weights[w][1][lib]
        return copy if isinstance(copy, torch.Tensor) else None

    first = cpu_native.inference_experts(x, gate_up, down, weights, ids)
    assert packed(gate_up) is None and packed(down) is None  # seen once: not yet
    assert torch.equal(cpu_native.inference_experts(x, gate_up, down, weights, ids), first)
    copy = packed(gate_up)
    assert copy is not None and copy.numel() >= gate_up.numel() and packed(down) is not None
    assert torch.equal(cpu_native.inference_experts(x, gate_up, down, weights, ids), first)
    assert packed(gate_up) is copy  # kept
    # another build packs its own copy (panels of its vector width)
    other = cpu_native.variant("-DLANES=8", "-DTUNE_ZEN=1")
    torch.testing.assert_close(other(x, gate_up, down, weights, ids, prepack=True), first)
    assert packed(gate_up) is copy and len(cpu_native._packed_weights[gate_up][1]) == 2
    gate_up.mul_(0.5)  # an in-place update (an optimizer step) bumps the version
    updated = cpu_native.inference_experts(x, gate_up, down, weights, ids, prepack=True)
    assert packed(gate_up) is not copy
    torch.testing.assert_close(
        updated, ref_experts(x, gate_up, down, weights, ids), rtol=1e-4, atol=1e-4
    )


def test_non_contiguous_weights_are_never_packed():
    x, gate_up, down, weights, ids = _problem(256, 4, 2, 48, 24, torch.float32, seed=8)
    strided = gate_up.transpose(1, 2).contiguous().transpose(1, 2)  # same values, other strides
    got = cpu_native.inference_experts(x, strided, down, weights, ids, prepack=True)
    assert torch.equal(got, cpu_native.inference_experts(x, gate_up, down, weights, ids))
    assert strided not in cpu_native._packed_weights


def test_views_made_per_call_and_decode_calls_are_never_packed(copies_on):
    x, gate_up, down, weights, ids = _problem(256, 4, 2, 48, 24, torch.float32, seed=6)
    views = [(gate_up[1:3], down[1:3]) for _ in range(3)]  # a shard's slice taken per call
    for gate_up_view, down_view in views:
        cpu_native.inference_experts(x, gate_up_view, down_view, weights, ids, first_expert=1)
    lib = id(cpu_native._library())
    assert all(isinstance(cpu_native._packed_weights[w][1][lib], int) for p in views for w in p)
    few = _problem(2, 4, 2, 48, 24, torch.float32, seed=7)  # <= 2 rows per expert: dot products
    for _ in range(3):
        cpu_native.inference_experts(*few)
    assert few[1] not in cpu_native._packed_weights  # never noted, never packed


def test_calls_below_the_packed_switch_point_skip_the_copies_bookkeeping(copies_on, monkeypatch):
    # an expert has at most one row per token: with fewer tokens than the packed path's switch
    # point no copy is read, so none is looked up or noted (a decode step's Python, cold)
    lib = cpu_native._library()
    m = lib.packed_min_rows
    x, gate_up, down, weights, ids = _problem(m, 4, 2, 48, 24, torch.float32, seed=11)
    want = [
        cpu_native.inference_experts(x[:t], gate_up, down, weights[:t], ids[:t]) for t in (1, m)
    ]
    seen = []
    monkeypatch.setattr(cpu_native, "_packed", lambda lib, w, *a: seen.append(w))
    got = cpu_native.inference_experts(x[:1], gate_up, down, weights[:1], ids[:1])
    assert seen == [] and torch.equal(got, want[0])
    got = cpu_native.inference_experts(x, gate_up, down, weights, ids)
    assert seen == [gate_up, down] and torch.equal(got, want[1])
    # an explicit prepack=True still packs now, at any size
    monkeypatch.undo()
    cpu_native.inference_experts(x[:1], gate_up, down, weights[:1], ids[:1], prepack=True)
    assert isinstance(cpu_native._packed_weights[gate_up][1][id(lib)], torch.Tensor)


def test_prepack_decision(copies_on):
    assert not torch_path.prepack(30, 9, seen_before=False, enabled=True)
    assert torch_path.prepack(9, 9, seen_before=True, enabled=True)
    assert not torch_path.prepack(8, 9, True, True)  # decode sizes: dot products only
    assert not torch_path.prepack(10**6, 9, True, enabled=False)
    # the C kernel reports the busiest expert's rows (a shard: its own experts only)
    # (row counts relative to the build's switch point with copies kept)
    m = cpu_native._library().packed_min_rows
    x, gate_up, down, weights, _ = _problem(m + 3, 8, 2, 16, 8, torch.float32)
    ids = torch.tensor([[5, 6]] * (m + 1) + [[5, 7]] * 2)
    lib = id(cpu_native._library())
    cpu_native.inference_experts(x, gate_up, down, weights, ids)
    assert cpu_native._packed_weights[gate_up][1][lib] == m + 3
    shard = gate_up[6:8].clone(), down[6:8].clone()
    cpu_native.inference_experts(x, *shard, weights, ids, first_expert=6)
    assert cpu_native._packed_weights[shard[0]][1][lib] == m + 1


def test_packed_copies_follow_the_build_unless_set():
    x, gate_up, down, weights, ids = _problem(256, 4, 2, 48, 24, torch.float32, seed=9)
    lib = cpu_native._library()

    def copies_after_two_calls():
        for _ in range(2):
            got = cpu_native.inference_experts(x, gate_up, down, weights, ids)
        entry = cpu_native._packed_weights.get(gate_up)
        return got, entry is not None and isinstance(entry[1].get(id(lib)), torch.Tensor)

    try:
        want, kept = copies_after_two_calls()  # "auto": the build's choice (PREPACK_PAYS)
        assert kept == lib.prepack_pays
        cpu_native.packed_copies("on")
        got, kept = copies_after_two_calls()
        assert kept and torch.equal(got, want)
        cpu_native.packed_copies("off")  # drops what was kept
        assert gate_up not in cpu_native._packed_weights
        got, kept = copies_after_two_calls()
        assert not kept and torch.equal(got, want)
        with pytest.raises(AssertionError, match="packed_copies must be one of"):
            cpu_native.packed_copies("always")
    finally:
        cpu_native.packed_copies("auto")


def test_builds_keep_packed_copies_unless_built_without():
    pays = {name: cpu_native._load(flags, True).prepack_pays for name, flags in VARIANTS.items()}
    assert pays == {name: "no copies" not in name for name in VARIANTS}
    assert cpu_native._library().prepack_pays


def test_copies_switch_the_paths_in_every_call():
    # with copies the packed path runs from 9 rows (Zen 5: 3) instead of the token tiles (AVX2)
    # or dot products (Zen: up to 11 rows), in the first call (packing in the call) as in later
    # ones (kept copies): the same floats from every call. Tiles and packed weights sum each
    # output in the same order; dot products sum lanes, so those floats differ by rounding.
    for name in ("8 lanes, Zen tuning", "16 lanes, Zen tuning", "16 lanes, Zen 5 tuning"):
        kernel = cpu_native.variant(*VARIANTS[name])
        shapes = [(24, 8, 2, 37, 13), (40, 4, 1, 37, 13), (64, 4, 4, 48, 24), (200, 4, 4, 64, 40)]
        for shape in shapes:
            problem = _problem(*shape, torch.float32)
            try:
                cpu_native.packed_copies("off")
                without = kernel(*problem)
                cpu_native.packed_copies("on")
                with_copies = [kernel(*problem) for _ in range(3)]  # packs in the second
            finally:
                cpu_native.packed_copies("auto")
            assert all(torch.equal(got, with_copies[0]) for got in with_copies), (name, shape)
            torch.testing.assert_close(with_copies[0], without, rtol=1e-5, atol=1e-5)
            torch.testing.assert_close(without, ref_experts(*problem), rtol=1e-4, atol=1e-4)


def test_balanced_passes_change_no_float():
    # passes of rows / passes rows (AVX-512 builds) or of MR rows and the rest (MR 6 here, for
    # more passes): each row's outputs are summed in the same order either way
    for lanes in ("8", "16"):
        kernels = [
            cpu_native.variant(f"-DLANES={lanes}", f"-DBALANCED_PASSES={on}", "-DMR=6")
            for on in (0, 1)
        ]
        for shape in [(40, 4, 1, 37, 13), (100, 3, 2, 33, 17), (300, 2, 1, 20, 40)]:
            problem = _problem(*shape, torch.float32)
            got = [kernel(*problem) for kernel in kernels]
            assert torch.equal(got[0], got[1]), (lanes, shape)
            torch.testing.assert_close(got[0], ref_experts(*problem), rtol=1e-4, atol=1e-4)
