"""``moeplane up``: start the platform's pieces on one machine, wait until healthy, stop cleanly.

Pieces the settings point elsewhere (PostgreSQL, Redis, a Ray cluster) are used, not started.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

import httpx
import uvicorn

from moeplane.config import Settings

__all__ = ["Platform"]


class Platform:
    def __init__(self, settings: Settings, *, host: str, port: int):
        self.settings = settings
        self.host = host
        self.port = port
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def start(self, *, echo: Callable[[str], object] = print, timeout_s: float = 60) -> None:
        from moeplane.store.db import Database
        from moeplane.store.keys import ensure_admin_key
        from moeplane.store.migrate import upgrade

        echo(f"moeplane home: {self.settings.home}")
        echo("migrating the database ...")
        upgrade(self.settings.database_url)
        db = Database(self.settings.database_url)
        configured = self.settings.admin_key
        with db.session() as session:
            generated = ensure_admin_key(
                session, configured.get_secret_value() if configured else None
            )
        db.dispose()
        self._start_api()
        self._wait_healthy(timeout_s)
        echo(f"API:      {self.url}  (OpenAPI docs at {self.url}/docs)")
        echo(f"metrics:  {self.url}/metrics")
        if generated:
            echo(f"admin key (shown once, keep it safe): {generated}")
        elif configured:
            echo("admin key: the one in MOEPLANE_ADMIN_KEY")
        else:
            echo("admin key: the one printed on first start (`moeplane admin create-key --admin`)")
        echo("press Ctrl-C to stop")

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

    def _wait_healthy(self, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self._thread is not None and not self._thread.is_alive():
                raise RuntimeError(f"the API server exited during start-up (port {self.port}?)")
            try:
                if httpx.get(f"{self.url}/healthz", timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        raise TimeoutError(f"the API did not become healthy at {self.url} in {timeout_s:.0f} s")

    def wait(self) -> None:
        while self._thread is not None and self._thread.is_alive():
            self._thread.join(timeout=0.5)

    def stop(self) -> None:
        if self._server is not None:
            self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(timeout=15)
