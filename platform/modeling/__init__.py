"""Model catalog, Qwen tokenizer, checkpoint validation/loading and expert slicing.

Wraps transformers' Qwen3 / Qwen3-MoE; fine-tuning and serving build on this package.
"""

from moeplane.modeling.catalog import (
    BASE_MODELS,
    BaseModelSpec,
    build_model,
    create_base_checkpoint,
)
from moeplane.modeling.checkpoint import (
    CheckpointError,
    ConfigSummary,
    iter_artifact_files,
    load_model,
    read_config,
    sha256_dir,
    summarize_config,
    validate_checkpoint_dir,
)
from moeplane.modeling.experts import (
    ExpertShardingError,
    ShardInfo,
    expert_slice,
    is_expert_key,
    load_shard_state,
)
from moeplane.modeling.tokenizer import CHAT_TEMPLATE, build_tokenizer, encode_chat

__all__ = [
    "BASE_MODELS",
    "CHAT_TEMPLATE",
    "BaseModelSpec",
    "CheckpointError",
    "ConfigSummary",
    "ExpertShardingError",
    "ShardInfo",
    "build_model",
    "build_tokenizer",
    "create_base_checkpoint",
    "encode_chat",
    "expert_slice",
    "is_expert_key",
    "iter_artifact_files",
    "load_model",
    "load_shard_state",
    "read_config",
    "sha256_dir",
    "summarize_config",
    "validate_checkpoint_dir",
]
