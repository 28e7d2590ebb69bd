"""The reconciler's pure decision: desired rows x Serve's applications -> actions."""

from __future__ import annotations

from moeplane.serving.reconcile import ActualApp, Apply, DesiredApp, Observe, Purge, Remove, diff


def _desired(gen=1, deleting=False, name="mp-acme-bot", dep="dep-1", error=None):
    args = None if deleting or error else {"generation": gen, "model_version_id": f"mv-{gen}"}
    return DesiredApp(dep, name, gen, deleting, args, error)


def _actual(gen=1, status="RUNNING", name="mp-acme-bot", replicas=1, message=""):
    return {name: ActualApp(name, status, message, {"generation": gen}, replicas)}


def test_missing_app_is_created():
    actions = diff([_desired()], {})
    assert actions == [
        Apply("mp-acme-bot", {"generation": 1, "model_version_id": "mv-1"}),
        Observe("dep-1", "deploying", None, replicas=0),
    ]


def test_a_deleted_serve_app_is_recreated_with_a_reason():
    actions = diff([_desired(gen=3)], {})
    assert isinstance(actions[0], Apply)
    assert actions[1].status == "deploying" and "not found" in actions[1].reason


def test_running_desired_generation_is_observed():
    actions = diff([_desired(gen=2)], _actual(gen=2, replicas=3))
    assert actions == [
        Observe(
            "dep-1", "running", None, observed_generation=2, observed_version_id="mv-2", replicas=3
        )
    ]


def test_new_generation_is_a_rolling_update_while_the_old_serves():
    actions = diff([_desired(gen=2)], _actual(gen=1, replicas=2))
    assert actions[0] == Apply("mp-acme-bot", {"generation": 2, "model_version_id": "mv-2"})
    observe = actions[1]
    assert observe.status == "deploying" and observe.replicas == 2
    assert observe.observed_generation is None  # still serving generation 1


def test_deploying_failed_and_unhealthy():
    assert diff([_desired()], _actual(status="DEPLOYING"))[0].status == "deploying"
    failed = diff([_desired()], _actual(status="DEPLOY_FAILED", message="OOM"))[0]
    assert failed == Observe("dep-1", "failed", "OOM")
    unhealthy = diff([_desired()], _actual(status="UNHEALTHY", message="shard died"))[0]
    assert unhealthy.status == "deploying" and "shard died" in unhealthy.reason


def test_deleting_removes_then_purges():
    assert diff([_desired(deleting=True)], _actual()) == [Remove("mp-acme-bot")]
    assert diff([_desired(deleting=True)], {}) == [Purge("dep-1")]


def test_orphans_are_removed_but_foreign_apps_are_left_alone():
    actual = _actual(name="mp-gone-app") | _actual(name="someone-elses")
    assert diff([], actual) == [Remove("mp-gone-app")]


def test_unresolvable_spec_fails_without_touching_serve():
    actions = diff([_desired(error="model version mv-9 no longer exists")], _actual())
    assert actions == [Observe("dep-1", "failed", "model version mv-9 no longer exists")]


def test_idempotent_once_converged():
    desired, actual = [_desired(gen=4)], _actual(gen=4)
    assert diff(desired, actual) == diff(desired, actual)
    assert not [a for a in diff(desired, actual) if isinstance(a, Apply | Remove)]
