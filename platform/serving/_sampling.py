"""Sampling parameters and next-token sampling (greedy, temperature, top-p).

Each sequence has its own ``torch.Generator``: a seeded request draws the same tokens whatever
else shares its batch, which a single global RNG could not give.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

__all__ = ["SamplingParams", "make_generator", "sample_next"]

_MAX_SEED = 2**63 - 1  # torch.Generator.manual_seed takes a signed 64-bit value


@dataclass(frozen=True)
class SamplingParams:
    """How one sequence picks its tokens. ``temperature == 0`` means greedy."""

    temperature: float = 1.0
    top_p: float = 1.0
    seed: int | None = None

    def __post_init__(self) -> None:
        if not (isinstance(self.temperature, int | float) and math.isfinite(self.temperature)):
            raise ValueError(f"temperature must be a finite number, got {self.temperature!r}")
        if self.temperature < 0:
            raise ValueError(f"temperature must be >= 0, got {self.temperature}")
        if not isinstance(self.top_p, int | float) or not 0 < self.top_p <= 1:
            raise ValueError(f"top_p must be in (0, 1], got {self.top_p!r}")
        if self.seed is not None and (
            isinstance(self.seed, bool)
            or not isinstance(self.seed, int)
            or not 0 <= self.seed <= _MAX_SEED
        ):
            raise ValueError(f"seed must be an integer in [0, 2**63), got {self.seed!r}")

    @property
    def greedy(self) -> bool:
        return self.temperature == 0


def make_generator(
    sampling: SamplingParams, device: torch.device | str = "cpu"
) -> torch.Generator | None:
    """The sequence's own RNG: seeded when asked, fresh entropy otherwise; none when greedy."""
    if sampling.greedy:
        return None
    generator = torch.Generator(device=device)
    if sampling.seed is None:
        generator.seed()
    else:
        generator.manual_seed(sampling.seed)
    return generator


def sample_next(
    logits: torch.Tensor, sampling: SamplingParams, generator: torch.Generator | None
) -> int:
    """The next token from last-position ``logits`` ``(V,)``."""
    if sampling.greedy:
        return int(torch.argmax(logits))
    probs = torch.softmax(logits.float() / sampling.temperature, dim=-1)  # (V,)
    if sampling.top_p < 1:
        sorted_probs, order = torch.sort(probs, descending=True)  # (V,), (V,)
        # keep the smallest prefix whose mass reaches top_p (the first token always stays)
        before = torch.cumsum(sorted_probs, dim=-1) - sorted_probs  # mass ahead of each token
        dropped = order[before >= sampling.top_p]
        # draw in vocabulary order, not sorted order: near-equal probabilities swap places in
        # a sort under the last-bit noise of a different batch (other GEMM kernels), and a
        # draw over the sorted list would then land on another token
        probs = probs.index_fill(0, dropped, 0.0)
    return int(torch.multinomial(probs, 1, generator=generator))
