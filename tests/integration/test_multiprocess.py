"""The production shape across processes: two `moeplane api` processes and one `moeplane worker`
against one PostgreSQL and one Redis. What holds per process must hold for all of them together:
a tenant's rate limits, idempotent creates, and admission by racing scheduler ticks.

Needs MOEPLANE_TEST_DATABASE_URL and MOEPLANE_TEST_REDIS_URL (`.ci/run` sets them).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from sqlalchemy import func, select, text

from moeplane.config import Settings
from moeplane.store.db import Database
from moeplane.store.models import Base, FineTuneJob, JobEvent, Tenant
from tests.factories import make_admin_key, make_tenant

PG_URL = os.environ.get("MOEPLANE_TEST_DATABASE_URL")
REDIS_URL = os.environ.get("MOEPLANE_TEST_REDIS_URL")

pytestmark = [
    pytest.mark.postgres,
    pytest.mark.redis,
    pytest.mark.slow,
    pytest.mark.skipif(
        not (PG_URL and REDIS_URL),
        reason="MOEPLANE_TEST_DATABASE_URL and MOEPLANE_TEST_REDIS_URL are not both set",
    ),
    pytest.mark.timeout(180),
]

ADMITTED = "Admitted by the scheduler"

# One scheduler tick in its own process, started on a word from the test so that ticks race.
TICK = """
import json, sys
from moeplane.config import Settings
from moeplane.jobs.admission import admit_jobs
from moeplane.store.db import Database
settings = Settings()
db = Database(settings.database_url)
with db.engine.connect():
    pass
print("ready", flush=True)
sys.stdin.readline()
with db.session() as session:
    admitted = admit_jobs(session, settings)
