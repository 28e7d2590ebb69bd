"""Expert slicing for expert-sharded serving: each shard loads only its experts.

A replica of a MoE model is a gang of S shard actors. Shard s holds every non-expert weight
(embeddings, attention, norms, routers) and the contiguous experts [s*E/S, (s+1)*E/S) of every
MoE layer, read straight from the checkpoint's safetensors files: expert tensors of other shards
are never read from disk, so a shard's memory is non_expert + expert/S, not the whole model.

Two on-disk layouts are read (see `moeplane.modeling.catalog` for why both exist):
  fused       `...mlp.experts.gate_up_proj` (E, 2I, H), `...mlp.experts.down_proj` (E, H, I):
              the slice [start:stop] along dim 0 is read with `safe_open(...).get_slice`.
  per-expert  `...mlp.experts.{j}.{gate,up,down}_proj.weight` (what transformers'
              save_pretrained and the Hub's Qwen3-MoE checkpoints hold): only keys with
              start <= j < stop are read, then fused into the transformers-5 layout.
Either way the returned state dict uses the fused names with E/S experts along dim 0, so
local expert e of shard s is global expert start + e.
"""

from __future__ import annotations

import os
import re
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors import safe_open

from moeplane.errors import InvalidRequest
from moeplane.modeling.checkpoint import read_config, safetensors_files

__all__ = [
    "ExpertShardingError",
    "ShardInfo",
    "expert_slice",
    "is_expert_key",
    "load_shard_state",
]

# prefix = "model.layers.{i}.mlp.experts"; rest = what follows it.
_EXPERT_KEY = re.compile(r"^(?P<prefix>.+\.mlp\.experts)\.(?P<rest>.+)$")
_PER_EXPERT = re.compile(r"^(?P<j>\d+)\.(?P<proj>gate_proj|up_proj|down_proj)\.weight$")
_FUSED = ("gate_up_proj", "down_proj")


class ExpertShardingError(InvalidRequest):
    """Experts cannot be split as asked, or the checkpoint's expert tensors are unreadable."""

    code = "invalid_expert_sharding"


@dataclass(frozen=True)
class ShardInfo:
    """What one shard holds; serving reports it, and tests check the halves add up."""

    num_experts: int
    num_shards: int
    shard_index: int
    expert_start: int
    expert_stop: int  # exclusive
    moe_layers: tuple[str, ...]  # fused-expert prefixes, e.g. "model.layers.0.mlp.experts"
    layout: str  # "fused" or "per_expert": how the checkpoint stores experts
    expert_param_count: int
    non_expert_param_count: int


def expert_slice(num_experts: int, num_shards: int, shard_index: int) -> tuple[int, int]:
    """The contiguous expert range [start, stop) of shard ``shard_index`` of ``num_shards``.

    Equal slices only: a shard with more experts would be the gang's straggler every step.
    """
    if num_shards < 1:
        raise ExpertShardingError(f"expert_shards must be >= 1, got {num_shards}")
    if num_experts < 1:
        raise ExpertShardingError("the model has no experts to shard")
    if num_experts % num_shards != 0:
        raise ExpertShardingError(
            f"{num_experts} experts cannot be split evenly over {num_shards} shards: "
            f"expert_shards must divide {num_experts}",
            param="expert_shards",
        )
    if not 0 <= shard_index < num_shards:
        raise ExpertShardingError(f"shard_index {shard_index} is outside [0, {num_shards})")
    per_shard = num_experts // num_shards
    return shard_index * per_shard, (shard_index + 1) * per_shard


def is_expert_key(key: str) -> bool:
    """True for routed-expert weights (either layout); the router `mlp.gate` is not one."""
    return _EXPERT_KEY.match(key) is not None


