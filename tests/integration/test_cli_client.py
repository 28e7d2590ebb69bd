"""The tenant and registry commands against a live API and a real database."""

from __future__ import annotations

import json
import os
import subprocess
import sys

from tests.factories import chat_jsonl, make_tenant


def _run(args, env, timeout=120):
    return subprocess.run(
        [sys.executable, "-m", "moeplane.cli", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def _env(settings, **extra):
    env = {k: v for k, v in os.environ.items() if not k.startswith("MOEPLANE_")}
    return (
        env
        | {
            "MOEPLANE_HOME": str(settings.home),
            "MOEPLANE_DATABASE_URL": settings.database_url,
            "MOEPLANE_STORAGE_URI": settings.storage_uri,
        }
        | extra
    )


def test_files_and_jobs_commands(app, settings, database, catalog, live_server_factory, tmp_path):
    server = live_server_factory(app)
    tenant = make_tenant(database)
    env = _env(settings, MOEPLANE_API_URL=server.url, MOEPLANE_API_KEY=tenant.key)
    data = tmp_path / "train.jsonl"
    data.write_bytes(chat_jsonl(4))
    uploaded = _run(["files", "upload", str(data)], env)
    assert uploaded.returncode == 0, uploaded.stderr
    file_id = uploaded.stdout.strip()
    assert file_id.startswith("file-")
    assert file_id in _run(["files", "list"], env).stdout

    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"messages": []}\n')
    refused = _run(["files", "upload", str(bad)], env)
    assert refused.returncode == 1 and "line 1" in refused.stderr

    created = _run(
        [
            "jobs",
            "create",
            "--model",
            "qwen3-moe-tiny",
            "--training-file",
            file_id,
            "--suffix",
            "cli",
            "--epochs",
            "1",
        ],
        env,
    )
    assert created.returncode == 0, created.stderr
    job_id = created.stdout.strip()
    assert job_id in _run(["jobs", "list"], env).stdout
    shown = json.loads(_run(["jobs", "show", job_id], env).stdout)
    assert shown["user_provided_suffix"] == "cli" and shown["hyperparameters"]["n_epochs"] == 1
    assert _run(["jobs", "cancel", job_id], env).stdout.strip() == "cancelled"
    followed = _run(["jobs", "follow", job_id, "--interval", "0.2"], env)
    assert followed.returncode == 1 and "cancelled" in followed.stderr

    unknown = _run(["jobs", "create", "--model", "nope", "--training-file", file_id], env)
    assert unknown.returncode == 1 and "(model)" in unknown.stderr
    no_key = _run(["jobs", "list"], _env(settings, MOEPLANE_API_URL=server.url))
    assert no_key.returncode == 2 and "MOEPLANE_API_KEY" in no_key.stderr


def test_models_import_validates_and_registers(settings, database, base_checkpoints, tmp_path):
    env = _env(settings)
    imported = _run(
        ["models", "import", str(base_checkpoints["qwen3-tiny"]), "--name", "my-qwen3"], env
    )
    assert imported.returncode == 0, imported.stderr
    assert "my-qwen3 version 1" in imported.stdout and '"family": "qwen3"' in imported.stdout
    again = _run(
        ["models", "import", str(base_checkpoints["qwen3-tiny"]), "--name", "my-qwen3"], env
    )
    assert "my-qwen3 version 2" in again.stdout  # versions are appended, never replaced

    empty = tmp_path / "empty"
    empty.mkdir()
    refused = _run(["models", "import", str(empty), "--name", "broken"], env)
    assert refused.returncode == 1 and "config.json" in refused.stderr


def test_deploy_commands(app, settings, database, catalog, live_server_factory):
    server = live_server_factory(app)
    tenant = make_tenant(database)
    env = _env(settings, MOEPLANE_API_URL=server.url, MOEPLANE_API_KEY=tenant.key)
    create = ["deploy", "create", "bot", "--model", "qwen3-moe-tiny", "--expert-shards", "2"]
    created = _run([*create, "--packed-weights", "off"], env)
    assert created.returncode == 0, created.stderr
    dep_id = created.stdout.strip()
    assert dep_id.startswith("dep-")
    listed = _run(["deploy", "list"], env).stdout
    assert dep_id in listed and "pending" in listed and "S=2" in listed
    shown = json.loads(_run(["deploy", "show", dep_id], env).stdout)
    assert shown["expert_shards"] == 2 and shown["experts"]["counts"] == []
    assert shown["resources"]["packed_weights"] == "off"
    scaled = _run(["deploy", "scale", dep_id, "--max-replicas", "2"], env)
    assert scaled.returncode == 0 and "generation 2" in scaled.stdout
    refused = _run(
        ["deploy", "create", "odd", "--model", "qwen3-moe-tiny", "--expert-shards", "3"], env
    )
    assert refused.returncode == 1 and "(expert_shards)" in refused.stderr
    bad = ["deploy", "create", "odd", "--model", "qwen3-moe-tiny", "--packed-weights", "yes"]
    refused = _run(bad, env)
    assert refused.returncode == 1 and "(resources.packed_weights)" in refused.stderr
    assert _run(["deploy", "delete", dep_id], env).stdout.strip() == "deleting"
    # chat against a deployment that is not running: a clear error, not a hang
    chat = subprocess.run(
        [sys.executable, "-m", "moeplane.cli", "chat", "bot"],
        env=env,
        input="hello\n",
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert chat.returncode == 1 and "503" in chat.stderr, chat.stderr