print(json.dumps(admitted), flush=True)
db.dispose()
"""

# Reserve tokens the way the API does (`<tenant>:tpm` against the tenant's quota), in a process.
TAKE_TOKENS = """
import sys
from moeplane.limits import make_limiter
key, amount, per_minute = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
limiter = make_limiter(sys.argv[4])
limiter.take("warm-up:" + key, 1, 10)
print("ready", flush=True)
sys.stdin.readline()
print(sum(limiter.take(key, amount, per_minute).allowed for _ in range(5)), flush=True)
"""


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass
class Stack:
    db: Database
    api_urls: list[str]
    env: dict[str, str]
    worker_log: Path
    settings: Settings


def _spawn(argv: list[str], env: dict[str, str], log: Path, **kw) -> subprocess.Popen:
    return subprocess.Popen(
        argv,
        env=env,
        stdout=kw.pop("stdout", log.open("ab")),
        stderr=subprocess.STDOUT,
        start_new_session=True,  # the worker's pool children go with it
        **kw,
    )


def _stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)


def _wait_until(check, timeout_s: float, what: str, procs=()) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        for proc in procs:
            assert proc.poll() is None, f"{proc.args} exited with {proc.returncode}"
        if check():
            return
        time.sleep(0.2)
    raise TimeoutError(f"{what} within {timeout_s:.0f} s")


def _healthy(url: str) -> bool:
    try:
        return httpx.get(f"{url}/readyz", timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    from moeplane.store.migrate import upgrade

    tmp = tmp_path_factory.mktemp("multiprocess")
    upgrade(PG_URL)
    db = Database(PG_URL)
    with db.engine.begin() as conn:
        names = ", ".join(t.name for t in reversed(Base.metadata.sorted_tables))
        conn.execute(text(f"TRUNCATE {names} RESTART IDENTITY CASCADE"))
    env = {k: v for k, v in os.environ.items() if not k.startswith("MOEPLANE_")} | {
        "MOEPLANE_HOME": str(tmp / "home"),
        "MOEPLANE_DATABASE_URL": PG_URL,
        "MOEPLANE_REDIS_URL": REDIS_URL,
        "MOEPLANE_STORAGE_URI": (tmp / "storage").as_uri(),
        # no Ray here: submissions fail and retry in the background, which is not under test
        "MOEPLANE_RAY_DASHBOARD_URL": f"http://127.0.0.1:{_free_port()}",
        "MOEPLANE_TRAINING_CPUS": "100",
        "MOEPLANE_LOG_LEVEL": "warning",
    }
    settings = Settings(
        **{
            k.removeprefix("MOEPLANE_").lower(): v
            for k, v in env.items()
            if k.startswith("MOEPLANE_")
        }
    )
    procs: list[subprocess.Popen] = []
    try:
        ports = [_free_port(), _free_port()]
        for port in ports:
            argv = [sys.executable, "-m", "moeplane.cli", "api", "--host", "127.0.0.1"]
            procs.append(_spawn([*argv, "--port", str(port)], env, tmp / f"api-{port}.log"))
        worker_log = tmp / "worker.log"
        procs.append(
            _spawn(
                [sys.executable, "-m", "moeplane.cli", "worker", "--concurrency", "2"],
                env,
                worker_log,
            )
        )
        urls = [f"http://127.0.0.1:{port}" for port in ports]
        _wait_until(lambda: all(_healthy(u) for u in urls), 90, "both API processes ready", procs)
        _wait_until(
            lambda: " ready." in worker_log.read_text(errors="replace"),
            90,
            "the Celery worker ready",
            procs,
        )
        yield Stack(db=db, api_urls=urls, env=env, worker_log=worker_log, settings=settings)
    finally:
        for proc in procs:
            _stop(proc)
        db.dispose()


def _race(argvs: list[list[str]], env: dict[str, str], on_go=lambda: None) -> list[str]:
    """Start processes, wait until each says ready, then say go to all at once; their answers."""
    procs = [
        subprocess.Popen(
            argv, env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, bufsize=1
        )
        for argv in argvs
    ]
    try:
        for proc in procs:
            assert proc.stdout.readline().strip() == "ready"
        on_go()
        for proc in procs:
            proc.stdin.write("go\n")
            proc.stdin.flush()
        answers = [proc.stdout.readline().strip() for proc in procs]
        for proc in procs:
            assert proc.wait(timeout=30) == 0
        return answers
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()


def test_rpm_limit_holds_across_both_api_processes(stack: Stack):
    tenant = make_tenant(stack.db, name=f"mp-rpm-{uuid.uuid4().hex[:8]}", rpm=10)
    urls = stack.api_urls

    def call(i: int) -> tuple[int, int]:
        url = urls[i % 2]
        return i % 2, httpx.get(f"{url}/v1/me", headers=tenant.headers, timeout=60).status_code

    started = time.monotonic()
    with ThreadPoolExecutor(max_workers=16) as pool:
        results = list(pool.map(call, range(40)))
    elapsed = time.monotonic() - started
    codes = [code for _, code in results]
    assert set(codes) <= {200, 429}
    admitted = codes.count(200)
    # per process, each would admit 10 (20 in all); together they share one bucket of 10,
    # refilled at one request per 6 s while the burst lasts
    assert 10 <= admitted <= 10 + int(elapsed / 6), (admitted, elapsed)
    assert {server for server, code in results if code == 429} == {0, 1}


def test_tpm_reservations_from_two_processes_share_one_bucket(stack: Stack):
    tenant = make_tenant(stack.db, name=f"mp-tpm-{uuid.uuid4().hex[:8]}", tpm=1000)
    argv = [sys.executable, "-c", TAKE_TOKENS, f"{tenant.id}:tpm", "300", "1000", REDIS_URL]
    answers = _race([argv, argv], stack.env)
    # 10 reservations of 300 against 1000 tokens a minute: 3 fit, whichever process asks
    assert sum(int(a) for a in answers) == 3


def test_idempotent_create_sent_to_both_processes_returns_one_object(stack: Stack):
    headers = make_admin_key(stack.db) | {"Idempotency-Key": f"mp-{uuid.uuid4().hex}"}
    name = f"mp-idem-{uuid.uuid4().hex[:8]}"

    def post(i: int) -> httpx.Response:
        return httpx.post(
            f"{stack.api_urls[i % 2]}/v1/admin/tenants",
            json={"name": name},
            headers=headers,
            timeout=60,
        )

    with ThreadPoolExecutor(max_workers=8) as pool:
        responses = list(pool.map(post, range(8)))
    assert {r.status_code for r in responses} == {201}, [r.text for r in responses]
    assert len({r.json()["id"] for r in responses}) == 1
    assert {r.headers.get("Idempotent-Replayed") for r in responses} >= {"true"}
    with stack.db.session() as session:
        assert session.scalar(select(func.count()).where(Tenant.name == name)) == 1


def _queued_jobs(db: Database, n_tenants: int, per_tenant: int) -> list[str]:
    from moeplane.store.ids import new_id
    from moeplane.store.models import utcnow

    ids = []
    for _ in range(n_tenants):
        tenant = make_tenant(db, name=f"mp-sched-{uuid.uuid4().hex[:8]}", max_concurrent_jobs=50)
        with db.session() as session:
            for _ in range(per_tenant):
                job = FineTuneJob(
                    id=new_id("ftjob"),
                    tenant_id=tenant.id,
                    status="queued",
                    model="qwen3-moe-tiny",
                    base_version_id="mv-none",
                    training_file="file-none",
                    queued_at=utcnow(),
                )
                session.add(job)
                ids.append(job.id)
    return ids


def test_racing_scheduler_ticks_admit_each_job_exactly_once(stack: Stack):
    from moeplane.jobs.celery_app import create_celery

    jobs = _queued_jobs(stack.db, n_tenants=3, per_tenant=4)
    celery = create_celery(stack.settings)
    sent: list[str] = []

    def beat_ticks() -> None:  # what two beat processes would enqueue, for the worker
        sent.extend(celery.send_task("moeplane.jobs.schedule_tick").id for _ in range(2))

    argv = [sys.executable, "-c", TICK]
    answers = _race([argv, argv], stack.env, on_go=beat_ticks)
    direct = [job for answer in answers for job in json.loads(answer)]

    def ticks_done() -> bool:
        log = stack.worker_log.read_text(errors="replace")
        return all(f"[{task_id}] succeeded" in log for task_id in sent)

    _wait_until(ticks_done, 60, "the worker ran both scheduler ticks")
    with stack.db.session() as session:
        statuses = dict(
            session.execute(
                select(FineTuneJob.id, FineTuneJob.status).where(FineTuneJob.id.in_(jobs))
            ).all()
        )
        admissions = dict(
            session.execute(
                select(JobEvent.job_id, func.count())
                .where(JobEvent.job_id.in_(jobs), JobEvent.message.startswith(ADMITTED))
                .group_by(JobEvent.job_id)
            ).all()
        )
    assert set(statuses.values()) == {"running"}, statuses
    assert admissions == dict.fromkeys(jobs, 1), "a job was admitted twice (or never)"
    assert len(direct) == len(set(direct)) <= len(jobs)
