"""No drift between the settings and what compose and Kubernetes set: every MOEPLANE_* variable
they set is a setting, every setting production needs is set, the values validate, and every
`moeplane ...` command they run exists."""

from __future__ import annotations

import shlex
from typing import Any

import pytest
from typer.testing import CliRunner

from moeplane.cli import app as cli
from moeplane.config import Settings
from tests.infra._manifests import (
    OVERLAYS,
    by_kind,
    compose,
    interpolate,
    is_moeplane_image,
    pod_specs,
    render,
)

PREFIX = "MOEPLANE_"
# Unset, these fall back to the embedded pieces (SQLite, in-process limits, a local Ray on
# 127.0.0.1, files under ~): in a deployment each must be set explicitly.
NEEDED_IN_PRODUCTION = {
    "home",
    "database_url",
    "redis_url",
    "ray_address",
    "ray_dashboard_url",
    "storage_uri",
}
# what processes that talk to Ray's Jobs API, or let operators in, need besides
NEEDED_BY = {"api": {"admin_key", "ray_auth_token"}, "worker": {"ray_auth_token"}}
# placeholder values for compose's ${VAR:?...} secrets, shaped like the real ones
SECRETS = {"MOEPLANE_ADMIN_KEY": "mp-" + "x" * 40, "POSTGRES_PASSWORD": "pw", "RAY_AUTH_TOKEN": "t"}


def _required() -> set[str]:
    return NEEDED_IN_PRODUCTION | {
        name for name, field in Settings.model_fields.items() if field.is_required()
    }


def _compose_processes() -> dict[str, dict[str, str]]:
    """service -> the MOEPLANE_* environment it runs with (interpolated)."""
    out = {}
    for name, service in compose()["services"].items():
        if "moeplane" in service.get("image", ""):
            env = service.get("environment", {})
            assert isinstance(env, dict), f"{name}: use the mapping form of environment"
            out[f"compose/{name}"] = {
                k: interpolate(str(v), SECRETS) for k, v in env.items() if k.startswith(PREFIX)
            }
    return out


def _k8s_processes(target: str) -> dict[str, dict[str, str]]:
    docs = render(target)
    configmaps, secrets = by_kind(docs, "ConfigMap"), by_kind(docs, "Secret")
    out = {}
    for doc in docs:
        for where, spec in pod_specs(doc):
            for container in spec["containers"]:
                if not is_moeplane_image(container["image"]):
                    continue
                env: dict[str, Any] = {}
                for source in container.get("envFrom", []):
                    if "configMapRef" in source:
                        env |= configmaps[source["configMapRef"]["name"]]["data"]
                    if "secretRef" in source:
                        env |= secrets[source["secretRef"]["name"]].get("stringData", {})
                for var in container.get("env", []):
                    ref = var.get("valueFrom", {}).get("secretKeyRef")
                    value = secrets[ref["name"]]["stringData"][ref["key"]] if ref else var["value"]
                    env[var["name"]] = value
                out[f"{target}/{where}/{container['name']}"] = {
                    k: str(v) for k, v in env.items() if k.startswith(PREFIX)
                }
    return out


def _all_processes() -> dict[str, dict[str, str]]:
    out = _compose_processes()
    for target in OVERLAYS:
        out |= _k8s_processes(target)
    return out


def _role(where: str) -> str | None:
    """api, worker, beat or migrate from 'compose/api' or 'prod/Deployment/moeplane-api/api'."""
    role = where.rsplit("/", 1)[-1]
    return role if role in {"api", "worker", "beat", "migrate"} else None


def test_every_moeplane_variable_set_is_a_setting():
    processes = _all_processes()
    assert len(processes) >= 12
    known = {PREFIX + name.upper() for name in Settings.model_fields}
    for where, env in processes.items():
        unknown = set(env) - known
        assert unknown == set(), f"{where} sets variables no setting reads: {sorted(unknown)}"


@pytest.mark.parametrize("source", ["compose", *OVERLAYS])
def test_every_needed_setting_is_set_for_each_process(source: str):
    processes = _compose_processes() if source == "compose" else _k8s_processes(source)
    roles_seen = set()
    for where, env in processes.items():
        role = _role(where)
        if role is None:  # Ray nodes: drivers get their settings through the job's env
            continue
        roles_seen.add(role)
        needed = _required() | NEEDED_BY.get(role, set())
        missing = {PREFIX + n.upper() for n in needed} - set(env)
        assert missing == set(), f"{where} does not set {sorted(missing)}"
    assert roles_seen == {"api", "worker", "beat", "migrate"}


@pytest.mark.parametrize("source", ["compose", *OVERLAYS])
def test_values_validate_and_point_away_from_the_embedded_defaults(source: str):
    processes = _compose_processes() if source == "compose" else _k8s_processes(source)
    for where, env in processes.items():
        settings = Settings(**{k.removeprefix(PREFIX).lower(): v for k, v in env.items()})
        assert not settings.embedded, where
        assert settings.database_url.startswith("postgresql+psycopg://"), where
        assert settings.redis_url and settings.redis_url.startswith("redis://"), where
        assert "127.0.0.1" not in settings.ray_dashboard_url, where


def test_the_settings_list_drift_is_detected():
    """The checks above would notice a renamed or removed setting."""
    known = {PREFIX + name.upper() for name in Settings.model_fields}
    assert "MOEPLANE_DATABASE_URL" in known and "MOEPLANE_DATABSE_URL" not in known
    assert _required() <= set(Settings.model_fields)


def _moeplane_commands() -> set[tuple[str, ...]]:
    """Every `moeplane ...` command line compose and the manifests run, up to its options."""
    argvs: list[list[str]] = [
        s["command"] for s in compose()["services"].values() if "command" in s
    ]
    for target in ("base", *OVERLAYS):
        for doc in render(target):
            for _, spec in pod_specs(doc):
                argvs += [c["command"] for c in spec["containers"] if "command" in c]
    commands = set()
    for argv in argvs:
        if argv[:2] == ["sh", "-c"]:
            parts = [shlex.split(p) for p in argv[2].split("&&")]
        else:
            parts = [argv]
        for words in parts:
            if words and words[0] == "moeplane":
                commands.add(tuple(w for w in words[1:] if not w.startswith("-"))[:2])
    return commands


def test_every_moeplane_command_used_exists():
    commands = _moeplane_commands()
    assert {("api",), ("worker",), ("beat",), ("db", "upgrade"), ("models", "seed")} <= {
        c[:2] if c[0] in {"db", "models"} else c[:1] for c in commands
    }
    runner = CliRunner()
    for command in commands:
        words = list(command[:2] if command[0] in {"db", "models"} else command[:1])
        result = runner.invoke(cli, [*words, "--help"])
        assert result.exit_code == 0, f"moeplane {' '.join(words)}: {result.output}"
