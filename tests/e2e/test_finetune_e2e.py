"""Fine-tuning end to end on the real pieces: the API (in process), a Celery worker and beat
(subprocesses; Redis broker when MOEPLANE_TEST_REDIS_URL is set, else the SQLite broker), a local
Ray head, and PostgreSQL when MOEPLANE_TEST_DATABASE_URL is set (else SQLite).

Three training runs of qwen3-moe-tiny (~1 min each on 2 cores): a clean run with lineage and a
generation check, a run whose training worker is killed mid-way, and a cancelled run.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest
import torch
from fastapi.testclient import TestClient

from moeplane.api.app import create_app
from moeplane.config import Settings
from moeplane.jobs.finetune import support_chat_dataset, write_jsonl
from moeplane.jobs.runs import RayRuns
from moeplane.limits import MemoryLimiter
from moeplane.modeling import load_model
from moeplane.store.db import Database
from moeplane.store.migrate import upgrade
from moeplane.store.models import FineTuneJob
from tests.conftest import PG_URL, REDIS_URL, _truncate_all
from tests.factories import make_tenant

pytestmark = [pytest.mark.ray, pytest.mark.slow]


@pytest.fixture(scope="module")
def platform_env(tmp_path_factory, ray_head, base_checkpoints, request):
    home = tmp_path_factory.mktemp("e2e")
    if PG_URL:
        url = request.getfixturevalue("pg_migrated")
        _truncate_all(Database(url))
    else:
        url = f"sqlite:///{home / 'moeplane.db'}"
        upgrade(url)
    settings = Settings(
        home=home / "home",
        database_url=url,
        redis_url=REDIS_URL,
        storage_uri=(home / "storage").as_uri(),
        ray_dashboard_url=ray_head["dashboard"],
        schedule_interval_s=1.0,
        reconcile_interval_s=2.0,
    )
    env = (
        {k: v for k, v in os.environ.items() if not k.startswith("MOEPLANE_")}
        | {
            "MOEPLANE_HOME": str(settings.home),
            "MOEPLANE_DATABASE_URL": url,
            "MOEPLANE_STORAGE_URI": settings.storage_uri,
            "MOEPLANE_RAY_DASHBOARD_URL": ray_head["dashboard"],
            # no MOEPLANE_TRAINING_CPUS: the scheduler asks Ray (the session head has 2 CPUs)
            "MOEPLANE_SCHEDULE_INTERVAL_S": "1",
            "MOEPLANE_RECONCILE_INTERVAL_S": "2",
            "MOEPLANE_SUBMIT_GRACE_S": "5",
            "HF_HUB_OFFLINE": "1",
        }
        | ({"MOEPLANE_REDIS_URL": REDIS_URL} if REDIS_URL else {})
    )
    db = Database(url)
    _register_catalog(db, base_checkpoints)
    logs = home / "logs"
    logs.mkdir()
    children: dict[str, subprocess.Popen] = {}

    def start(name: str) -> subprocess.Popen:
        children[name] = subprocess.Popen(
            [sys.executable, "-m", "moeplane.cli", name],
            env=env,
            stdout=(logs / f"{name}.log").open("ab"),
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group: a test can kill the whole worker
        )
        return children[name]

    start("worker")
    start("beat")
    app = create_app(settings, db=db, limiter=MemoryLimiter())
    with TestClient(app) as client:
        yield {
            "client": client,
            "db": db,
            "settings": settings,
            "logs": logs,
            "start": start,
            "children": children,
        }
    for child in children.values():
        child.send_signal(signal.SIGTERM)
    for child in children.values():
        try:
            child.wait(timeout=30)
        except subprocess.TimeoutExpired:
            child.kill()
    db.dispose()


def _register_catalog(db: Database, checkpoints: dict[str, Path]) -> None:
    from moeplane.modeling import read_config, sha256_dir, summarize_config
    from moeplane.store.registry import ensure_model, register_version, summary_dict

    with db.session() as session:
        for name, path in checkpoints.items():
            summary = summarize_config(read_config(path))
            model = ensure_model(
                session, model_id=name, tenant_id=None, family=summary.family, base_model_id=name
            )
            register_version(
                session,
                model,
                artifact_uri=path.as_uri(),
                sha256=sha256_dir(path),
                config=summary_dict(summary),
            )


def _start_job(env, tenant, **extra) -> str:
    client = env["client"]
    data = write_jsonl(support_chat_dataset(64, seed=1), env["logs"] / "train.jsonl")
    upload = client.post(
        "/v1/files",
        headers=tenant.headers,
        data={"purpose": "fine-tune"},
        files={"file": ("support.jsonl", data.read_bytes())},
    )
    assert upload.status_code == 201, upload.text
    body = {
        "model": "qwen3-moe-tiny",
        "training_file": upload.json()["id"],
        "method": "full",
        "seed": 3,
        "hyperparameters": {"n_epochs": 1, "batch_size": 4, "learning_rate_multiplier": 10},
    } | extra
    created = client.post("/v1/fine_tuning/jobs", headers=tenant.headers, json=body)
    assert created.status_code == 201, created.text
    return created.json()["id"]


def _events(env, tenant, job_id) -> list[dict]:
    page = env["client"].get(
        f"/v1/fine_tuning/jobs/{job_id}/events", headers=tenant.headers, params={"limit": 100}
    )
    return list(reversed(page.json()["data"]))  # oldest first


def _wait(env, tenant, job_id, until, timeout=400) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job = env["client"].get(f"/v1/fine_tuning/jobs/{job_id}", headers=tenant.headers).json()
        if until(job, _events(env, tenant, job_id)):
            return job
        if job["status"] in ("failed", "cancelled", "succeeded") and not until(job, []):
            break
        time.sleep(1)
    logs = "\n".join(p.read_text()[-3000:] for p in env["logs"].glob("*.log"))
    raise AssertionError(
        f"job {job_id} did not get there: {job}\n{_events(env, tenant, job_id)}\n{logs}"
    )


def _steps(events) -> list[dict]:
    """Metric reports in step order (checkpoint steps are reported by the train controller after
    the upload, so their events can land after the next step's)."""
    return sorted((e["data"] for e in events if "train_loss" in e["data"]), key=lambda d: d["step"])


def _checkpoint_steps(env, tenant, job_id) -> list[int]:
    page = env["client"].get(f"/v1/fine_tuning/jobs/{job_id}/checkpoints", headers=tenant.headers)
    return [c["step_number"] for c in page.json()["data"]]


def test_fine_tune_trains_registers_a_version_with_lineage_and_generates(platform_env):
    env, client = platform_env, platform_env["client"]
    tenant = make_tenant(env["db"], name="acme")
    job_id = _start_job(env, tenant, suffix="support")
    job = _wait(env, tenant, job_id, lambda j, _: j["status"] == "succeeded")

    steps = _steps(_events(env, tenant, job_id))
    assert [s["step"] for s in steps] == list(range(1, 17))
    assert steps[-1]["train_loss"] < 0.8 * steps[0]["train_loss"], steps
    assert all(s["tokens_per_s"] > 0 for s in steps)
    checkpoints = client.get(
        f"/v1/fine_tuning/jobs/{job_id}/checkpoints", headers=tenant.headers
    ).json()["data"]
    assert sorted(c["step_number"] for c in checkpoints) == [10, 16]

    assert job["fine_tuned_model"].startswith("ft:qwen3-moe-tiny:acme:support:")
    assert job["trained_tokens"] > 0 and job["finished_at"] is not None
    models = {m["id"] for m in client.get("/v1/models", headers=tenant.headers).json()["data"]}
    assert job["fine_tuned_model"] in models
    versions = client.get(
        f"/v1/models/{job['fine_tuned_model']}/versions", headers=tenant.headers
    ).json()["data"]
    assert len(versions) == 1
    version = versions[0]
    base = client.get("/v1/models/qwen3-moe-tiny/versions", headers=tenant.headers).json()
    training_file = client.get(f"/v1/files/{job['training_file']}", headers=tenant.headers).json()
    assert version["parent_version"] == base["data"][0]["id"]
    assert version["fine_tuning_job"] == job_id
    assert version["dataset_sha256"] == training_file["sha256"]
    assert version["seed"] == 3 and version["hyperparameters"]["method"] == "full"
    assert version["config"]["num_experts"] == 8

    model = load_model(version["artifact_uri"].removeprefix("file://"))
    prompt = torch.tensor([[151644, 872, 198]])  # <|im_start|>user\n
    out = model.generate(prompt, max_new_tokens=5, do_sample=False)
    assert out.shape == (1, 8)
    usage = client.get("/v1/usage", headers=tenant.headers).json()["totals"]
    assert usage["training_tokens"] == job["trained_tokens"]


def test_killed_training_worker_resumes_from_the_last_checkpoint(platform_env):
    env = platform_env
    tenant = make_tenant(env["db"], name="resilient")
    # 32 steps, checkpoints every 10: the kill lands mid-run whatever the machine's pace
    job_id = _start_job(
        env,
        tenant,
        hyperparameters={"n_epochs": 2, "batch_size": 4, "learning_rate_multiplier": 10},
    )
    # Kill only once Ray Train has registered a checkpoint: a step's metrics can be visible
    # before the controller has persisted the checkpoint reported just before it.
    _wait(env, tenant, job_id, lambda j, ev: bool(_checkpoint_steps(env, tenant, job_id)))
    workers = [
        p
        for p in psutil.process_iter(["cmdline"])
        if "RayTrainWorker" in " ".join(p.info["cmdline"] or [])
    ]
    assert workers, "no Ray Train worker process found"
    for proc in workers:
        proc.send_signal(signal.SIGKILL)
    job = _wait(env, tenant, job_id, lambda j, _: j["status"] == "succeeded")
    steps = _steps(_events(env, tenant, job_id))
    resumed = [s for s in steps if s["resumed_from_step"] > 0]
    assert resumed, steps
    start = resumed[0]["resumed_from_step"]
    assert start >= 10
    assert start % 10 == 0 and resumed[0]["step"] == start + 1, steps  # from the checkpoint
    assert max(s["step"] for s in steps) == 32
    assert job["fine_tuned_model"] is not None


def test_cancel_while_running_stops_the_ray_job(platform_env):
    env, client = platform_env, platform_env["client"]
    tenant = make_tenant(env["db"], name="fickle")
    job_id = _start_job(env, tenant, hyperparameters={"n_epochs": 3, "batch_size": 4})
    _wait(env, tenant, job_id, lambda j, ev: bool(_steps(ev)))
    cancelled = client.post(f"/v1/fine_tuning/jobs/{job_id}/cancel", headers=tenant.headers)
    assert cancelled.status_code == 200 and cancelled.json()["status"] == "cancelled"
    runs = RayRuns(env["settings"])
    deadline = time.monotonic() + 60
    while runs.status(job_id) not in ("STOPPED", "FAILED") and time.monotonic() < deadline:
        time.sleep(1)
    assert runs.status(job_id) == "STOPPED"
    time.sleep(3)
    job = client.get(f"/v1/fine_tuning/jobs/{job_id}", headers=tenant.headers).json()
    assert job["status"] == "cancelled" and job["fine_tuned_model"] is None


def test_celery_worker_killed_while_submitting_leaves_exactly_one_ray_job(platform_env):
    """SIGKILL the whole Celery worker the moment Ray has the job (its submit task has sent it
    but may not have recorded or acknowledged it), start a new worker: the job trains, and Ray
    holds exactly one job for its id, however the task was redelivered or resubmitted."""
    env, client = platform_env, platform_env["client"]
    tenant = make_tenant(env["db"], name="crashy")
    runs = RayRuns(env["settings"])
    job_id = _start_job(env, tenant, hyperparameters={"n_epochs": 3, "batch_size": 4})
    deadline = time.monotonic() + 120
    while runs.status(job_id) is None and time.monotonic() < deadline:
        time.sleep(0.01)
    assert runs.status(job_id) is not None, "the job never reached Ray"
    worker = env["children"]["worker"]
    os.killpg(worker.pid, signal.SIGKILL)  # the main process and its pool children
    worker.wait(timeout=30)
    recorded = any("Submitted to Ray" in e["message"] for e in _events(env, tenant, job_id))
    env["start"]("worker")
    # past the submit grace (5 s) and several reconcile passes (2 s): a lost task is resubmitted
    job = _wait(env, tenant, job_id, lambda j, ev: bool(_steps(ev)))
    time.sleep(8)
    assert [j.submission_id for j in runs.client.list_jobs()].count(job_id) == 1
    with env["db"].session() as session:
        assert session.get(FineTuneJob, job_id).submission_id == job_id, (
            f"the submission is recorded (killed {'after' if recorded else 'before'} recording)"
        )
    assert job["status"] == "running"
    cancelled = client.post(f"/v1/fine_tuning/jobs/{job_id}/cancel", headers=tenant.headers)
    assert cancelled.status_code == 200
    deadline = time.monotonic() + 60  # leave the cluster's CPUs free for the tests after this
    while runs.status(job_id) not in ("STOPPED", "FAILED") and time.monotonic() < deadline:
        time.sleep(1)


def test_resubmission_is_harmless(platform_env):
    """A redelivered submit task (e.g. its Celery worker died mid-task) finds the Ray job that
    exists already: one Ray job per fine-tuning job, whatever the retries."""
    runs = RayRuns(platform_env["settings"])
    client = runs.client
    submitted = [j.submission_id for j in client.list_jobs()]
    assert submitted, "earlier tests submitted jobs"
    job_id = submitted[0]
    assert runs.submit(job_id) is False
    assert [j.submission_id for j in client.list_jobs()].count(job_id) == 1
