"""Celery tasks. Each takes ids, re-reads state and is idempotent; none waits for training:
a task starts a Ray job and the reconcile loop follows it."""

from __future__ import annotations

import logging
from typing import Any

from celery import Celery
from kombu.exceptions import OperationalError

from moeplane.config import Settings
from moeplane.jobs.admission import admit_jobs
from moeplane.jobs.runs import RayRuns, reconcile_runs
from moeplane.store.db import Database
from moeplane.store.jobs import add_event
from moeplane.store.models import FineTuneJob

__all__ = ["Dispatch", "register_tasks"]

log = logging.getLogger(__name__)


class _Runtime:
    """Per-process connections, made on first use (after the worker forks)."""

    def __init__(self, settings: Settings):
        self.settings = settings
        self._db: Database | None = None
        self._runs: RayRuns | None = None

    @property
    def db(self) -> Database:
        if self._db is None:
            self._db = Database(self.settings.database_url)
        return self._db

    @property
    def runs(self) -> RayRuns:
        if self._runs is None:
            self._runs = RayRuns(self.settings)
        return self._runs


def register_tasks(app: Celery, settings: Settings) -> None:
    """The tasks close over ``settings``: ``shared=False`` keeps Celery from adding them to apps
    made later in the process (where they would shadow those apps' own)."""
    rt = _Runtime(settings)

    @app.task(name="moeplane.jobs.schedule_tick", shared=False)
    def schedule_tick() -> list[str]:
        cluster = None
        if rt.settings.training_cpus is None or rt.settings.training_gpus is None:
            try:
                cluster = rt.runs.cluster_resources()
            except Exception as exc:  # Ray down or starting: this tick admits nothing
                log.warning("cannot read the Ray cluster's resources: %s", exc)
        with rt.db.session() as db:
            admitted = admit_jobs(db, rt.settings, cluster)
        for job_id in admitted:  # after commit: the submit task reads the new status
            submit_training.delay(job_id)
        return admitted

    # Ray answers "no available agent" while its head is still starting: retry with back-off
    @app.task(
        name="moeplane.jobs.submit_training",
        autoretry_for=(RuntimeError, ConnectionError),
        max_retries=10,
        retry_backoff=2,
        retry_backoff_max=30,
        shared=False,
    )
    def submit_training(job_id: str) -> bool:
        with rt.db.session() as db:
            job = db.get(FineTuneJob, job_id)
            if job is None or job.status != "running":
                return False
        submitted = rt.runs.submit(job_id)  # the submission id makes a retry harmless
        with rt.db.session() as db:
            job = db.get(FineTuneJob, job_id)
            if job is not None and job.submission_id is None:
                # a redelivered task (its worker died after Ray took the job) records it too
                job.submission_id = job_id
                add_event(db, job, f"Submitted to Ray (submission id {job_id})")
        return submitted

    @app.task(name="moeplane.jobs.reconcile_runs", shared=False)
    def reconcile() -> list[str]:
        with rt.db.session() as db:
            to_submit = reconcile_runs(db, rt.runs)
        for job_id in to_submit:
            submit_training.delay(job_id)
        return to_submit

    @app.task(name="moeplane.jobs.stop_training", shared=False)
    def stop_training(job_id: str) -> None:
        rt.runs.stop(job_id)


class Dispatch:
    """What the API asks of the workers. Sending is best effort: the reconcile loop converges
    anyway (a cancelled job's Ray run is stopped on its next pass)."""

    def __init__(self, app: Any):
        self.app = app

    def stop_training(self, job_id: str) -> None:
        try:
            self.app.send_task("moeplane.jobs.stop_training", args=[job_id])
        except OperationalError:
            log.warning("broker unavailable; the reconciler will stop %s", job_id)
