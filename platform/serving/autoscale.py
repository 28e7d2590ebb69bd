"""LLM-native autoscaling: replicas from queued + in-flight tokens, not ongoing requests.

Ongoing requests are a poor load signal for generation: one request asking for 2,000 tokens
loads a replica like a hundred asking for 20. Each replica reports the tokens it still has to
process (prompt tokens not yet prefilled + completion tokens not yet generated, see
`Engine.load`) through Serve's ``record_autoscaling_stats``; the policy asks for enough replicas
that each carries ``target_tokens_per_replica``. Serve then applies min/max and the
upscale/downscale delays (its ``_apply_autoscaling_config`` wraps custom policies).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

__all__ = ["TokenTargetPolicy", "desired_replicas"]

METRIC = "tokens"  # the key ModelServer.record_autoscaling_stats reports


def desired_replicas(
    tokens_by_replica: Mapping[Any, float], current_replicas: int, target_tokens_per_replica: int
) -> int:
    """Replicas needed so that each carries at most the target; pure.

    With no metrics yet (replicas starting), keep the current count rather than guess.
    """
    assert target_tokens_per_replica > 0, "target_tokens_per_replica must be positive"
    if not tokens_by_replica:
        return current_replicas
    total = sum(max(0.0, v) for v in tokens_by_replica.values())
    return max(1, math.ceil(total / target_tokens_per_replica)) if total > 0 else 1


class TokenTargetPolicy:
    """A Serve autoscaling policy (``AutoscalingPolicy(policy_function=...)``)."""

    def __init__(self, target_tokens_per_replica: int = 4096):
        if target_tokens_per_replica <= 0:
            raise ValueError("target_tokens_per_replica must be positive")
        self.target = target_tokens_per_replica

    def __call__(self, ctx: Any) -> tuple[int, dict[str, Any]]:
        metrics = ctx.aggregated_metrics or {}
        by_replica = metrics.get(METRIC) or {}
        desired = desired_replicas(by_replica, ctx.current_num_replicas, self.target)
        return desired, {}
