"""Tiny models whose greedy output depends on the context, written once per session.

The catalog's random init (std 0.02, tied embeddings) mostly echoes the last prompt token, so
"same tokens as generate()" would pass even with a broken KV cache or wrong positions. Re-drawn
with std 0.3, the same architectures produce varied tokens whose logit gaps (~1e-2) dwarf fp32
noise (~1e-6), so any cache, mask or position mistake changes the output.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from transformers import PreTrainedModel, PreTrainedTokenizerFast

from moeplane.modeling import build_model, build_tokenizer

LIVELY_STD = 0.3


def lively_model(name: str, seed: int = 0) -> PreTrainedModel:
    """Catalog model ``name`` with every matrix re-drawn from N(0, LIVELY_STD)."""
    model = build_model(name, seed=seed)
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for param in model.parameters():
            if param.dim() >= 2:
                param.normal_(0.0, LIVELY_STD, generator=generator)
    return model.eval()


@pytest.fixture(scope="session")
def tokenizer(tmp_path_factory: pytest.TempPathFactory) -> PreTrainedTokenizerFast:
    return build_tokenizer(tmp_path_factory.mktemp("tokenizer-cache"))


@pytest.fixture(scope="session")
def lively_checkpoints(
    tmp_path_factory: pytest.TempPathFactory, tokenizer: PreTrainedTokenizerFast
) -> dict[str, Path]:
    """name -> checkpoint directory of `lively_model(name)` (weights, config, tokenizer)."""
    root = tmp_path_factory.mktemp("lively")
    paths = {}
    for name in ("qwen3-moe-tiny", "qwen3-tiny"):
        paths[name] = root / name
        lively_model(name).save_pretrained(paths[name], safe_serialization=True)
        tokenizer.save_pretrained(paths[name])
    return paths
