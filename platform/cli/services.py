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


def api(
    host: Annotated[str | None, typer.Option(help="Bind address [MOEPLANE_API_HOST]")] = None,
    port: Annotated[int | None, typer.Option(help="Port [MOEPLANE_API_PORT]")] = None,
    workers: Annotated[int, typer.Option(min=1, help="uvicorn worker processes")] = 1,
) -> None:
    """Run only the API (production: migrations, Ray, worker and beat run elsewhere).

    Registers MOEPLANE_ADMIN_KEY when it is set (once; safe with many replicas starting) and
    serves until SIGTERM, finishing requests in flight.
    """
    import uvicorn

    from moeplane.cli import _settings

    settings = _settings()
    if settings.admin_key is not None:
        _register_admin_key(settings)
    uvicorn.run(
        "moeplane.api.asgi:create",
        factory=True,
        host=host or settings.api_host,
        port=port or settings.api_port,
        workers=workers,
        log_level=settings.log_level,
        # behind a load balancer / ingress: trust its X-Forwarded-* (set FORWARDED_ALLOW_IPS)
        proxy_headers=True,
        timeout_graceful_shutdown=25,
    )


def _register_admin_key(settings) -> None:
    from sqlalchemy.exc import IntegrityError

    from moeplane.store.db import Database
    from moeplane.store.keys import ensure_admin_key

    db = Database(settings.database_url)
    try:
        with db.session() as session:
            ensure_admin_key(session, settings.admin_key.get_secret_value())
    except IntegrityError:
        pass  # another replica registered it a moment ago (the key hash is unique)
    finally:
        db.dispose()
