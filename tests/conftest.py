"""Shared fixtures: real databases (SQLite always, PostgreSQL when MOEPLANE_TEST_DATABASE_URL is
set), the API app over them, and a live uvicorn server for concurrency tests."""

from __future__ import annotations

import os
import shutil
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import uvicorn
from fastapi.testclient import TestClient
from sqlalchemy import text

from moeplane.api.app import create_app
from moeplane.config import Settings
from moeplane.limits import MemoryLimiter
from moeplane.store.db import Database
from moeplane.store.migrate import upgrade
from moeplane.store.models import Base

PG_URL = os.environ.get("MOEPLANE_TEST_DATABASE_URL")
REDIS_URL = os.environ.get("MOEPLANE_TEST_REDIS_URL")


@pytest.fixture(scope="session")
def sqlite_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A migrated SQLite file, copied for each test (migrating once is the slow part)."""
    path = tmp_path_factory.mktemp("template") / "moeplane.db"
    upgrade(f"sqlite:///{path}")
    return path


@pytest.fixture(scope="session")
def pg_migrated() -> str:
    if not PG_URL:
        pytest.skip("MOEPLANE_TEST_DATABASE_URL is not set (PostgreSQL tests run in CI)")
    db = Database(PG_URL)
    with db.engine.begin() as conn:
        Base.metadata.drop_all(conn)
        conn.execute(text("DROP TABLE IF EXISTS alembic_version"))
    db.dispose()
    upgrade(PG_URL)
    return PG_URL


def _truncate_all(db: Database) -> None:
    names = ", ".join(t.name for t in reversed(Base.metadata.sorted_tables))
    with db.engine.begin() as conn:
        conn.execute(text(f"TRUNCATE {names} RESTART IDENTITY CASCADE"))


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def database(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Database]:
    """A freshly migrated, empty database of each kind."""
    if request.param == "sqlite":
        path = tmp_path / "moeplane.db"
        shutil.copy(request.getfixturevalue("sqlite_template"), path)
        db = Database(f"sqlite:///{path}")
    else:
        db = Database(request.getfixturevalue("pg_migrated"))
        _truncate_all(db)
    yield db
    db.dispose()


@pytest.fixture
def settings(tmp_path: Path, database: Database) -> Settings:
    return Settings(
        home=tmp_path / "home",
        database_url=database.url,
        redis_url=None,
        storage_uri=(tmp_path / "storage").as_uri(),
    )


@pytest.fixture(scope="session")
def base_checkpoints(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The catalog's tiny models, generated once per session (tokenizer conversion is slow)."""
    from moeplane.modeling import BASE_MODELS, create_base_checkpoint

    root = tmp_path_factory.mktemp("base-models")
    cache = root / "tokenizer-cache"
    return {
        name: create_base_checkpoint(name, root / name, seed=0, tokenizer_cache_dir=cache)
        for name in BASE_MODELS
    }


@pytest.fixture
def catalog(database: Database, base_checkpoints: dict[str, Path]) -> dict[str, str]:
    """Register the session's base checkpoints in this test's database; model id -> version id.

    The artifacts stay where they are (file:// URIs), as a registry pointing at shared storage.
    """
    from moeplane.modeling import read_config, sha256_dir, summarize_config
    from moeplane.store.registry import ensure_model, register_version, summary_dict

    versions = {}
    with database.session() as session:
        for name, path in base_checkpoints.items():
            summary = summarize_config(read_config(path))
            model = ensure_model(
                session, model_id=name, tenant_id=None, family=summary.family, base_model_id=name
            )
            version = register_version(
                session,
                model,
                artifact_uri=path.as_uri(),
                sha256=sha256_dir(path),
                config=summary_dict(summary),
            )
            versions[name] = version.id
    return versions


@pytest.fixture
def app(settings: Settings, database: Database):
    return create_app(settings, db=database, limiter=MemoryLimiter())


