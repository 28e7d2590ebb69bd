"""Expert slicing: each of S shards holds exactly its E/S experts and all non-expert weights."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import save_file
from transformers import PreTrainedModel

import moeplane.modeling.experts as experts_module
from moeplane.modeling.catalog import build_model
from moeplane.modeling.experts import (
    ExpertShardingError,
    expert_slice,
    is_expert_key,
    load_shard_state,
)

FUSED = "model.layers.{i}.mlp.experts.{proj}"


@pytest.fixture(scope="module")
def model() -> PreTrainedModel:
    return build_model("qwen3-moe-tiny", seed=5)


@pytest.fixture(scope="module")
def per_expert_ckpt(model: PreTrainedModel, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The layout save_pretrained writes (and the Hub's Qwen3-MoE checkpoints use)."""
    out = tmp_path_factory.mktemp("per_expert")
    model.save_pretrained(out, safe_serialization=True)
    return out


@pytest.fixture(scope="module")
def fused_ckpt(model: PreTrainedModel, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Fused transformers-5 tensors, sharded over two files with an index."""
    out = tmp_path_factory.mktemp("fused")
    (out / "config.json").write_text(model.config.to_json_string())
    state = {k: v.contiguous() for k, v in model.state_dict().items() if k != "lm_head.weight"}
    keys = sorted(state)
    files = {
        "model-00001-of-00002.safetensors": keys[::2],
        "model-00002-of-00002.safetensors": keys[1::2],
    }
    for name, names in files.items():
        save_file({k: state[k] for k in names}, out / name)
    weight_map = {k: name for name, names in files.items() for k in names}
    (out / "model.safetensors.index.json").write_text(json.dumps({"weight_map": weight_map}))
    return out


def test_expert_slice() -> None:
    assert expert_slice(8, 1, 0) == (0, 8)
    assert [expert_slice(8, 2, s) for s in range(2)] == [(0, 4), (4, 8)]
    assert [expert_slice(128, 4, s) for s in range(4)] == [(0, 32), (32, 64), (64, 96), (96, 128)]
    with pytest.raises(ExpertShardingError, match="8 experts cannot be split evenly over 3"):
        expert_slice(8, 3, 0)
    with pytest.raises(ExpertShardingError, match="outside"):
        expert_slice(8, 2, 2)
    with pytest.raises(ExpertShardingError, match=">= 1"):
        expert_slice(8, 0, 0)


@pytest.mark.parametrize("layout", ["per_expert", "fused"])
def test_two_shards_split_experts_exactly_in_half(
    layout: str, model: PreTrainedModel, per_expert_ckpt: Path, fused_ckpt: Path
) -> None:
    path = per_expert_ckpt if layout == "per_expert" else fused_ckpt
    full = {k: v for k, v in model.state_dict().items() if k != "lm_head.weight"}  # tied
    total_expert = sum(v.numel() for k, v in full.items() if is_expert_key(k))
    total_other = sum(v.numel() for k, v in full.items() if not is_expert_key(k))

    shards = [load_shard_state(path, 2, s) for s in range(2)]
    for s, (state, info) in enumerate(shards):
        assert info.layout == layout
        assert (info.expert_start, info.expert_stop) == (4 * s, 4 * s + 4)
        assert info.expert_param_count * 2 == total_expert
        assert info.non_expert_param_count == total_other
        assert info.moe_layers == ("model.layers.0.mlp.experts", "model.layers.1.mlp.experts")
        assert set(state) == set(full)  # same names as the model's own parameters
        for key, tensor in full.items():
            if not is_expert_key(key):
                assert torch.equal(state[key], tensor), key
    for i in range(2):
        for proj in ("gate_up_proj", "down_proj"):
            key = FUSED.format(i=i, proj=proj)
            assert shards[0][0][key].shape[0] == 4  # (E/S, ...)
            joined = torch.cat([shards[0][0][key], shards[1][0][key]])  # (E, ...)
            assert torch.equal(joined, full[key]), key


def test_one_and_four_shards(model: PreTrainedModel, per_expert_ckpt: Path) -> None:
    state, info = load_shard_state(per_expert_ckpt, 1, 0)
    key = FUSED.format(i=1, proj="gate_up_proj")
    assert torch.equal(state[key], model.state_dict()[key])
    quarters = [load_shard_state(per_expert_ckpt, 4, s)[0][key] for s in range(4)]
    assert torch.equal(torch.cat(quarters), model.state_dict()[key])
    assert (
        info.expert_param_count == 4 * load_shard_state(per_expert_ckpt, 4, 3)[1].expert_param_count
    )


class _Spy:
    """Wraps safe_open to record every tensor (or slice) a shard load reads."""

    def __init__(self) -> None:
        self.whole: list[str] = []
        self.sliced: list[str] = []

    def __call__(self, *args, **kwargs):
        handle = safe_open(*args, **kwargs)
        spy = self

        class _Handle:
            def __enter__(self):
                self.f = handle.__enter__()
                return self

            def __exit__(self, *exc):
                return handle.__exit__(*exc)

            def keys(self):
                return self.f.keys()

            def get_tensor(self, key):
                spy.whole.append(key)
                return self.f.get_tensor(key)

            def get_slice(self, key):
                spy.sliced.append(key)
                return self.f.get_slice(key)

        return _Handle()


@pytest.mark.parametrize("layout", ["per_expert", "fused"])
def test_other_shards_experts_are_never_read(
    layout: str, per_expert_ckpt: Path, fused_ckpt: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    spy = _Spy()
    monkeypatch.setattr(experts_module, "safe_open", spy)
    load_shard_state(per_expert_ckpt if layout == "per_expert" else fused_ckpt, 2, 1)
    read_experts = [k for k in spy.whole if is_expert_key(k)]
    if layout == "per_expert":
        assert {int(k.split(".")[5]) for k in read_experts} == {4, 5, 6, 7}
    else:
        assert read_experts == []  # fused experts are only read through get_slice
        assert len(spy.sliced) == 4


def test_dense_checkpoint_has_nothing_to_shard(tmp_path: Path) -> None:
    build_model("qwen3-tiny").save_pretrained(tmp_path)
    with pytest.raises(ExpertShardingError, match="dense"):
        load_shard_state(tmp_path, 2, 0)
