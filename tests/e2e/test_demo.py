"""`moeplane demo` end to end on the embedded default (SQLite, SQLite broker; the session's Ray
head stands in for the local one `up` would start): it must end with a streamed answer from the
fine-tuned, expert-sharded deployment."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys

import pytest

from tests.conftest import _free_port, clear_serve_apps

pytestmark = [pytest.mark.ray, pytest.mark.slow]


def test_demo_walks_the_whole_story(tmp_path, ray_head):
    port = _free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("MOEPLANE_")} | {
        "MOEPLANE_HOME": str(tmp_path / "home"),
        "MOEPLANE_RAY_ADDRESS": ray_head["address"],
        "MOEPLANE_RAY_DASHBOARD_URL": ray_head["dashboard"],
        "MOEPLANE_API_PORT": str(port),
        "MOEPLANE_API_URL": f"http://127.0.0.1:{port}",
        "MOEPLANE_SCHEDULE_INTERVAL_S": "1",
        "MOEPLANE_RECONCILE_INTERVAL_S": "1",
        "HF_HUB_OFFLINE": "1",
    }
    try:
        run = subprocess.run(
            [sys.executable, "-m", "moeplane.cli", "demo", "--timeout-s", "400"],
            env=env,
            capture_output=True,
            text=True,
            timeout=900,
        )
    finally:  # the Serve application outlives the demo's platform: free the session's Ray
        clear_serve_apps(ray_head["dashboard"])
    out = run.stdout
    assert run.returncode == 0, out[-3000:] + run.stderr[-3000:]
    assert re.search(r"fine-tuned model: ft:qwen3-moe-tiny:demo-shop:support:\S+", out), out
    assert "2 expert shards per replica" in out and "running: 1 replicas" in out
    answer = next(line for line in out.splitlines() if line.startswith("assistant> "))
    assert len(answer) > len("assistant> "), out
    usage = json.loads(out.split("usage: ", 1)[1].splitlines()[0])
    assert usage["completion_tokens"] > 0
    assert f"dashboard: http://127.0.0.1:{port}/admin" in out
