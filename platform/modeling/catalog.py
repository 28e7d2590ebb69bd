"""The base-model catalog: tiny Qwen3 / Qwen3-MoE models that train in seconds on 2 CPU cores.

They are real transformers `Qwen3MoeForCausalLM` / `Qwen3ForCausalLM` architectures with Qwen's
real tokenizer and random weights, so every path (fine-tune, LoRA, expert-sharded serving)
exercises the code a real Qwen3-30B-A3B or Qwen3-0.6B would, just smaller.

On-disk layout (what `save_pretrained(safe_serialization=True)` writes in transformers 5):
in memory the experts of a MoE layer are fused 3-D parameters,
`model.layers.{i}.mlp.experts.gate_up_proj` (E, 2*I, H) -- gate rows first, then up -- and
`model.layers.{i}.mlp.experts.down_proj` (E, H, I). When saving, transformers applies the reverse
of its `qwen2_moe` weight conversion (transformers/conversion_mapping.py), so model.safetensors
holds the per-expert keys the Hub's Qwen3-MoE checkpoints use:
`model.layers.{i}.mlp.experts.{j}.{gate,up}_proj.weight` (I, H) and `...{j}.down_proj.weight`
(H, I); the router is `model.layers.{i}.mlp.gate.weight` (E, H). Loading fuses them back.
`moeplane.modeling.experts` reads either layout. Embeddings are tied, so there is no
`lm_head.weight` on disk.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch
from transformers import (
    PretrainedConfig,
    PreTrainedModel,
    PreTrainedTokenizerFast,
    Qwen3Config,
    Qwen3ForCausalLM,
    Qwen3MoeConfig,
    Qwen3MoeForCausalLM,
)

from moeplane.modeling.tokenizer import ENDOFTEXT, IM_END, QWEN_VOCAB_SIZE, build_tokenizer

__all__ = ["BASE_MODELS", "BaseModelSpec", "Family", "build_model", "create_base_checkpoint"]

Family = Literal["qwen3_moe", "qwen3"]

_ENDOFTEXT_ID = 151_643
_IM_END_ID = 151_645

# Shared by both tiny models so that they differ only in the MLP. 4 query heads of 16 over 2 KV
# heads keeps grouped-query attention (as in every Qwen3) in play.
_TINY_COMMON: dict[str, Any] = {
    "vocab_size": QWEN_VOCAB_SIZE,
    "hidden_size": 64,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "head_dim": 16,
    "max_position_embeddings": 2048,
    "tie_word_embeddings": True,
    "rms_norm_eps": 1e-6,
    "bos_token_id": _ENDOFTEXT_ID,
    "eos_token_id": _IM_END_ID,
    "pad_token_id": _ENDOFTEXT_ID,
}


@dataclass(frozen=True)
class BaseModelSpec:
    """A catalog entry: a name, an architecture family and the config that defines it."""

    name: str
    family: Family
    config: dict[str, Any] = field(default_factory=dict)
    description: str = ""

    def build_config(self) -> PretrainedConfig:
        if self.family == "qwen3_moe":
            return Qwen3MoeConfig(**self.config)
        return Qwen3Config(**self.config)


BASE_MODELS: dict[str, BaseModelSpec] = {
    spec.name: spec
    for spec in (
        BaseModelSpec(
            name="qwen3-moe-tiny",
            family="qwen3_moe",
            config={
                **_TINY_COMMON,
                "intermediate_size": 128,  # unused: every layer is sparse (decoder_sparse_step 1)
                "moe_intermediate_size": 64,
                "num_experts": 8,
                "num_experts_per_tok": 2,
                "norm_topk_prob": True,  # as Qwen3-MoE: top-k weights renormalised to sum to 1
                "decoder_sparse_step": 1,
                "mlp_only_layers": [],
            },
            description="Qwen3-MoE, 2 layers, 8 experts top-2, hidden 64, Qwen tokenizer",
        ),
        BaseModelSpec(
            name="qwen3-tiny",
            family="qwen3",
            # Dense MLP as wide as qwen3-moe-tiny's active experts (top-2 x 64): same compute.
            config={**_TINY_COMMON, "intermediate_size": 128},
            description="dense Qwen3, 2 layers, hidden 64, Qwen tokenizer",
        ),
    )
}


def _spec(name: str) -> BaseModelSpec:
    try:
        return BASE_MODELS[name]
    except KeyError:
        known = ", ".join(sorted(BASE_MODELS))
        raise KeyError(f"unknown base model {name!r}; the catalog has: {known}") from None


def build_model(name: str, seed: int = 0) -> PreTrainedModel:
    """The catalog model ``name`` with random weights that depend only on ``seed``.

    The global RNG is forked so building a model never perturbs the caller's random stream.
    """
    spec = _spec(name)
    config = spec.build_config()
    model_cls = Qwen3MoeForCausalLM if spec.family == "qwen3_moe" else Qwen3ForCausalLM
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = model_cls(config)
    model.generation_config.eos_token_id = [_IM_END_ID, _ENDOFTEXT_ID]
    model.generation_config.pad_token_id = _ENDOFTEXT_ID
    model.generation_config.bos_token_id = _ENDOFTEXT_ID
    return model.eval()


def create_base_checkpoint(
    name: str,
    out_dir: str | Path,
    seed: int = 0,
    *,
    tokenizer: PreTrainedTokenizerFast | None = None,
    tokenizer_cache_dir: str | Path | None = None,
) -> Path:
    """Write catalog model ``name`` as a Hugging Face checkpoint directory and return it.

    The directory holds config.json, generation_config.json, model.safetensors and the tokenizer
    files; it is written to a sibling staging directory and renamed, so a crash never leaves a
    half-written checkpoint at ``out_dir``. Pass ``tokenizer`` to skip building one.
    """
    out = Path(out_dir)
    if out.exists() and any(out.iterdir()):
        raise FileExistsError(f"refusing to overwrite non-empty directory {out}")
    model = build_model(name, seed)
    tok = tokenizer if tokenizer is not None else build_tokenizer(tokenizer_cache_dir)
    assert tok.convert_tokens_to_ids(IM_END) == _IM_END_ID
    assert tok.convert_tokens_to_ids(ENDOFTEXT) == _ENDOFTEXT_ID
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = out.with_name(f".{out.name}.partial")
    shutil.rmtree(staging, ignore_errors=True)
    model.save_pretrained(staging, safe_serialization=True)
    tok.save_pretrained(staging)
    if out.exists():
        out.rmdir()  # empty, checked above
    staging.rename(out)
    return out
