"""experts() against the loop-over-experts reference, forward and backward."""

import pytest
import torch

from moeplane.kernels import experts, route, torch_path
from tests.unit.kernels.kernels_reference import ref_experts

# "expert_loop" runs oneDNN's GEMMs (which "auto" picks only for big experts; the pinned CPU
# wheel has them); "expert_loop_aten" the same loop with F.linear.
STRATEGIES = ["auto", "grouped_mm", "expert_loop", "expert_loop_aten"]

# (tokens, experts, top_k, hidden, inter): small hidden sizes for big token counts.
SHAPES = [
    (1, 4, 1, 32, 16),
    (1, 128, 8, 64, 32),
    (7, 8, 2, 48, 24),
    (32, 64, 8, 64, 32),
    (128, 16, 4, 32, 16),
    (512, 128, 8, 16, 8),
    (2048, 4, 2, 16, 8),
    (2048, 64, 8, 16, 8),
]


def _problem(tokens, num_experts, top_k, hidden, inter, dtype, seed=0):
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(tokens, hidden, generator=gen)
    gate_up = torch.randn(num_experts, 2 * inter, hidden, generator=gen) / hidden**0.5
    down = torch.randn(num_experts, hidden, inter, generator=gen) / inter**0.5
    weights, ids = route(torch.randn(tokens, num_experts, generator=gen), top_k, True)
    return [t.to(dtype) for t in (x, gate_up, down, weights)] + [ids]


@pytest.fixture(params=STRATEGIES)
def strategy(request, monkeypatch):
    if request.param != "auto":  # small inference batches would otherwise run the C kernel
        monkeypatch.setattr(torch_path, "use_native", lambda *a, **k: False)
    if request.param.startswith("expert_loop"):

        def gemm(device, dtype, *args, **kwargs):
            # oneDNN wherever it runs this dtype (bfloat16 fails on CPUs without AVX-512)
            onednn = request.param == "expert_loop" and torch_path._onednn_works(dtype)
            return "onednn" if onednn else "aten"

        monkeypatch.setattr(torch_path, "cpu_gemm", gemm)
        monkeypatch.setattr(torch_path, "choose_strategy", lambda *a, **k: "expert_loop")
    elif request.param != "auto":
        monkeypatch.setattr(torch_path, "choose_strategy", lambda *a, **k: request.param)
    return request.param


def _tolerance(dtype):
    return {"rtol": 2e-2, "atol": 2e-2} if dtype == torch.bfloat16 else {"rtol": 1e-4, "atol": 1e-4}


@pytest.mark.parametrize("shape", SHAPES, ids=str)
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=str)
def test_forward_matches_reference(shape, dtype, strategy):
    x, gate_up, down, weights, ids = _problem(*shape, dtype)
    out = experts(x, gate_up, down, weights, ids)
    assert out.dtype == dtype and out.shape == x.shape
    torch.testing.assert_close(
        out, ref_experts(x, gate_up, down, weights, ids), **_tolerance(dtype)
    )


@pytest.mark.parametrize("shape", SHAPES[:6], ids=str)
def test_backward_matches_reference(shape, strategy):
    inputs = _problem(*shape, torch.float32)
    leaves = [t.clone().requires_grad_() for t in inputs[:4]]
    ref_leaves = [t.clone().requires_grad_() for t in inputs[:4]]
    grad_out = torch.randn(inputs[0].shape, generator=torch.Generator().manual_seed(1))
    experts(*leaves, inputs[4]).backward(grad_out)
    ref_experts(*ref_leaves, inputs[4]).backward(grad_out)
    names = ("hidden", "gate_up", "down", "weights")
    for name, got, ref in zip(names, leaves, ref_leaves, strict=True):
        torch.testing.assert_close(got.grad, ref.grad, rtol=1e-4, atol=1e-4, msg=name)


