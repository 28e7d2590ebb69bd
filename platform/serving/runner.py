"""ModelRunner: one forward step of continuous batching over a transformers causal LM.

The engine (or, for an expert-sharded replica, every shard actor of the gang) calls
``step(plan)`` once per iteration. A step

1. drops the KV cache of released sequences,
2. prefills each new sequence alone (no padding: routing statistics and numerics are those of
   the prompt by itself),
3. decodes every running sequence together: one forward of ``(B, 1)`` tokens over a batched,
   left-padded KV cache, with an attention mask and explicit position ids,
4. samples the next token of every sequence in the plan (leader only).

Sequences join and leave between steps. The batched cache is rebuilt ("repacked") only when the
set of decoding sequences changes; while it stays the same, a step just appends one column.
Repacking trims padding, so a long sequence leaving does not leave the others padded forever.

Every shard of a gang runs the same plans in the same order, so all shards make the same
forwards and their all-reduces line up; only the leader (``sample=True``) samples.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn
from transformers import DynamicCache, PreTrainedModel

from moeplane.serving._sampling import SamplingParams, make_generator, sample_next

__all__ = ["ModelRunner", "SamplingParams", "StepPlan"]

# (keys, values) of one attention layer, each (batch, kv_heads, length, head_dim)
_LayerKV = tuple[torch.Tensor, torch.Tensor]


@dataclass(frozen=True)
class StepPlan:
    """What one step does; the same plan goes to every shard of a gang (so it is picklable)."""

    prefill: list[tuple[str, list[int], SamplingParams]] = field(default_factory=list)
    """New sequences: (seq_id, prompt token ids, sampling)."""
    decode: list[tuple[str, int]] = field(default_factory=list)
    """Running sequences: (seq_id, the token sampled last step, to feed now)."""
    release: list[str] = field(default_factory=list)
    """Sequences to drop before this step."""


@dataclass
class _Sequence:
    sampling: SamplingParams
    generator: torch.Generator | None
    length: int  # tokens in the KV cache
    kv: list[_LayerKV] | None  # its own (batch 1) cache while it is not in the batched cache


@dataclass
class _Batch:
    """The left-padded KV cache of the sequences decoded last step, in row order."""

    seq_ids: list[str | None]  # None: a row released since (its id may already be reused)
    cache: DynamicCache
    pads: list[int]  # left padding of each row
    width: int  # cache length (padding included)


class ModelRunner:
    """Runs steps of continuous batching on ``model``; see the module docstring."""

    def __init__(self, model: PreTrainedModel, *, sample: bool = True) -> None:
        self.model = model.eval()
        self.sample = sample
        self._seqs: dict[str, _Sequence] = {}
        self._batch: _Batch | None = None
        self._expert_modules = _moe_experts_modules(model)
        num_experts = int(getattr(model.config, "num_experts", 0) or 0)
        device = next(model.parameters()).device
        self._counts = [
            torch.zeros(num_experts, dtype=torch.long, device=device)  # stays on the device: no
            for _ in self._expert_modules  # host sync per layer and step
        ]
        self._counting = False  # only this runner's forwards count, not other users of the model
        for layer, module in enumerate(self._expert_modules):
            module.register_forward_pre_hook(self._count_hook(layer), with_kwargs=True)

    @property
    def num_sequences(self) -> int:
        """Sequences holding a KV cache (prefilled and not released)."""
        return len(self._seqs)

    def expert_counts(self) -> list[list[int]]:
        """Per MoE layer, per expert: tokens routed there since start (dense model: [])."""
        return [c.tolist() for c in self._counts]

    @torch.inference_mode()
    def step(self, plan: StepPlan) -> dict[str, int]:
        """Run one step; returns {seq_id: next token} (``{}`` when this runner does not sample)."""
        self._check(plan)
        for seq_id in plan.release:
            self._release(seq_id)
        logits: dict[str, torch.Tensor] = {}
        self._counting = True
        try:
            for seq_id, prompt, sampling in plan.prefill:
                logits[seq_id] = self._prefill(seq_id, prompt, sampling)
            if plan.decode:
                logits.update(self._decode(plan.decode))
        finally:
            self._counting = False
        if not self.sample:
            return {}
        return {
            seq_id: sample_next(row, self._seqs[seq_id].sampling, self._seqs[seq_id].generator)
            for seq_id, row in logits.items()
        }

    # -- steps ------------------------------------------------------------------------------
    def _check(self, plan: StepPlan) -> None:
        released = set(plan.release)
        for seq_id, prompt, _ in plan.prefill:
            if seq_id in self._seqs and seq_id not in released:
                raise ValueError(f"sequence {seq_id!r} is already running")
            if not prompt:
                raise ValueError(f"sequence {seq_id!r} has an empty prompt")
        new = {seq_id for seq_id, _, _ in plan.prefill}
        for seq_id, _ in plan.decode:
            if seq_id not in self._seqs or seq_id in released or seq_id in new:
                raise ValueError(f"sequence {seq_id!r} is not running: cannot decode it")
        ids = [s for s, _ in plan.decode] + list(new)
        if len(set(ids)) != len(ids) or len(new) != len(plan.prefill):
            raise ValueError("a sequence appears twice in the plan")

    def _release(self, seq_id: str) -> None:
        if self._seqs.pop(seq_id, None) is None:
            return  # unknown ids are fine: releasing is idempotent
        batch = self._batch
        if batch is not None and seq_id in batch.seq_ids:
            batch.seq_ids[batch.seq_ids.index(seq_id)] = None

    def _forward(self, **inputs: torch.Tensor | DynamicCache) -> torch.Tensor | None:
        """Last-position logits ``(B, V)``; without sampling, the lm_head is skipped."""
        if not self.sample:
            self.model.base_model(**inputs, use_cache=True)
            return None
        out = self.model(**inputs, use_cache=True, logits_to_keep=1)
        return out.logits[:, -1, :].float()  # (B, V)

    def _prefill(self, seq_id: str, prompt: list[int], sampling: SamplingParams) -> torch.Tensor:
        cache = DynamicCache(config=self.model.config)
        ids = torch.tensor([prompt], dtype=torch.long, device=self.model.device)  # (1, L)
        logits = self._forward(input_ids=ids, cache=cache)
        kv = [(layer.keys, layer.values) for layer in cache.layers]
        generator = make_generator(sampling, self.model.device)
        self._seqs[seq_id] = _Sequence(sampling, generator, len(prompt), kv)
        return None if logits is None else logits[0]

    def _decode(self, decode: list[tuple[str, int]]) -> dict[str, torch.Tensor]:
        batch = self._batch
        wanted = [seq_id for seq_id, _ in decode]
        if batch is None or set(batch.seq_ids) != set(wanted):
            batch = self._batch = self._repack(wanted)
        token_of = dict(decode)
        rows = batch.seq_ids
        device = self.model.device
        ids = torch.tensor([[token_of[s]] for s in rows], device=device)  # (B, 1)
        positions = torch.tensor([[self._seqs[s].length] for s in rows], device=device)  # (B, 1)
        mask = torch.ones(len(rows), batch.width + 1, dtype=torch.long, device=device)
        for row, pad in enumerate(batch.pads):
            mask[row, :pad] = 0  # (B, width + 1): left padding is masked out
        logits = self._forward(
            input_ids=ids, attention_mask=mask, position_ids=positions, cache=batch.cache
        )
        batch.width += 1
        for seq_id in rows:
            self._seqs[seq_id].length += 1
        if logits is None:
            return {seq_id: None for seq_id in rows}
        return {seq_id: logits[row] for row, seq_id in enumerate(rows)}

    def _repack(self, seq_ids: list[str]) -> _Batch:
        """Build the batched cache of ``seq_ids`` from the old batch and new sequences."""
        old = self._batch
        if old is not None:  # give the old batch's live rows their own cache back
            for row, seq_id in enumerate(old.seq_ids):
                if seq_id is not None:
                    seq = self._seqs[seq_id]
                    seq.kv = [
                        (k[row : row + 1, :, old.pads[row] :], v[row : row + 1, :, old.pads[row] :])
                        for k, v in ((layer.keys, layer.values) for layer in old.cache.layers)
                    ]  # (1, kv_heads, length, head_dim) views
        self._batch = None
        seqs = [self._seqs[s] for s in seq_ids]
        width = max(s.length for s in seqs)
        pads = [width - s.length for s in seqs]
        layers: list[_LayerKV] = []
        for layer in range(len(seqs[0].kv)):
            k0, v0 = seqs[0].kv[layer]
            keys = k0.new_zeros(len(seqs), k0.size(1), width, k0.size(3))  # (B, kvh, W, d)
            values = v0.new_zeros(len(seqs), v0.size(1), width, v0.size(3))
            for row, (seq, pad) in enumerate(zip(seqs, pads, strict=True)):
                k, v = seq.kv[layer]
                keys[row, :, pad:] = k[0]
                values[row, :, pad:] = v[0]
            layers.append((keys, values))
        for seq in seqs:
            seq.kv = None  # the batch holds it now
        cache = DynamicCache(ddp_cache_data=layers, config=self.model.config)
        return _Batch(list(seq_ids), cache, pads, width)

    # -- routing statistics -----------------------------------------------------------------
    def _count_hook(self, layer: int):
        counts = self._counts[layer]

        def hook(module: nn.Module, args: tuple, kwargs: dict) -> None:
            if not self._counting:
                return
            top_k_index = args[1] if len(args) > 1 else kwargs["top_k_index"]  # (tokens, top_k)
            ids = top_k_index.reshape(-1).to(counts.device)  # (tokens * top_k,)
            counts.add_(torch.bincount(ids, minlength=counts.numel()))

        return hook


def _moe_experts_modules(model: nn.Module) -> list[nn.Module]:
    """Each MoE layer's routed-experts module (``...mlp.experts``), in layer order."""
    return [m for name, m in model.named_modules() if name.endswith("mlp.experts")]
