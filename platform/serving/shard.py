"""Load one expert shard of a Qwen3-MoE checkpoint as a runnable model.

Shard ``i`` of ``S`` holds every non-expert weight and experts ``[i*E/S, (i+1)*E/S)`` of each
MoE layer (`moeplane.modeling.experts.load_shard_state`; other shards' experts are never read).
The model skeleton is built on the meta device, so nothing the size of the full expert set is
ever allocated; each layer's ``mlp.experts`` becomes a `ShardedExperts` that computes its local
experts' partial sum and all-reduces it over the gang, so every shard ends each MoE layer with
the unsharded model's output.
"""

from __future__ import annotations

import contextlib
import os

import torch
import torch.distributed as dist
from torch import nn
from transformers import AutoModelForCausalLM, GenerationConfig, PreTrainedModel

from moeplane.kernels import experts as moe_experts
from moeplane.modeling.checkpoint import load_model, read_config
from moeplane.modeling.experts import ShardInfo, load_shard_state

__all__ = ["ShardedExperts", "load_shard_model"]


class ShardedExperts(nn.Module):
    """A drop-in for ``Qwen3MoeExperts`` holding experts ``[start, stop)`` of ``num_experts``.

    ``forward`` has the experts module's signature: the router's top-k ids are global, pairs
    routed to other shards add zero here, and the all-reduce adds the other shards' parts.
    """

    def __init__(
        self,
        gate_up_proj: torch.Tensor,
        down_proj: torch.Tensor,
        *,
        expert_range: tuple[int, int],
        num_experts: int,
        num_shards: int,
        group: dist.ProcessGroup | None = None,
    ) -> None:
        super().__init__()
        start, stop = expert_range
        assert gate_up_proj.size(0) == down_proj.size(0) == stop - start, "weights != range"
        self.gate_up_proj = nn.Parameter(gate_up_proj, requires_grad=False)  # (E/S, 2I, H)
        self.down_proj = nn.Parameter(down_proj, requires_grad=False)  # (E/S, H, I)
        self.expert_range = (start, stop)
        self.num_experts = num_experts  # global: the router's ids go up to this
        self.num_shards = num_shards
        self.group = group

    def forward(
        self,
        hidden_states: torch.Tensor,
        top_k_index: torch.Tensor,
        top_k_weights: torch.Tensor,
    ) -> torch.Tensor:
        out = moe_experts(
            hidden_states,  # (tokens, H)
            self.gate_up_proj,
            self.down_proj,
            top_k_weights,  # (tokens, top_k)
            top_k_index,  # (tokens, top_k), global ids
            expert_range=self.expert_range,
        )  # (tokens, H): this shard's partial sum
        if self.num_shards > 1:
            dist.all_reduce(out, group=self.group)
        return out

    def extra_repr(self) -> str:
        start, stop = self.expert_range
        return f"experts [{start}, {stop}) of {self.num_experts}, shards={self.num_shards}"


def load_shard_model(
    path: str | os.PathLike[str],
    num_shards: int,
    shard_index: int,
    group: dist.ProcessGroup | None = None,
) -> tuple[PreTrainedModel, ShardInfo | None]:
    """Shard ``shard_index`` of ``num_shards`` of the checkpoint at ``path``, in eval mode.

    A dense model (no experts) loads whole and returns ``None`` as its ShardInfo; it cannot be
    split (``num_shards`` must be 1). ``group`` is the gang's process group (None: the default
    group); with one shard no process group is needed.
    """
    config = read_config(path)
    num_experts = int(getattr(config, "num_experts", 0) or 0)
    if config.model_type != "qwen3_moe" or num_experts == 0:
        if num_shards != 1 or shard_index != 0:
            raise ValueError(f"{path} is a dense model: it has no experts to shard")
        return load_model(path), None

    state, info = load_shard_state(path, num_shards, shard_index)
    with torch.device("meta"):  # no storage: the real tensors come from `state`
        model = AutoModelForCausalLM.from_config(config, dtype=config.dtype)
    for prefix in info.moe_layers:  # "model.layers.{i}.mlp.experts"
        parent_name, _, child = prefix.rpartition(".")
        sharded = ShardedExperts(
            state[f"{prefix}.gate_up_proj"],
            state[f"{prefix}.down_proj"],
            expert_range=(info.expert_start, info.expert_stop),
            num_experts=num_experts,
            num_shards=num_shards,
            group=group,
        )
        setattr(model.get_submodule(parent_name), child, sharded)
    _load_non_expert(model, state, info)
    with contextlib.suppress(OSError):  # none in the checkpoint: keep the one from config.json
        model.generation_config = GenerationConfig.from_pretrained(path, local_files_only=True)
    return model.eval(), info


def _load_non_expert(
    model: PreTrainedModel, state: dict[str, torch.Tensor], info: ShardInfo
) -> None:
    """Put the checkpoint tensors in place of the meta ones, re-tie, check nothing is left."""
    expert_keys = {f"{p}.{proj}" for p in info.moe_layers for proj in ("gate_up_proj", "down_proj")}
    rest = {k: v for k, v in state.items() if k not in expert_keys}
    missing, unexpected = model.load_state_dict(rest, strict=False, assign=True)
    tied = set(model.get_expanded_tied_weights_keys(all_submodels=True))
    if unexpected or set(missing) - tied - expert_keys:
        raise ValueError(
            f"checkpoint does not match the model: missing {sorted(set(missing) - tied)}, "
            f"unexpected {sorted(unexpected)}"
        )
    model.tie_weights()
    # Non-persistent buffers (rotary inv_freq) are not in any checkpoint: rebuild their owners.
    for name, module in list(model.named_modules()):
        if any(b.is_meta for b in module.buffers(recurse=False)):
            parent, _, child = name.rpartition(".")
            rebuilt = type(module)(config=model.config)
            setattr(model.get_submodule(parent) if parent else model, child, rebuilt)
    left = [n for n, t in [*model.named_parameters(), *model.named_buffers()] if t.is_meta]
    if left:
        raise ValueError(f"tensors left unloaded on the meta device: {left}")