@pytest.mark.parametrize("expert_range", [(0, 16), (0, 5), (5, 11), (11, 16), (7, 7)])
@pytest.mark.parametrize("local_weights", [False, True], ids=["global", "local"])
def test_expert_range_partial_sums(expert_range, local_weights, strategy):
    x, gate_up, down, weights, ids = _problem(64, 16, 4, 32, 16, torch.float32)
    start, stop = expert_range
    shard = (
        (gate_up[start:stop].clone(), down[start:stop].clone())
        if local_weights
        else (gate_up, down)
    )
    out = experts(x, *shard, weights, ids, expert_range=expert_range)
    ref = ref_experts(x, gate_up, down, weights, ids, expert_range=expert_range)
    torch.testing.assert_close(out, ref, rtol=1e-4, atol=1e-4)


def test_shards_sum_to_full_layer_with_gradients():
    x, gate_up, down, weights, ids = _problem(256, 16, 4, 32, 16, torch.float32)
    full = experts(x, gate_up, down, weights, ids)
    leaves = [t.clone().requires_grad_() for t in (x, weights)]
    shards = [(0, 3), (3, 10), (10, 16)]
    parts = [
        experts(leaves[0], gate_up[a:b], down[a:b], leaves[1], ids, expert_range=(a, b))
        for a, b in shards
    ]
    torch.testing.assert_close(sum(parts), full, rtol=1e-4, atol=1e-4)
    sum(parts).sum().backward()
    ref_leaves = [t.clone().requires_grad_() for t in (x, weights)]
    ref_experts(ref_leaves[0], gate_up, down, ref_leaves[1], ids).sum().backward()
    for got, ref in zip(leaves, ref_leaves, strict=True):
        torch.testing.assert_close(got.grad, ref.grad, rtol=1e-4, atol=1e-4)


def test_expert_range_rejects_mismatched_weights():
    x, gate_up, down, weights, ids = _problem(4, 16, 2, 32, 16, torch.float32)
    with pytest.raises(AssertionError):
        experts(x, gate_up[:4], down[:4], weights, ids, expert_range=(4, 10))


def test_hidden_cast_to_weight_dtype_and_back():
    x, gate_up, down, weights, ids = _problem(8, 8, 2, 32, 16, torch.float32)
    out = experts(x.bfloat16(), gate_up, down, weights, ids)
    assert out.dtype == torch.bfloat16


def test_zero_tokens():
    x, gate_up, down, weights, ids = _problem(0, 8, 2, 32, 16, torch.float32)
    assert experts(x, gate_up, down, weights, ids).shape == (0, 32)


@pytest.mark.parametrize(
    ("rows", "num_experts", "expected"),
    [
        (8, 64, "grouped_mm"),
        (1024, 64, "grouped_mm"),
        (3071, 64, "grouped_mm"),
        (3072, 64, "expert_loop"),
        (48, 1, "expert_loop"),
    ],
)
def test_cpu_strategy_by_rows_per_expert(rows, num_experts, expected):
    got = torch_path.choose_strategy(torch.device("cpu"), torch.float32, rows, num_experts)
    assert got == expected


@pytest.mark.parametrize("rows", [1, 8, 3072])
def test_cpu_strategy_with_onednn_is_the_loop_at_every_size(rows):
    cpu = torch.device("cpu")
    assert torch_path.choose_strategy(cpu, torch.float32, rows, 64, gemm="onednn") == "expert_loop"


def test_grouped_mm_only_for_rows_of_a_multiple_of_16_bytes():
    cpu = torch.device("cpu")
    assert torch_path.choose_strategy(cpu, torch.float32, 8, 64, sizes=(1024, 384)) == "grouped_mm"
    assert torch_path.choose_strategy(cpu, torch.float32, 8, 64, sizes=(20, 5)) == "expert_loop"
    assert torch_path.choose_strategy(cpu, torch.bfloat16, 8, 64, sizes=(36, 12)) == "expert_loop"


def test_torch_path_takes_sizes_grouped_mm_cannot():
    # I = 5 floats: 20-byte rows, which torch._grouped_mm refuses
    x, gate_up, down, weights, ids = _problem(5, 4, 4, 20, 5, torch.float32)
    with torch.no_grad():
        got = experts(x, gate_up, down, weights, ids, backend="torch")
    torch.testing.assert_close(got, ref_experts(x, gate_up, down, weights, ids))


