"""Register ``moeplane`` as a transformers experts implementation.

``Qwen3MoeForCausalLM(config)`` with ``experts_implementation="moeplane"``
then runs its ``Qwen3MoeExperts`` through ``moeplane.kernels.experts``.
"""

from __future__ import annotations

import torch

from moeplane.kernels.api import experts

__all__ = [
    "IMPLEMENTATION_NAME",
    "UnsupportedExpertsLayout",
    "moeplane_experts_forward",
    "register",
]

IMPLEMENTATION_NAME = "moeplane"
_CHECKED = "_moeplane_layout_checked"  # set on a module whose layout passed _check_layout


class UnsupportedExpertsLayout(ValueError):
    """The experts module is not gated SwiGLU in transformers' default layout."""


def moeplane_experts_forward(
    self: torch.nn.Module,
    hidden_states: torch.Tensor,
    top_k_index: torch.Tensor,
    top_k_weights: torch.Tensor,
) -> torch.Tensor:
    """Drop-in for ``Qwen3MoeExperts.forward`` (and any experts class with the
    same ``use_experts_implementation`` defaults)."""
    # Once per module: in a decode step each Python call here runs with cold caches, and the
    # check (which reads the config) cost ~25 us of a ~0.5 ms layer.
    state = self.__dict__
    if state.get(_CHECKED) is not True:
        _check_layout(self)
        state[_CHECKED] = True
    # Expert parallelism marks pairs routed to other ranks with ids
    # >= num_experts; computing only the local range drops them.
    expert_range = (0, self.num_experts) if state.get("_is_expert_parallel", False) else None
    return experts(
        hidden_states,
        _weight(self, "gate_up_proj"),
        _weight(self, "down_proj"),
        top_k_weights,
        top_k_index,
        expert_range=expert_range,
    )


def _weight(module: torch.nn.Module, name: str) -> torch.Tensor:
    """``getattr(module, name)``, from the parameters dict first (without nn.Module's
    ``__getattr__``, a Python call)."""
    param = module._parameters.get(name)
    return getattr(module, name) if param is None else param


def _check_layout(module: torch.nn.Module) -> None:
    problems = []
    if not getattr(module, "has_gate", True) or getattr(module, "has_bias", False):
        problems.append("needs gate_up_proj without bias")
    if getattr(module, "is_transposed", False) or not getattr(module, "is_concatenated", True):
        problems.append("needs the (E, 2I, H) concatenated [gate; up] layout")
    if getattr(module, "has_post_expert_norm", False):
        problems.append("post-expert norm not supported")
    hidden_act = getattr(getattr(module, "config", None), "hidden_act", "silu")
    if hidden_act not in ("silu", "swish"):
        problems.append(f"activation must be SiLU, got {hidden_act!r}")
    if problems:
        raise UnsupportedExpertsLayout(f"{type(module).__name__}: " + "; ".join(problems))


def register() -> None:
    """Add ``moeplane`` to transformers' ``ExpertsInterface``. Idempotent."""
    from transformers.integrations.moe import ExpertsInterface

    if ExpertsInterface._global_mapping.get(IMPLEMENTATION_NAME) is not moeplane_experts_forward:
        ExpertsInterface.register(IMPLEMENTATION_NAME, moeplane_experts_forward)