@pytest.fixture
def client(app) -> Iterator[TestClient]:
    with TestClient(app) as test_client:
        yield test_client


@pytest.fixture
def admin_headers(database: Database) -> dict[str, str]:
    from tests.factories import make_admin_key

    return make_admin_key(database)


_HANDED_OUT: set[int] = set()


def _free_port() -> int:
    """A port free now and never handed out before in this session: the OS may give back a
    port it just gave us (CI once saw Ray refuse two of its components on one such port)."""
    while True:
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port = sock.getsockname()[1]
        if port not in _HANDED_OUT:
            _HANDED_OUT.add(port)
            return port


class LiveServer:
    """A real uvicorn server in a thread: real sockets, real concurrency."""

    def __init__(self, app) -> None:
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        config = uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="warning")
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self) -> LiveServer:
        self.thread.start()
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"{self.url}/healthz", timeout=1).status_code == 200:
                    return self
            except httpx.HTTPError:
                time.sleep(0.05)
        raise TimeoutError("live server did not start")

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)


@pytest.fixture
def live_server_factory():
    servers: list[LiveServer] = []

    def start(app) -> LiveServer:
        server = LiveServer(app).__enter__()
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.__exit__()


@pytest.fixture(scope="session")
def ray_head(tmp_path_factory: pytest.TempPathFactory):
    """One local Ray head per test session (dashboard + Jobs API), stopped at the end.

    Started as ``ray start --head --block`` in a child process so that stopping it stops only
    this cluster (``ray stop`` would kill every Ray on the machine).
    """
    import subprocess
    import sys

    ray = str(Path(sys.executable).with_name("ray"))
    gcs_port, dashboard_port = _free_port(), _free_port()
    log = (tmp_path_factory.mktemp("ray") / "ray.log").open("wb")
    proc = subprocess.Popen(
        [
            ray,
            "start",
            "--head",
            "--block",
            "--disable-usage-stats",
            f"--port={gcs_port}",
            "--node-ip-address=127.0.0.1",
            "--dashboard-host=127.0.0.1",
            f"--dashboard-port={dashboard_port}",
            "--num-cpus=2",
            "--include-dashboard=true",
            # own agent ports: another Ray on this machine (e.g. `moeplane up`) holds the defaults
            f"--dashboard-agent-listen-port={_free_port()}",
            f"--dashboard-agent-grpc-port={_free_port()}",
            f"--ray-client-server-port={_free_port()}",
            f"--metrics-export-port={_free_port()}",
            f"--runtime-env-agent-port={_free_port()}",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
        env=os.environ | {"RAY_worker_niceness": "0"},  # as `moeplane up` starts it
    )
    dashboard = f"http://127.0.0.1:{dashboard_port}"
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        assert proc.poll() is None, f"ray start exited; see {log.name}"
        try:
            headers = Settings().ray_auth_headers()  # Ray turns tokens on once a token exists
            if httpx.get(f"{dashboard}/api/version", timeout=1, headers=headers).status_code == 200:
                break
        except httpx.HTTPError:
            time.sleep(0.5)
    else:
        raise TimeoutError("the local Ray head did not start")
    yield {"address": f"127.0.0.1:{gcs_port}", "dashboard": dashboard}
    proc.terminate()
    try:
        proc.wait(timeout=60)
    except subprocess.TimeoutExpired:
        proc.kill()


def clear_serve_apps(dashboard: str) -> None:
    """Remove every Serve application from the session's Ray head, keeping Serve itself up.

    A DELETE of /api/serve/applications/ would shut Serve down (kill its controller), leaving
    every Ray driver in this process with a cached client of a dead controller.
    """
    response = httpx.put(
        f"{dashboard}/api/serve/applications/",
        json={"proxy_location": "Disabled", "applications": []},
        headers=Settings().ray_auth_headers(),
        timeout=60,
    )
    response.raise_for_status()
