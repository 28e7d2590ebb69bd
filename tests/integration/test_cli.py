"""The moeplane command, run as a user runs it (a subprocess on a fresh home)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import httpx

from moeplane.config import Settings
from tests.conftest import _free_port


def _run(args, env, **kw):
    return subprocess.run(
        [sys.executable, "-m", "moeplane.cli", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        **kw,
    )


def _env(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("MOEPLANE_")}
    env["MOEPLANE_HOME"] = str(tmp_path / "home")
    return env


def test_every_command_has_help(tmp_path):
    env = _env(tmp_path)
    for args in (
        ["--help"],
        ["up", "--help"],
        ["db", "upgrade", "--help"],
        ["admin", "create-tenant", "--help"],
        ["admin", "create-key", "--help"],
        ["version", "--help"],
    ):
        result = _run(args, env)
        assert result.returncode == 0 and "Usage" in result.stdout, args


def test_db_upgrade_create_tenant_and_key(tmp_path):
    env = _env(tmp_path)
    assert _run(["db", "upgrade"], env).returncode == 0
    created = _run(["admin", "create-tenant", "acme"], env)
    assert created.returncode == 0 and created.stdout.strip().startswith("ten-")
    dup = _run(["admin", "create-tenant", "acme"], env)
    assert dup.returncode == 1 and "already exists" in dup.stderr
    key = _run(["admin", "create-key", "acme"], env)
    assert key.returncode == 0 and key.stdout.strip().startswith("mp-")
    missing = _run(["admin", "create-key", "nobody"], env)
    assert missing.returncode == 1 and "no tenant" in missing.stderr
    assert "moeplane 0.1.0" in _run(["version"], env).stdout


def test_up_serves_prints_the_admin_key_once_and_stops_cleanly(tmp_path):
    """The embedded default end to end: migrations, seeded catalog, local Ray, Celery worker
    and beat, the API; Ctrl-C and SIGTERM stop every child."""
    env = _env(tmp_path)
    port = _free_port()
    env["MOEPLANE_RAY_DASHBOARD_URL"] = f"http://127.0.0.1:{_free_port()}"

    def start():
        return subprocess.Popen(
            [sys.executable, "-m", "moeplane.cli", "up", "--port", str(port)],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )

    def read_until_ready(proc) -> str:
        lines = []
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:
            line = proc.stdout.readline()
            lines.append(line)
            if "Ctrl-C" in line:
                return "".join(lines)
        raise AssertionError("".join(lines))

    proc = start()
    try:
        out = read_until_ready(proc)
        key = next(ln.split(": ")[-1].strip() for ln in out.splitlines() if "admin key (" in ln)
        headers = {"Authorization": f"Bearer {key}"}
        url = f"http://127.0.0.1:{port}"
        assert httpx.get(f"{url}/readyz").json()["status"] == "ok"
        ray_version = httpx.get(
            f"{env['MOEPLANE_RAY_DASHBOARD_URL']}/api/version",
            headers=Settings().ray_auth_headers(),
        )
        assert ray_version.status_code == 200
        created = httpx.post(f"{url}/v1/admin/tenants", json={"name": "t"}, headers=headers)
        assert created.status_code == 201
    finally:
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=30) == 0
    assert "stopped" in proc.stdout.read()

    # second start (against "an existing Ray", so no second local head): the key is not
    # printed again and the data is kept
    env["MOEPLANE_RAY_ADDRESS"] = "127.0.0.1:1"
    proc = start()
    try:
        out = read_until_ready(proc)
        assert "shown once" not in out
        listed = httpx.get(f"http://127.0.0.1:{port}/v1/admin/tenants", headers=headers)
        assert [t["name"] for t in listed.json()["data"]] == ["t"]
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0
