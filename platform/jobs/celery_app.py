"""The Celery application: broker, reliability settings, beat schedule and task registration.

Built by :func:`create_celery` when a process starts (``moeplane worker``/``beat``/the API), never
at import. Reliability: ``acks_late`` + ``reject_on_worker_lost`` + prefetch 1, so a task whose
worker dies is redelivered; every task is idempotent (it re-reads state and changes it only by
compare-and-set), so a redelivery is harmless.
"""

from __future__ import annotations

from celery import Celery
from kombu.transport.sqlalchemy import Transport as SQLAlchemyTransport

from moeplane.config import Settings

__all__ = ["EmbeddedBrokerTransport", "create_celery"]

_SQLA = "sqla+"


class EmbeddedBrokerTransport(SQLAlchemyTransport):
    """kombu's SQLAlchemy transport (the embedded SQLite broker), polled every 0.1 s.

    It polls, by default once a second once prefetch is full: ~2 tasks/s for 2 pool processes,
    fewer than beat sends at 1 s periods, so a backlog grew until every serving reconcile
    expired in the queue. (Its transport options all go to ``create_engine``, so the interval
    cannot be set there.)"""

    polling_interval = 0.1


def create_celery(settings: Settings) -> Celery:
    settings.home.mkdir(parents=True, exist_ok=True)
    broker, transport = settings.broker_url, None
    if broker.startswith(_SQLA):
        broker, transport = broker.removeprefix(_SQLA), EmbeddedBrokerTransport
    app = Celery("moeplane", broker=broker, backend=settings.result_backend)
    app.conf.update(
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        worker_prefetch_multiplier=1,
        task_ignore_result=True,
        task_default_queue="moeplane",
        broker_connection_retry_on_startup=True,
        worker_hijack_root_logger=False,
        timezone="UTC",
        broker_transport=transport,
        beat_schedule={
            # a tick that waited longer than two periods is stale: the next one comes anyway
            "schedule-fine-tunes": {
                "task": "moeplane.jobs.schedule_tick",
                "schedule": settings.schedule_interval_s,
                "options": {"expires": settings.schedule_interval_s * 2},
            },
            "reconcile-fine-tunes": {
                "task": "moeplane.jobs.reconcile_runs",
                "schedule": settings.reconcile_interval_s,
                "options": {"expires": settings.reconcile_interval_s * 2},
            },
            "reconcile-deployments": {
                "task": "moeplane.serving.reconcile",
                "schedule": settings.reconcile_interval_s,
            },
        },
    )
    from moeplane.jobs.tasks import register_tasks
    from moeplane.recommend.tasks import register_recommend_tasks
    from moeplane.serving.tasks import register_serving_tasks

    register_tasks(app, settings)
    register_serving_tasks(app, settings)
    register_recommend_tasks(app, settings)
    return app