def _fuse(
    prefix: str, parts: dict[str, dict[int, torch.Tensor]], start: int, stop: int
) -> dict[str, torch.Tensor]:
    """Stack this shard's per-expert matrices into the fused transformers-5 parameters."""
    for proj in ("gate_proj", "up_proj", "down_proj"):
        missing = sorted(set(range(start, stop)) - set(parts[proj]))
        if missing:
            raise ExpertShardingError(f"{prefix}: no {proj} weights for experts {missing}")
    local = range(start, stop)
    gate = torch.stack([parts["gate_proj"][j] for j in local])  # (E/S, I, H)
    up = torch.stack([parts["up_proj"][j] for j in local])  # (E/S, I, H)
    down = torch.stack([parts["down_proj"][j] for j in local])  # (E/S, H, I)
    return {
        f"{prefix}.gate_up_proj": torch.cat([gate, up], dim=1),  # (E/S, 2I, H), gate rows first
        f"{prefix}.down_proj": down,
    }


def load_shard_state(
    path: str | os.PathLike[str], num_shards: int, shard_index: int
) -> tuple[dict[str, torch.Tensor], ShardInfo]:
    """Read shard ``shard_index``'s weights of the MoE checkpoint at ``path``.

    Returns a state dict in the transformers-5 naming (fused experts, E/S along dim 0) and a
    ShardInfo. Non-expert tensors are read whole; expert tensors of other shards are not read.
    """
    root = Path(path)
    config = read_config(root)
    num_experts = int(getattr(config, "num_experts", 0) or 0)
    if config.model_type != "qwen3_moe" or num_experts == 0:
        raise ExpertShardingError(f"{root} is a dense model: there are no experts to shard")
    start, stop = expert_slice(num_experts, num_shards, shard_index)

    state: dict[str, torch.Tensor] = {}
    # prefix -> proj -> global expert index -> (I, H) or (H, I) matrix, for per-expert layout
    per_expert: dict[str, dict[str, dict[int, torch.Tensor]]] = defaultdict(
        lambda: defaultdict(dict)
    )
    fused_prefixes: set[str] = set()
    for file in safetensors_files(root):
        with safe_open(file, framework="pt") as f:
            for key in f.keys():  # noqa: SIM118 (safe_open is not a mapping)
                m = _EXPERT_KEY.match(key)
                if m is None:
                    state[key] = f.get_tensor(key)
                    continue
                prefix, rest = m["prefix"], m["rest"]
                if rest in _FUSED:
                    sliced = f.get_slice(key)
                    rows = sliced.get_shape()[0]
                    if rows != num_experts:
                        raise ExpertShardingError(
                            f"{file.name}: {key} has {rows} experts, config.json says {num_experts}"
                        )
                    state[key] = sliced[start:stop]  # (E/S, ...): only these bytes are read
                    fused_prefixes.add(prefix)
                    continue
                pm = _PER_EXPERT.match(rest)
                if pm is None:
                    raise ExpertShardingError(f"{file.name}: unrecognised expert tensor {key}")
                j = int(pm["j"])
                if start <= j < stop:
                    per_expert[prefix][pm["proj"]][j] = f.get_tensor(key)

    if fused_prefixes and per_expert:
        raise ExpertShardingError(f"{root} mixes fused and per-expert expert tensors")
    for prefix, parts in per_expert.items():
        state.update(_fuse(prefix, parts, start, stop))
    moe_layers = tuple(sorted(fused_prefixes | set(per_expert), key=_layer_order))
    for prefix in moe_layers:
        for proj in _FUSED:
            if f"{prefix}.{proj}" not in state:
                raise ExpertShardingError(f"{root}: {prefix}.{proj} is missing")

    expert_params = sum(t.numel() for k, t in state.items() if is_expert_key(k))
    info = ShardInfo(
        num_experts=num_experts,
        num_shards=num_shards,
        shard_index=shard_index,
        expert_start=start,
        expert_stop=stop,
        moe_layers=moe_layers,
        layout="per_expert" if per_expert else "fused",
        expert_param_count=expert_params,
        non_expert_param_count=sum(t.numel() for t in state.values()) - expert_params,
    )
    return state, info


def _layer_order(prefix: str) -> tuple[int, str]:
    """Sort "model.layers.10..." after "model.layers.9..." (numeric, not lexicographic)."""
    m = re.search(r"\.layers\.(\d+)\.", prefix)
    return (int(m[1]) if m else -1, prefix)
