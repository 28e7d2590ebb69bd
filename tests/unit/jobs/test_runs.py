"""The pure decisions around Ray runs: the reconcile decision per job and training capacity."""

from __future__ import annotations

import pytest

from moeplane.jobs.runs import Action, decide
from moeplane.jobs.scheduler import Resources, training_capacity

GRACE = 60.0


@pytest.mark.parametrize(
    ("db_status", "ray_status", "seconds", "action"),
    [
        ("running", None, 5.0, Action.NOTHING),  # its submit task may still be on the way
        ("running", None, 61.0, Action.SUBMIT),  # the submit task was lost: send it again
        ("running", "PENDING", 600.0, Action.NOTHING),
        ("running", "RUNNING", 600.0, Action.NOTHING),
        ("running", "FAILED", 1.0, Action.FAIL),
        ("running", "STOPPED", 1.0, Action.FAIL),
        ("running", "SUCCEEDED", 1.0, Action.FAIL),  # the driver registers before it exits
        ("cancelled", "RUNNING", 1.0, Action.STOP),
        ("cancelled", "PENDING", 1.0, Action.STOP),
        ("cancelled", "STOPPED", 1.0, Action.NOTHING),
        ("cancelled", None, 600.0, Action.NOTHING),
        ("succeeded", "SUCCEEDED", 1.0, Action.NOTHING),
        ("queued", None, 600.0, Action.NOTHING),
    ],
)
def test_decide(db_status, ray_status, seconds, action):
    assert decide(db_status, ray_status, seconds, GRACE).action is action


def test_the_submit_grace_comes_from_the_caller():
    assert decide("running", None, 11.0, 10.0).action is Action.SUBMIT
    assert decide("running", None, 11.0, 30.0).action is Action.NOTHING


def test_training_capacity_is_the_live_cluster_unless_configured():
    cluster = Resources(cpus=48.0, gpus=4.0)
    assert training_capacity(None, None, cluster) == cluster
    assert training_capacity(16.0, None, cluster) == Resources(16.0, 4.0)  # CPUs capped
    assert training_capacity(None, 0.0, cluster) == Resources(48.0, 0.0)  # no GPUs for training
    assert training_capacity(8.0, 1.0, None) == Resources(8.0, 1.0)  # fully configured


def test_training_capacity_is_unknown_without_the_cluster_or_a_cpu_limit():
    assert training_capacity(None, None, None) is None
    assert training_capacity(None, 2.0, None) is None
    assert training_capacity(4.0, None, None) == Resources(4.0, 0.0)  # CPUs set, GPUs none known
