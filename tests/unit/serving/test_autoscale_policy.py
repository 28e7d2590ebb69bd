"""The LLM-native autoscaling policy: replicas from queued + in-flight tokens."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from moeplane.serving.autoscale import TokenTargetPolicy, desired_replicas
from moeplane.serving.spec import Autoscaling, ServingSpec


@pytest.mark.parametrize(
    ("tokens", "current", "expected"),
    [
        ({}, 2, 2),  # no metrics yet: hold
        ({"a": 0.0}, 3, 1),  # idle: down to one (Serve applies min_replicas and the delay)
        ({"a": 1000.0}, 1, 1),
        ({"a": 3000.0}, 1, 2),
        ({"a": 3000.0, "b": 5000.0}, 2, 4),
        ({"a": -5.0}, 1, 1),  # nonsense is clamped
    ],
)
def test_desired_replicas(tokens, current, expected):
    assert desired_replicas(tokens, current, 2048) == expected


def test_policy_reads_the_custom_metric():
    policy = TokenTargetPolicy(target_tokens_per_replica=100)
    ctx = SimpleNamespace(aggregated_metrics={"tokens": {"r1": 250.0}}, current_num_replicas=1)
    assert policy(ctx) == (3, {})
    with pytest.raises(ValueError):
        TokenTargetPolicy(target_tokens_per_replica=0)


def test_spec_round_trips_through_serve_args_and_bundles():
    spec = ServingSpec(
        deployment_id="dep-1",
        tenant_id="ten-1",
        generation=2,
        model="qwen3-moe-tiny",
        model_version_id="mv-1",
        artifact_uri="file:///x",
        family="qwen3_moe",
        expert_shards=2,
        autoscaling=Autoscaling(max_replicas=2, policy="tokens"),
    )
    assert ServingSpec.from_args(spec.to_args()) == spec
    assert spec.replica_bundles == [{"CPU": 0.1}, {"CPU": 0.5}, {"CPU": 0.5}]
