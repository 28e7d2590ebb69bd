"""Checkpoint directories: validate, fingerprint, summarise and load Hugging Face checkpoints.

A model version is an immutable directory in Hugging Face format (config.json, safetensors
weights, tokenizer files). `validate_checkpoint_dir` is what `moeplane models import` runs before
registering a user's checkpoint: it reads only config.json and the safetensors headers, so a
60 GB Qwen3-30B-A3B is checked and summarised in milliseconds. Parameter counts come from the
config arithmetically for the same reason; tests pin them to the numels of real models.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from transformers import AutoConfig, AutoModelForCausalLM, PretrainedConfig, PreTrainedModel

from moeplane.errors import InvalidRequest

__all__ = [
    "SUPPORTED_ARCHITECTURES",
    "CheckpointError",
    "ConfigSummary",
    "iter_artifact_files",
    "load_model",
    "moe_layer_indices",
    "read_config",
    "safetensors_files",
    "sha256_dir",
    "summarize_config",
    "validate_checkpoint_dir",
]

# model_type -> the causal-LM class a checkpoint of that type must declare.
SUPPORTED_ARCHITECTURES: dict[str, str] = {
    "qwen3_moe": "Qwen3MoeForCausalLM",
    "qwen3": "Qwen3ForCausalLM",
}
_INDEX = "model.safetensors.index.json"
_CHUNK = 1 << 20


class CheckpointError(InvalidRequest):
    """A checkpoint directory that cannot become a model version; the message names the file."""

    code = "invalid_checkpoint"


@dataclass(frozen=True)
class ConfigSummary:
    """What a model version records about its architecture (and what the API shows)."""

    family: str
    num_layers: int
    hidden_size: int
    num_experts: int  # 0 for dense models
    top_k: int  # experts per token; 0 for dense models
    params_total: int
    params_active: int  # per token: everything but the experts a token is not routed to


# ---------------------------------------------------------------------------- hashing


def iter_artifact_files(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Files that make up the artifact, sorted by relative POSIX path.

    Hidden entries (``.cache/huggingface`` download metadata, ``.git``) are not part of the
    model and are skipped, so copying these files and hashing the copy gives the same digest.
    """
    root = Path(path)
    found: list[tuple[str, Path]] = []
    for dirpath, dirnames, filenames in os.walk(root, followlinks=True):
        dirnames[:] = [d for d in dirnames if not d.startswith(".")]
        for name in filenames:
            if not name.startswith("."):
                full = Path(dirpath) / name
                found.append((full.relative_to(root).as_posix(), full))
    for _, full in sorted(found):
        yield full


def sha256_dir(path: str | os.PathLike[str]) -> str:
    """SHA-256 over (relative name, size, contents) of every artifact file, streamed.

    Names and sizes are length-framed so that moving bytes between files or renaming a file
    changes the digest.
    """
    root = Path(path)
    if not root.is_dir():
        raise CheckpointError(f"{root} is not a directory", param="path")
    h = hashlib.sha256()
    for full in iter_artifact_files(root):
        rel = full.relative_to(root).as_posix().encode()
        h.update(len(rel).to_bytes(8, "big") + rel)
        h.update(full.stat().st_size.to_bytes(8, "big"))
        with full.open("rb") as f:
            while chunk := f.read(_CHUNK):
                h.update(chunk)
    return h.hexdigest()


# ---------------------------------------------------------------------------- summary


def moe_layer_indices(config: PretrainedConfig) -> list[int]:
    """Decoder layers whose MLP is a sparse MoE block (Qwen3MoeDecoderLayer's rule)."""
    num_experts = getattr(config, "num_experts", 0) or 0
    if config.model_type != "qwen3_moe" or num_experts == 0:
        return []
    step = config.decoder_sparse_step
    dense = set(config.mlp_only_layers or [])
    return [i for i in range(config.num_hidden_layers) if i not in dense and (i + 1) % step == 0]


def summarize_config(config: PretrainedConfig) -> ConfigSummary:
    """Architecture summary and parameter counts of a Qwen3 / Qwen3-MoE config, without weights."""
    if config.model_type not in SUPPORTED_ARCHITECTURES:
        raise CheckpointError(f"unsupported model_type {config.model_type!r}", param="config.json")
    h, vocab, n_layers = config.hidden_size, config.vocab_size, config.num_hidden_layers
    head_dim = getattr(config, "head_dim", None) or h // config.num_attention_heads
    q_dim = config.num_attention_heads * head_dim
    kv_dim = config.num_key_value_heads * head_dim
    bias = bool(getattr(config, "attention_bias", False))
    attention = (
        h * q_dim
        + h * kv_dim * 2
        + q_dim * h  # q, k, v, o projections
        + (q_dim + 2 * kv_dim + h if bias else 0)
        + 2 * head_dim  # q_norm, k_norm (RMSNorm over each head)
    )
    norms = 2 * h  # input_layernorm, post_attention_layernorm
    moe_layers = moe_layer_indices(config)
    num_experts = config.num_experts if moe_layers else 0
    top_k = config.num_experts_per_tok if moe_layers else 0
    dense_mlp = 3 * h * config.intermediate_size  # gate, up, down
    expert = 3 * h * config.moe_intermediate_size if moe_layers else 0
    router = num_experts * h

    embeddings = vocab * h * (1 if config.tie_word_embeddings else 2)
    n_dense = n_layers - len(moe_layers)
    non_expert = (
        embeddings
        + n_layers * (attention + norms)
        + n_dense * dense_mlp
        + len(moe_layers) * router
        + h  # final norm
    )
    total = non_expert + len(moe_layers) * num_experts * expert
    active = non_expert + len(moe_layers) * top_k * expert
    return ConfigSummary(
        family=config.model_type,
        num_layers=n_layers,
        hidden_size=h,
        num_experts=num_experts,
        top_k=top_k,
        params_total=total,
        params_active=active,
    )


