"""The Triton path on CPU under TRITON_INTERPRET=1 (tiny shapes: the interpreter is slow)."""

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from moeplane.kernels import experts, route, triton_path
from tests.unit.kernels.kernels_reference import ref_experts

if importlib.util.find_spec("triton") is None:
    pytest.skip("triton not installed: Triton path untested here", allow_module_level=True)
if not torch.cuda.is_available():
    # Triton (imported lazily by moeplane) reads this when it is first imported.
    os.environ.setdefault("TRITON_INTERPRET", "1")
if not triton_path.is_available():  # pragma: no cover - caller forced TRITON_INTERPRET=0
    pytest.skip("no GPU and TRITON_INTERPRET is not 1", allow_module_level=True)

SMALL = {"BLOCK_M": 16, "BLOCK_N": 16, "BLOCK_K": 16}
# On a GPU machine (bench/gpu_check.sh) Triton compiles for real and needs CUDA tensors.
DEVICE = "cpu" if os.environ.get("TRITON_INTERPRET") == "1" else "cuda"


def _problem(tokens, num_experts, top_k, hidden, inter, dtype):
    gen = torch.Generator().manual_seed(tokens * 7 + num_experts)
    x = torch.randn(tokens, hidden, generator=gen)
    gate_up = torch.randn(num_experts, 2 * inter, hidden, generator=gen) / hidden**0.5
    down = torch.randn(num_experts, hidden, inter, generator=gen) / inter**0.5
    weights, ids = route(torch.randn(tokens, num_experts, generator=gen), top_k, True)
    return [t.to(DEVICE, dtype) for t in (x, gate_up, down, weights)] + [ids.to(DEVICE)]


@pytest.mark.parametrize(
    ("tokens", "num_experts", "top_k", "hidden", "inter"),
    [(1, 4, 1, 16, 16), (5, 4, 2, 32, 16), (19, 8, 2, 48, 24), (33, 16, 4, 16, 32)],
)
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=str)
def test_fused_experts_matches_reference(tokens, num_experts, top_k, hidden, inter, dtype):
    x, gate_up, down, weights, ids = _problem(tokens, num_experts, top_k, hidden, inter, dtype)
    out = triton_path.fused_experts(x, gate_up, down, weights, ids, config=SMALL)
    tol = {"rtol": 2e-2, "atol": 2e-2} if dtype == torch.bfloat16 else {"rtol": 1e-4, "atol": 1e-4}
    torch.testing.assert_close(out.to(dtype), ref_experts(x, gate_up, down, weights, ids), **tol)


@pytest.mark.parametrize("local_weights", [False, True], ids=["global", "local"])
def test_expert_range_through_api(local_weights):
    x, gate_up, down, weights, ids = _problem(12, 8, 2, 32, 16, torch.float32)
    shard = (gate_up[3:6], down[3:6]) if local_weights else (gate_up, down)
    out = experts(x, *shard, weights, ids, expert_range=(3, 6), backend="triton")
    ref = ref_experts(x, gate_up, down, weights, ids, expert_range=(3, 6))
    torch.testing.assert_close(out, ref, rtol=1e-4, atol=1e-4)


def test_align_block_size_pads_each_expert_to_block():
    ids = torch.tensor([[0, 2], [2, 5], [0, 2]])  # expert 5 is outside the 3-expert shard at 0
    sorted_rows, block_expert = triton_path.align_block_size(ids, 3, start=0, block_m=4)
    num_rows = ids.numel()
    assert sorted_rows.numel() % 4 == 0 and block_expert.numel() == sorted_rows.numel() // 4
    assert block_expert[:2].tolist() == [0, 2] and bool((block_expert[2:] == -1).all())
    assert sorted_rows[:4].tolist() == [0, 4, num_rows, num_rows]  # expert 0, padded
    assert sorted_rows[4:8].tolist() == [1, 2, 5, num_rows]  # expert 2; row 3 (expert 5) dropped


def test_block_configs_cover_every_size():
    assert triton_path.pick_config(0.0)["BLOCK_M"] >= 16
    assert triton_path.pick_config(1e9) == triton_path.BLOCK_CONFIGS[-1][1]


def test_configs_may_name_launch_options_and_nothing_else():
    x, gate_up, down, weights, ids = _problem(9, 4, 2, 32, 16, torch.float32)
    want = triton_path.fused_experts(x, gate_up, down, weights, ids, config=SMALL)
    launch = SMALL | {"num_warps": 8, "num_stages": 3}
    got = triton_path.fused_experts(x, gate_up, down, weights, ids, config=launch)
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)  # the interpreter ignores them
    with pytest.raises(AssertionError, match="unknown Triton config keys"):
        triton_path.fused_experts(x, gate_up, down, weights, ids, config=SMALL | {"GROUP_M": 8})


def test_config_sweep_runs_under_the_interpreter():
    # bench/triton_configs.py is what a GPU session tunes BLOCK_CONFIGS with: keep it working
    script = Path(__file__).resolve().parents[3] / "bench" / "triton_configs.py"
    env = os.environ | {"TRITON_INTERPRET": "1"}
    done = subprocess.run(
        [sys.executable, str(script), "--smoke"], env=env, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
    rows = [line for line in done.stdout.splitlines() if line.startswith("| tiny |")]
    assert len(rows) == 4 and all("2 (none)" in row for row in rows)  # progress, then the table
