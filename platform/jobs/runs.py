"""Fine-tuning runs on Ray: submit (idempotent by submission id), stop, and reconcile the
database's view with Ray's. The decision is a pure function; the loop only applies it."""

from __future__ import annotations

import enum
import logging
import shlex
import sys
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from moeplane.config import Settings
from moeplane.jobs.scheduler import Resources
from moeplane.store.jobs import add_event, transition
from moeplane.store.models import FineTuneJob, utcnow

__all__ = ["Action", "RayRuns", "decide", "reconcile_runs"]

log = logging.getLogger(__name__)


class Action(enum.Enum):
    NOTHING = "nothing"
    SUBMIT = "submit"
    STOP = "stop"
    FAIL = "fail"


@dataclass(frozen=True)
class Decision:
    action: Action
    reason: str = ""


def decide(
    db_status: str, ray_status: str | None, seconds_running: float, submit_grace_s: float
) -> Decision:
    """What to do about one job, given its status here and its Ray job's (None = no Ray job);
    a running job with no Ray job after `submit_grace_s` is submitted again."""
    if db_status == "cancelled":
        if ray_status in ("PENDING", "RUNNING"):
            return Decision(Action.STOP, "cancelled")
        return Decision(Action.NOTHING)
    if db_status != "running":
        return Decision(Action.NOTHING)
    if ray_status is None:
        if seconds_running > submit_grace_s:
            return Decision(Action.SUBMIT, "no Ray job found; submitting again")
        return Decision(Action.NOTHING)
    if ray_status == "FAILED":
        return Decision(Action.FAIL, "the training run failed on Ray")
    if ray_status == "STOPPED":
        return Decision(Action.FAIL, "the Ray job was stopped outside moeplane")
    if ray_status == "SUCCEEDED":
        return Decision(Action.FAIL, "the training driver exited without registering a model")
    return Decision(Action.NOTHING)


class RayRuns:
    """The Ray Jobs API, as the platform uses it (submission id = job id)."""

    def __init__(self, settings: Settings):
        self.settings = settings
        self._client: Any = None

    @property
    def client(self) -> Any:
        if self._client is None:
            from ray.job_submission import JobSubmissionClient

            self._client = JobSubmissionClient(
                self.settings.ray_dashboard_url, headers=self.settings.ray_auth_headers()
            )
        return self._client

    def submit(self, job_id: str) -> bool:
        """Submit the driver; False when a Ray job with this id exists already (a retry)."""
        settings = self.settings
        env = {
            "MOEPLANE_HOME": str(settings.home),
            "MOEPLANE_DATABASE_URL": settings.database_url,
            "MOEPLANE_STORAGE_URI": settings.storage_uri,
            "HF_HUB_OFFLINE": "1",
            "TOKENIZERS_PARALLELISM": "false",
        }
        python = shlex.quote(sys.executable)
        try:
            self.client.submit_job(
                entrypoint=f"{python} -m moeplane.jobs.driver {shlex.quote(job_id)}",
                submission_id=job_id,
                runtime_env={"env_vars": env},
                entrypoint_num_cpus=0,
            )
        except RuntimeError as exc:
            if "already exists" in str(exc):
                return False
            raise
        return True

    def cluster_resources(self) -> Resources:
        """The CPUs and GPUs of the cluster's live nodes, from Ray's state API (so a node that
        joins or leaves changes what the scheduler hands out)."""
        import httpx

        response = httpx.get(
            f"{self.settings.ray_dashboard_url.rstrip('/')}/api/v0/nodes",
            params={"detail": "1", "limit": "10000"},
            headers=self.settings.ray_auth_headers(),
            timeout=10,
        )
        response.raise_for_status()
        nodes = response.json()["data"]["result"]["result"]
        alive = [n.get("resources_total") or {} for n in nodes if n.get("state") == "ALIVE"]
        return Resources(
            cpus=sum(float(r.get("CPU", 0.0)) for r in alive),
            gpus=sum(float(r.get("GPU", 0.0)) for r in alive),
        )

    def status(self, job_id: str) -> str | None:
        try:
            return str(self.client.get_job_status(job_id).value)
        except RuntimeError as exc:
            if "does not exist" in str(exc) or "404" in str(exc):
                return None
            raise

    def stop(self, job_id: str) -> None:
        try:
            self.client.stop_job(job_id)
        except RuntimeError as exc:
            if "does not exist" not in str(exc):
                raise

    def logs_tail(self, job_id: str, chars: int = 1500) -> str:
        try:
            return self.client.get_job_logs(job_id)[-chars:]
        except RuntimeError:
            return ""


def reconcile_runs(db: Session, runs: RayRuns) -> list[str]:
    """Apply :func:`decide` to running jobs and recently cancelled ones; return ids to submit."""
    now = utcnow()
    jobs = db.scalars(
        select(FineTuneJob).where(
            (FineTuneJob.status == "running")
            | (
                (FineTuneJob.status == "cancelled")
                & (FineTuneJob.finished_at >= now - timedelta(hours=1))
                & FineTuneJob.started_at.is_not(None)
            )
        )
    )
    to_submit = []
    for job in list(jobs):
        started = job.started_at or job.created_at
        ray_status = runs.status(job.id)
        if ray_status is not None and job.status == "running" and job.submission_id is None:
            job.submission_id = job.id  # its submit task died after Ray had the job
        decision = decide(
            job.status,
            ray_status,
            (now - started).total_seconds(),
            runs.settings.submit_grace_s,
        )
        if decision.action is Action.SUBMIT:
            to_submit.append(job.id)
        elif decision.action is Action.STOP:
            runs.stop(job.id)
        elif decision.action is Action.FAIL:
            tail = runs.logs_tail(job.id)
            message = decision.reason + (
                f": {tail.strip().splitlines()[-1]}" if tail.strip() else ""
            )
            if transition(
                db,
                job.id,
                ("running",),
                "failed",
                error={"code": "training_failed", "message": message[:1000], "param": None},
            ):
                add_event(db, job, message[:2000], level="error")
    return to_submit
