"""Expert-sharded model: two gloo shards give the unsharded model's tokens and logits."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp

from moeplane.modeling import load_model
from moeplane.serving.runner import ModelRunner
from moeplane.serving.shard import ShardedExperts, load_shard_model
from tests.unit.serving._shard_worker import run_shard
from tests.unit.serving.test_runner import STAGGERED, run_schedule

PROMPTS = [list(range(1000, 1011)), [7, 8, 9], [42]]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_one_shard_needs_no_process_group(lively_checkpoints: dict[str, Path]) -> None:
    path = lively_checkpoints["qwen3-moe-tiny"]
    model, info = load_shard_model(path, 1, 0)
    assert info is not None and (info.expert_start, info.expert_stop) == (0, 8)
    assert model.lm_head.weight is model.model.embed_tokens.weight
    assert sum(isinstance(m, ShardedExperts) for m in model.modules()) == 2
    reference = load_model(path)
    ids = torch.tensor([PROMPTS[0]])
    with torch.inference_mode():
        torch.testing.assert_close(model(ids).logits, reference(ids).logits)


def test_dense_model_loads_whole(lively_checkpoints: dict[str, Path]) -> None:
    model, info = load_shard_model(lively_checkpoints["qwen3-tiny"], 1, 0)
    assert info is None and model.config.model_type == "qwen3"
    with pytest.raises(ValueError, match="dense"):
        load_shard_model(lively_checkpoints["qwen3-tiny"], 2, 0)


def test_two_shards_match_the_unsharded_model(
    lively_checkpoints: dict[str, Path], tmp_path: Path
) -> None:
    path = lively_checkpoints["qwen3-moe-tiny"]
    reference = load_model(path)
    runner = ModelRunner(reference)
    expected, plans = run_schedule(runner, STAGGERED)
    with torch.inference_mode():
        logits = [reference(torch.tensor([p])).logits[0] for p in PROMPTS]

    init_method = f"tcp://127.0.0.1:{_free_port()}"
    mp.spawn(run_shard, args=(2, init_method, path, plans, PROMPTS, tmp_path), nprocs=2)
    shards = [torch.load(tmp_path / f"rank{r}.pt", weights_only=False) for r in range(2)]

    # rank 0 samples the unsharded model's tokens at every step; rank 1 only computes
    got: dict[str, list[int]] = {seq_id: [] for seq_id in expected}
    for step in shards[0]["tokens"]:
        for seq_id, token in step.items():
            got[seq_id].append(token)
    assert got == expected
    assert all(step == {} for step in shards[1]["tokens"])
    for shard in shards:
        for mine, full in zip(shard["logits"], logits, strict=True):
            torch.testing.assert_close(mine, full, rtol=1e-4, atol=1e-4)
        assert shard["counts"] == runner.expert_counts()
        assert shard["tied"] and shard["meta"] == []

    full_experts = sum(p.numel() for n, p in reference.named_parameters() if ".mlp.experts." in n)
    assert [s["expert_params"] for s in shards] == [full_experts // 2] * 2
    assert [s["info"].expert_param_count for s in shards] == [full_experts // 2] * 2
    assert [s["expert_ranges"] for s in shards] == [[(0, 4)] * 2, [(4, 8)] * 2]
