"""The Celery app's reliability settings, as `create_celery` makes them (no broker is touched)."""

from __future__ import annotations

from moeplane.config import Settings
from moeplane.jobs.celery_app import create_celery


def test_tasks_are_acked_late_one_at_a_time_and_periodic_ticks_expire(tmp_path):
    settings = Settings(home=tmp_path, schedule_interval_s=1.0, reconcile_interval_s=3.0)
    conf = create_celery(settings).conf
    assert conf.task_acks_late and conf.task_reject_on_worker_lost
    assert conf.worker_prefetch_multiplier == 1
    expires = {name: entry.get("options", {}).get("expires") for name, entry in
               conf.beat_schedule.items()}  # fmt: skip
    assert expires["schedule-fine-tunes"] == 2.0 and expires["reconcile-fine-tunes"] == 6.0


def test_the_embedded_broker_polls_fast_enough_for_one_second_periods(tmp_path):
    from moeplane.jobs.celery_app import EmbeddedBrokerTransport

    embedded = create_celery(Settings(home=tmp_path, redis_url=None))
    with embedded.connection_for_write() as connection:
        transport = connection.transport
        assert isinstance(transport, EmbeddedBrokerTransport)
        assert transport.polling_interval <= 0.2
        assert connection.hostname == f"sqlite:///{tmp_path / 'broker.db'}"
    redis = create_celery(Settings(home=tmp_path, redis_url="redis://127.0.0.1:6379/15"))
    assert redis.conf.broker_transport is None  # Redis blocks on its queue: nothing to poll


def test_tasks_stay_with_the_app_that_made_them(tmp_path):
    """Tasks close over their app's settings: a second app in the process (tests make several)
    must run its own, not the first app's (Celery's default shares tasks across apps)."""
    create_celery(Settings(home=tmp_path / "a", reconcile_interval_s=1.0))
    second = create_celery(Settings(home=tmp_path / "b", reconcile_interval_s=7.0))
    assert second.tasks["moeplane.serving.reconcile"].expires == 14.0
