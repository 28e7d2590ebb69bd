"""``moeplane up``: start the platform's pieces on one machine, wait until healthy, stop cleanly.

Pieces the settings point elsewhere (PostgreSQL, Redis, a Ray cluster) are used, not started.
Started here: a local Ray head (when ``MOEPLANE_RAY_ADDRESS`` is unset), the Celery worker and
beat, and the API. Children are stopped in reverse order on Ctrl-C / SIGTERM.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from urllib.parse import urlparse

import httpx
import uvicorn

from moeplane.config import Settings

__all__ = ["Platform"]

LOCAL_RAY_GCS_PORT = 6380  # 6379 is Redis's


class Platform:
    def __init__(self, settings: Settings, *, host: str, port: int):
        self.settings = settings
        self.host = host
        self.port = port
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None
        self._children: list[tuple[str, subprocess.Popen]] = []

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def start(self, *, echo: Callable[[str], object] = print, timeout_s: float = 120) -> None:
        echo(f"moeplane home: {self.settings.home}")
        echo("migrating the database ...")
        generated = self._prepare_database(echo)
        if self.settings.ray_address is None:
            echo("starting a local Ray head (dashboard and Jobs API) ...")
            self._start_local_ray(timeout_s)
        self._spawn("worker", [sys.executable, "-m", "moeplane.cli", "worker"])
        self._spawn("beat", [sys.executable, "-m", "moeplane.cli", "beat"])
        self._start_api()
        self._wait_healthy(timeout_s)
        echo(f"API:      {self.url}  (OpenAPI docs at {self.url}/docs)")
        echo(f"metrics:  {self.url}/metrics")
        echo(f"Ray:      {self.settings.ray_dashboard_url}")
        configured = self.settings.admin_key
        if generated:
            echo(f"admin key (shown once, keep it safe): {generated}")
        elif configured:
            echo("admin key: the one in MOEPLANE_ADMIN_KEY")
        else:
            echo("admin key: the one printed on first start (`moeplane admin create-key --admin`)")
        echo("press Ctrl-C to stop")

    def _prepare_database(self, echo: Callable[[str], object]) -> str | None:
        from moeplane.modeling.publish import seed_base_models
        from moeplane.storage import Storage
        from moeplane.store.db import Database
        from moeplane.store.keys import ensure_admin_key
        from moeplane.store.migrate import upgrade

        upgrade(self.settings.database_url)
        db = Database(self.settings.database_url)
        configured = self.settings.admin_key
        try:
            with db.session() as session:
                generated = ensure_admin_key(
                    session, configured.get_secret_value() if configured else None
                )
            with db.session() as session:
                seed_base_models(
                    session,
                    Storage(self.settings.storage_uri),
                    tokenizer_cache=self.settings.home / "cache" / "tokenizer",
                    progress=echo,
                )
        finally:
            db.dispose()
        return generated

    def _spawn(
        self, name: str, argv: list[str], extra_env: dict[str, str] | None = None
    ) -> subprocess.Popen:
        log = (self.settings.home / "logs").joinpath(f"{name}.log")
        log.parent.mkdir(parents=True, exist_ok=True)
        proc = subprocess.Popen(
            argv,
            stdout=log.open("ab"),
            stderr=subprocess.STDOUT,
            env=os.environ.copy() | (extra_env or {}),
            start_new_session=True,
        )
        self._children.append((name, proc))
        return proc

    def _start_local_ray(self, timeout_s: float) -> None:
        ray = shutil.which("ray", path=os.path.dirname(sys.executable)) or "ray"
        dashboard = urlparse(self.settings.ray_dashboard_url)
        self._spawn(
            "ray",
            [
                ray,
                "start",
                "--head",
                "--block",
                "--disable-usage-stats",
                f"--port={LOCAL_RAY_GCS_PORT}",
                "--node-ip-address=127.0.0.1",
                f"--dashboard-host={dashboard.hostname}",
                f"--dashboard-port={dashboard.port}",
                f"--num-cpus={max(1, int(self.settings.training_cpus or os.cpu_count() or 1))}",
            ],
            # Ray runs workers at nice 15 by default; on a small shared machine its own
            # daemons then take the training workers' CPU (measured: +50 % step time on 2 cores)
            extra_env={"RAY_worker_niceness": "0"},
        )
        self._wait_for(
            f"{self.settings.ray_dashboard_url}/api/version",
            timeout_s,
            "Ray",
            headers=self.settings.ray_auth_headers(),
        )

    def _start_api(self) -> None:
        config = uvicorn.Config(
            "moeplane.api.app:create_app",
            factory=True,
            host=self.host,
            port=self.port,
            log_level=self.settings.log_level,
        )
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._server.run, name="api", daemon=True)
        self._thread.start()

    def _wait_for(
        self, url: str, timeout_s: float, what: str, headers: dict[str, str] | None = None
    ) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            for name, proc in self._children:
                if proc.poll() is not None:
                    raise RuntimeError(
                        f"{name} exited during start-up; see "
                        f"{self.settings.home / 'logs' / name}.log"
                    )
            try:
                if httpx.get(url, timeout=1, headers=headers).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.3)
        raise TimeoutError(f"{what} did not become healthy at {url} in {timeout_s:.0f} s")

    def _wait_healthy(self, timeout_s: float) -> None:
        if self._thread is not None and not self._thread.is_alive():
            raise RuntimeError(f"the API server exited during start-up (port {self.port}?)")
        self._wait_for(f"{self.url}/healthz", timeout_s, "the API")

    def wait(self) -> None:
        while self._thread is not None and self._thread.is_alive():
            self._thread.join(timeout=0.5)

    def stop(self) -> None:
        if self._server is not None:
            self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(timeout=15)
        for _, proc in reversed(self._children):
            if proc.poll() is None:
                proc.terminate()
        for _, proc in reversed(self._children):
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