# ---------------------------------------------------------------------------- validation


def read_config(path: str | os.PathLike[str]) -> PretrainedConfig:
    """The checkpoint's config, after checking it is a supported Qwen3 / Qwen3-MoE one."""
    root = Path(path)
    config_file = root / "config.json"
    if not config_file.is_file():
        raise CheckpointError(f"config.json is missing from {root}", param="config.json")
    try:
        raw: dict[str, Any] = json.loads(config_file.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise CheckpointError(f"config.json is not valid JSON: {exc}", param="config.json") from exc
    model_type = raw.get("model_type") if isinstance(raw, dict) else None
    if model_type not in SUPPORTED_ARCHITECTURES:
        supported = ", ".join(sorted(SUPPORTED_ARCHITECTURES))
        raise CheckpointError(
            f"config.json: model_type {model_type!r} is not supported (supported: {supported})",
            param="config.json",
        )
    expected = SUPPORTED_ARCHITECTURES[model_type]
    architectures = raw.get("architectures") or [expected]
    if expected not in architectures:
        raise CheckpointError(
            f"config.json: architectures {architectures} do not include {expected}",
            param="config.json",
        )
    try:
        return AutoConfig.from_pretrained(root, local_files_only=True)
    except (ValueError, TypeError, KeyError) as exc:
        raise CheckpointError(f"config.json is invalid: {exc}", param="config.json") from exc


def safetensors_files(path: str | os.PathLike[str]) -> list[Path]:
    """The weight files of a checkpoint: model.safetensors, or the shards its index names."""
    root = Path(path)
    index = root / _INDEX
    if index.is_file():
        try:
            weight_map: dict[str, str] = json.loads(index.read_text())["weight_map"]
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise CheckpointError(f"{_INDEX} is invalid: {exc}", param=_INDEX) from exc
        files = sorted(set(weight_map.values()))
        for name in files:
            if not (root / name).is_file():
                raise CheckpointError(f"{name} (listed in {_INDEX}) is missing", param=name)
        return [root / name for name in files]
    single = root / "model.safetensors"
    if single.is_file():
        return [single]
    others = sorted(p.name for p in root.glob("*.safetensors"))
    if others:
        raise CheckpointError(
            f"weights {others} have no {_INDEX} saying how they fit together", param=_INDEX
        )
    raise CheckpointError(f"model.safetensors is missing from {root}", param="model.safetensors")


def _check_weights(root: Path, config: PretrainedConfig) -> None:
    """Headers parse and the embedding has the config's shape (a cheap 'right model' check)."""
    embed = "model.embed_tokens.weight"
    found = False
    for file in safetensors_files(root):
        try:
            with safe_open(file, framework="pt") as f:
                if embed in f.keys():  # noqa: SIM118 (safe_open is not a mapping)
                    shape = list(f.get_slice(embed).get_shape())
                    if shape != [config.vocab_size, config.hidden_size]:
                        raise CheckpointError(
                            f"{file.name}: {embed} has shape {shape}, config.json says "
                            f"[{config.vocab_size}, {config.hidden_size}]",
                            param=file.name,
                        )
                    found = True
        except (SafetensorError, OSError) as exc:
            raise CheckpointError(
                f"{file.name} is not a readable safetensors file: {exc}", param=file.name
            ) from exc
    if not found:
        raise CheckpointError(f"no weight file holds {embed}", param="model.safetensors")


def _check_tokenizer(root: Path) -> None:
    if not (root / "tokenizer_config.json").is_file():
        raise CheckpointError(
            f"tokenizer_config.json is missing from {root}", param="tokenizer_config.json"
        )
    has_fast = (root / "tokenizer.json").is_file()
    has_bpe = (root / "vocab.json").is_file() and (root / "merges.txt").is_file()
    if not (has_fast or has_bpe):
        raise CheckpointError(
            f"tokenizer.json (or vocab.json + merges.txt) is missing from {root}",
            param="tokenizer.json",
        )


def validate_checkpoint_dir(path: str | os.PathLike[str]) -> ConfigSummary:
    """Check that ``path`` is a loadable Qwen3 / Qwen3-MoE checkpoint and summarise it.

    Raises CheckpointError naming the first missing or invalid file. Reads no tensor data.
    """
    root = Path(path)
    if not root.is_dir():
        raise CheckpointError(f"{root} is not a directory", param="path")
    config = read_config(root)
    _check_weights(root, config)
    _check_tokenizer(root)
    return summarize_config(config)


def load_model(
    path: str | os.PathLike[str],
    *,
    dtype: torch.dtype = torch.float32,
    experts_implementation: str | None = None,
) -> PreTrainedModel:
    """Load a checkpoint directory for inference (eval mode), never touching the network."""
    root = Path(path)
    read_config(root)  # a clear CheckpointError rather than a hub lookup error
    kwargs: dict[str, Any] = {"dtype": dtype, "local_files_only": True}
    if experts_implementation is not None:
        kwargs["experts_implementation"] = experts_implementation
    model = AutoModelForCausalLM.from_pretrained(root, **kwargs)
    return model.eval()
