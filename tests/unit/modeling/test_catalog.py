"""Catalog models: deterministic random weights, HF-format checkpoints that load back exactly."""

from __future__ import annotations

import json
import time

import pytest
import torch
from transformers import PreTrainedTokenizerFast

from moeplane.modeling.catalog import BASE_MODELS, build_model, create_base_checkpoint
from moeplane.modeling.checkpoint import load_model, sha256_dir, summarize_config
from moeplane.modeling.tokenizer import build_tokenizer


@pytest.fixture(scope="session")
def tokenizer(tmp_path_factory: pytest.TempPathFactory) -> PreTrainedTokenizerFast:
    return build_tokenizer(tmp_path_factory.getbasetemp() / "tokenizer-cache")


def _batch(batch: int = 2, seq: int = 128) -> torch.Tensor:
    gen = torch.Generator().manual_seed(1)
    return torch.randint(0, 151_643, (batch, seq), generator=gen)  # (batch, seq)


@pytest.mark.parametrize("name", sorted(BASE_MODELS))
def test_checkpoint_loads_back_with_identical_logits(
    name: str, tokenizer: PreTrainedTokenizerFast, tmp_path
) -> None:
    start = time.perf_counter()
    path = create_base_checkpoint(name, tmp_path / name, seed=3, tokenizer=tokenizer)
    created_s = time.perf_counter() - start
    names = {p.name for p in path.iterdir()}
    assert {"config.json", "generation_config.json", "model.safetensors", "tokenizer.json"} <= names
    assert json.loads((path / "config.json").read_text())["architectures"] == [
        "Qwen3MoeForCausalLM" if BASE_MODELS[name].family == "qwen3_moe" else "Qwen3ForCausalLM"
    ]

    original = build_model(name, seed=3)
    loaded = load_model(path)
    ids = _batch()
    with torch.no_grad():
        start = time.perf_counter()
        want = original(ids).logits  # (batch, seq, vocab)
        forward_s = time.perf_counter() - start
        got = loaded(ids).logits
    torch.testing.assert_close(got, want, rtol=0, atol=0)
    n_params = sum(p.numel() for p in loaded.parameters())
    assert n_params == summarize_config(loaded.config).params_total
    print(
        f"\n{name}: params {n_params:,}; create_base_checkpoint {created_s:.2f}s; "
        f"forward (2, 128) {forward_s * 1000:.0f} ms"
    )


def test_weights_depend_only_on_seed() -> None:
    rng_before = torch.get_rng_state()
    a = build_model("qwen3-moe-tiny", seed=0).state_dict()
    b = build_model("qwen3-moe-tiny", seed=0).state_dict()
    c = build_model("qwen3-moe-tiny", seed=1).state_dict()
    assert torch.equal(torch.get_rng_state(), rng_before)  # caller's RNG untouched
    key = "model.layers.0.mlp.experts.gate_up_proj"
    assert torch.equal(a[key], b[key])
    assert not torch.equal(a[key], c[key])


def test_same_seed_gives_same_artifact_hash(tokenizer: PreTrainedTokenizerFast, tmp_path) -> None:
    a = create_base_checkpoint("qwen3-tiny", tmp_path / "a", tokenizer=tokenizer)
    b = create_base_checkpoint("qwen3-tiny", tmp_path / "b", tokenizer=tokenizer)
    assert sha256_dir(a) == sha256_dir(b)


def test_refuses_to_overwrite_and_rejects_unknown_names(
    tokenizer: PreTrainedTokenizerFast, tmp_path
) -> None:
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "keep.txt").write_text("mine")
    with pytest.raises(FileExistsError):
        create_base_checkpoint("qwen3-tiny", tmp_path / "busy", tokenizer=tokenizer)
    assert (tmp_path / "busy" / "keep.txt").read_text() == "mine"
    with pytest.raises(KeyError, match="qwen3-moe-tiny"):
        build_model("llama-tiny")