def test_cpu_gemm_is_onednn_for_big_experts_where_torch_has_it_unless_tuned_off():
    cpu, big, small = torch.device("cpu"), 1024 * 384, 64 * 32
    # The pinned CPU wheel ships oneDNN, and its linear gives the same numbers as F.linear.
    assert torch_path.cpu_gemm(cpu, torch.float32, big) == "onednn"
    # bfloat16 where this CPU's oneDNN has it (not on AVX2-only CPUs such as AMD Zen 3)
    bf16 = "onednn" if torch_path._onednn_works(torch.bfloat16) else "aten"
    assert torch_path.cpu_gemm(cpu, torch.bfloat16, big) == bf16
    assert torch_path.cpu_gemm(cpu, torch.float16, big) == "aten"
    assert torch_path.cpu_gemm(cpu, torch.float32, small) == "aten"  # call overhead dominates
    aten = torch_path.TorchPathTuning(cpu_gemm="aten")
    assert torch_path.cpu_gemm(cpu, torch.float32, big, aten) == "aten"
    onednn = torch_path.TorchPathTuning(cpu_gemm="onednn")
    assert torch_path.cpu_gemm(cpu, torch.float32, small, onednn) == "onednn"
    with pytest.raises(AssertionError, match="cpu_gemm"):
        torch_path.TorchPathTuning(cpu_gemm="blas")


@pytest.mark.parametrize("shape", [(32, 16, 4, 32, 16), (512, 8, 2, 32, 16)], ids=str)
def test_backward_bf16_close_to_fp32_reference(shape, strategy):
    inputs = _problem(*shape, torch.bfloat16)
    leaves = [t.clone().requires_grad_() for t in inputs[:4]]
    ref_leaves = [t.float().requires_grad_() for t in inputs[:4]]
    grad_out = torch.randn(inputs[0].shape, generator=torch.Generator().manual_seed(1))
    experts(*leaves, inputs[4]).backward(grad_out.bfloat16())
    ref_experts(*ref_leaves, inputs[4]).backward(grad_out)
    for got, ref in zip(leaves, ref_leaves, strict=True):
        assert got.grad.dtype == torch.bfloat16
        scale = ref.grad.abs().max().item()
        torch.testing.assert_close(got.grad.float(), ref.grad, rtol=0.05, atol=0.05 * scale)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no GPU here (bench/gpu_check.sh)")
@pytest.mark.parametrize("shape", SHAPES, ids=str)
def test_torch_path_on_cuda_in_bfloat16_forward_and_backward(shape):
    # what training runs on a GPU: the torch path under autograd (Triton is forward-only)
    inputs = [t.cuda() for t in _problem(*shape, torch.bfloat16)]
    leaves = [t.clone().requires_grad_() for t in inputs[:4]]
    ref_leaves = [t.float().requires_grad_() for t in inputs[:4]]
    out = experts(*leaves, inputs[4], backend="torch")
    ref = ref_experts(*ref_leaves, inputs[4])
    assert out.dtype == torch.bfloat16 and out.is_cuda
    torch.testing.assert_close(out.float(), ref, **_tolerance(torch.bfloat16))
    grad_out = torch.randn(ref.shape, device="cuda", generator=_cuda_generator())
    out.backward(grad_out.to(torch.bfloat16))
    ref.backward(grad_out)
    names = ("hidden", "gate_up", "down", "weights")
    for name, got, want in zip(names, leaves, ref_leaves, strict=True):
        scale = want.grad.abs().max().item()  # as test_backward_bf16_close_to_fp32_reference
        torch.testing.assert_close(
            got.grad.float(), want.grad, rtol=0.05, atol=0.05 * scale, msg=name
        )


def _cuda_generator() -> torch.Generator:
    return torch.Generator(device="cuda").manual_seed(1)
