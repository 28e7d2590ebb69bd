"""Checkpoint validation, hashing and config arithmetic (pinned to real parameter counts)."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file
from transformers import PreTrainedTokenizerFast, Qwen3Config, Qwen3MoeConfig, Qwen3MoeForCausalLM

from moeplane.modeling.catalog import build_model, create_base_checkpoint
from moeplane.modeling.checkpoint import (
    CheckpointError,
    sha256_dir,
    summarize_config,
    validate_checkpoint_dir,
)
from moeplane.modeling.experts import is_expert_key
from moeplane.modeling.tokenizer import build_tokenizer


@pytest.fixture(scope="session")
def tokenizer(tmp_path_factory: pytest.TempPathFactory) -> PreTrainedTokenizerFast:
    return build_tokenizer(tmp_path_factory.getbasetemp() / "tokenizer-cache")


@pytest.fixture(scope="module")
def moe_checkpoint(tokenizer, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("ckpt") / "qwen3-moe-tiny"
    return create_base_checkpoint("qwen3-moe-tiny", out, tokenizer=tokenizer)


@pytest.fixture
def moe_copy(moe_checkpoint: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(moe_checkpoint, tmp_path / "copy"))


# ---------------------------------------------------------------------------- summaries


@pytest.mark.parametrize("name", ["qwen3-moe-tiny", "qwen3-tiny"])
def test_summary_matches_instantiated_catalog_models(name: str) -> None:
    model = build_model(name)
    summary = summarize_config(model.config)
    assert summary.params_total == sum(p.numel() for p in model.parameters())
    experts = sum(p.numel() for n, p in model.named_parameters() if is_expert_key(n))
    if name == "qwen3-moe-tiny":
        assert (summary.num_experts, summary.top_k, summary.num_layers) == (8, 2, 2)
        assert summary.params_active == summary.params_total - experts + experts * 2 // 8
    else:
        assert (summary.num_experts, summary.top_k, experts) == (0, 0, 0)
        assert summary.params_active == summary.params_total


def test_summary_handles_dense_layers_bias_and_untied_head() -> None:
    """mlp_only_layers, decoder_sparse_step, attention bias, untied lm_head."""
    config = Qwen3MoeConfig(
        vocab_size=300, hidden_size=32, num_hidden_layers=5, num_attention_heads=4,
        num_key_value_heads=2, head_dim=8, intermediate_size=48, moe_intermediate_size=16,
        num_experts=6, num_experts_per_tok=3, decoder_sparse_step=2, mlp_only_layers=[3],
        attention_bias=True, tie_word_embeddings=False,
    )  # fmt: skip
    model = Qwen3MoeForCausalLM(config)
    summary = summarize_config(config)
    assert summary.params_total == sum(p.numel() for p in model.parameters())
    experts = sum(p.numel() for n, p in model.named_parameters() if is_expert_key(n))
    assert experts == 1 * 6 * 3 * 32 * 16  # only layer 1 is sparse: (1+1) % 2 == 0, 3 is dense
    assert summary.params_active == summary.params_total - experts + experts * 3 // 6


def test_summary_of_real_qwen3_sizes_without_weights() -> None:
    """Qwen3-30B-A3B: 30.5B total / 3.3B active; Qwen3-0.6B: 0.6B (model cards)."""
    a3b = Qwen3MoeConfig(
        vocab_size=151_936, hidden_size=2048, num_hidden_layers=48, num_attention_heads=32,
        num_key_value_heads=4, head_dim=128, intermediate_size=6144, moe_intermediate_size=768,
        num_experts=128, num_experts_per_tok=8, tie_word_embeddings=False,
    )  # fmt: skip
    s = summarize_config(a3b)
    assert round(s.params_total / 1e9, 1) == 30.5
    assert 3.3e9 <= s.params_active < 3.4e9  # "3.3B activated"
    assert (s.num_experts, s.top_k) == (128, 8)
    dense = Qwen3Config(
        vocab_size=151_936, hidden_size=1024, num_hidden_layers=28, num_attention_heads=16,
        num_key_value_heads=8, head_dim=128, intermediate_size=3072, tie_word_embeddings=True,
    )  # fmt: skip
    s = summarize_config(dense)
    assert round(s.params_total / 1e9, 1) == 0.6 and s.params_active == s.params_total


# ---------------------------------------------------------------------------- validation


def test_valid_checkpoint_is_summarised(moe_checkpoint: Path) -> None:
    summary = validate_checkpoint_dir(moe_checkpoint)
    assert summary.family == "qwen3_moe" and summary.num_experts == 8
    assert summary.params_total == 9_946_496


@pytest.mark.parametrize(
    "remove",
    ["config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json"],
)
def test_missing_file_is_named(moe_copy: Path, remove: str) -> None:
    (moe_copy / remove).unlink()
    with pytest.raises(CheckpointError, match=remove.replace(".", r"\.")) as err:
        validate_checkpoint_dir(moe_copy)
    assert err.value.param == remove


def test_unsupported_architecture(moe_copy: Path) -> None:
    config = json.loads((moe_copy / "config.json").read_text())
    config.update(model_type="llama", architectures=["LlamaForCausalLM"])
    (moe_copy / "config.json").write_text(json.dumps(config))
    with pytest.raises(CheckpointError, match="model_type 'llama' is not supported"):
        validate_checkpoint_dir(moe_copy)
    (moe_copy / "config.json").write_text("{not json")
    with pytest.raises(CheckpointError, match=re.escape("config.json is not valid JSON")):
        validate_checkpoint_dir(moe_copy)


def test_corrupt_weights_and_wrong_shape(moe_copy: Path) -> None:
    weights = moe_copy / "model.safetensors"
    tensors = load_file(weights)
    tensors["model.embed_tokens.weight"] = tensors["model.embed_tokens.weight"][:100]
    save_file(tensors, weights)
    with pytest.raises(CheckpointError, match=re.escape("embed_tokens.weight has shape")):
        validate_checkpoint_dir(moe_copy)
    weights.write_bytes(b"\xff" * 64)
    with pytest.raises(CheckpointError, match=re.escape("model.safetensors is not a readable")):
        validate_checkpoint_dir(moe_copy)


def test_sharded_weights_need_every_listed_shard(moe_copy: Path) -> None:
    tensors = load_file(moe_copy / "model.safetensors")
    (moe_copy / "model.safetensors").unlink()
    keys = sorted(tensors)
    halves = {
        "model-00001-of-00002.safetensors": keys[::2],
        "model-00002-of-00002.safetensors": keys[1::2],
    }
    for file, names in halves.items():
        save_file({k: tensors[k] for k in names}, moe_copy / file)
    weight_map = {k: file for file, names in halves.items() for k in names}
    (moe_copy / "model.safetensors.index.json").write_text(json.dumps({"weight_map": weight_map}))
    assert validate_checkpoint_dir(moe_copy).num_experts == 8
    (moe_copy / "model-00002-of-00002.safetensors").unlink()
    with pytest.raises(CheckpointError, match=re.escape("model-00002-of-00002.safetensors")):
        validate_checkpoint_dir(moe_copy)
    (moe_copy / "model.safetensors.index.json").unlink()
    with pytest.raises(CheckpointError, match=re.escape("index.json")):
        validate_checkpoint_dir(moe_copy)


# ---------------------------------------------------------------------------- hashing


def test_sha256_dir_is_deterministic_and_sensitive(tmp_path: Path) -> None:
    root = tmp_path / "a"
    (root / "sub").mkdir(parents=True)
    (root / "x.bin").write_bytes(b"abc")
    (root / "sub" / "y.txt").write_text("hello")
    first = sha256_dir(root)
    assert first == sha256_dir(shutil.copytree(root, tmp_path / "b"))
    (root / ".cache").mkdir()
    (root / ".cache" / "meta").write_text("download timestamps")
    assert sha256_dir(root) == first  # hidden download metadata is not part of the artifact
    (root / "x.bin").write_bytes(b"abd")
    assert sha256_dir(root) != first
    (root / "x.bin").write_bytes(b"abc")
    (root / "sub" / "y.txt").rename(root / "sub" / "z.txt")
    assert sha256_dir(root) != first
    with pytest.raises(CheckpointError):
        sha256_dir(tmp_path / "missing")


def test_load_model_rejects_a_directory_without_config(tmp_path: Path) -> None:
    from moeplane.modeling.checkpoint import load_model

    with pytest.raises(CheckpointError, match=re.escape("config.json is missing")):
        load_model(tmp_path)
    assert torch.get_default_dtype() == torch.float32
