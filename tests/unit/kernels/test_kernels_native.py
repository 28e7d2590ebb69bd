"""The C small-batch kernel (cpu_native) against the loop-over-experts reference."""

import pytest
import torch

from moeplane.kernels import cpu_native, experts, torch_path
from tests.unit.kernels.kernels_reference import ref_experts
from tests.unit.kernels.test_kernels_experts import SHAPES, _problem

pytestmark = pytest.mark.skipif(not cpu_native.available(), reason="no C compiler here")

# (tokens, experts, top_k, hidden, inter): hidden/inter off the 16-float vector width, and
# experts with more rows than one register pass (8) takes.
NATIVE_SHAPES = [*SHAPES, (5, 4, 2, 37, 13), (64, 4, 4, 48, 24), (300, 2, 1, 20, 40)]


@pytest.mark.parametrize("shape", NATIVE_SHAPES, ids=str)
def test_native_matches_reference(shape):
    x, gate_up, down, weights, ids = _problem(*shape, torch.float32)
    out = experts(x, gate_up, down, weights, ids, backend="native")
    torch.testing.assert_close(
        out, ref_experts(x, gate_up, down, weights, ids), rtol=1e-4, atol=1e-4
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


def test_auto_runs_native_for_small_inference_batches_only(monkeypatch):
    calls = []
    real = cpu_native.small_batch_experts
    monkeypatch.setattr(cpu_native, "small_batch_experts", lambda *a: calls.append(1) or real(*a))
    x, gate_up, down, weights, ids = _problem(8, 8, 2, 32, 16, torch.float32)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # auto picks the single-threaded kernel only where torch uses few
    try:
        with torch.no_grad():
            experts(x, gate_up, down, weights, ids)
    finally:
        torch.set_num_threads(threads)
    assert calls == [1]
    experts(x, gate_up.requires_grad_(), down, weights, ids).sum().backward()  # autograd: torch
    assert calls == [1] and gate_up.grad is not None


def test_use_native_by_device_dtype_rows_per_expert_and_threads():
    cpu = torch.device("cpu")
    assert torch_path.use_native(cpu, torch.float32, 4 * 64, 64, 2)
    assert not torch_path.use_native(cpu, torch.float32, 5 * 64, 64, 2)
    assert not torch_path.use_native(cpu, torch.float32, 8, 64, 3)  # GEMMs on more cores
    assert not torch_path.use_native(cpu, torch.bfloat16, 8, 64, 1)
    assert not torch_path.use_native(torch.device("cuda"), torch.float32, 8, 64, 1)


def test_build_is_cached_per_source_and_cpu(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    first = cpu_native._build()
    assert first.parent == tmp_path / "moeplane" / "kernels" and first.suffix == ".so"
    built_at = first.stat().st_mtime_ns
    assert cpu_native._build() == first and first.stat().st_mtime_ns == built_at
    assert [p.name for p in first.parent.iterdir()] == [first.name]  # no temporary files left


def test_build_without_a_compiler_says_so(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    monkeypatch.setenv("CC", "/nonexistent/cc")
    with pytest.raises(RuntimeError, match="no C compiler"):
        cpu_native._build()
