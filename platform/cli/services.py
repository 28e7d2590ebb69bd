"""``moeplane worker`` and ``moeplane beat``: the Celery processes, configured from settings."""

from __future__ import annotations

from typing import Annotated

import typer


def worker(
    concurrency: Annotated[int, typer.Option(help="Worker processes")] = 2,
    loglevel: Annotated[str, typer.Option(help="Log level")] = "info",
) -> None:
    """Run a Celery worker (scheduling, submitting and reconciling fine-tunes)."""
    from moeplane.cli import _settings
    from moeplane.jobs.celery_app import create_celery

    celery = create_celery(_settings())
    celery.worker_main(
        ["worker", f"--concurrency={concurrency}", f"--loglevel={loglevel}", "-Q", "moeplane"]
    )


def beat(loglevel: Annotated[str, typer.Option(help="Log level")] = "info") -> None:
    """Run Celery beat: the scheduler tick and the reconcile loops, every few seconds."""
    from moeplane.cli import _settings
    from moeplane.jobs.celery_app import create_celery

    settings = _settings()
    celery = create_celery(settings)
    schedule = settings.home / "celerybeat-schedule"
    celery.start(["beat", f"--loglevel={loglevel}", f"--schedule={schedule}"])
