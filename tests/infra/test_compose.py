"""infra/compose.yaml: valid against the Compose Specification (check-jsonschema's vendored
schema), and the stack the deployment guide promises: healthchecks, volumes, start order."""

from __future__ import annotations

import copy
import json
import subprocess
from importlib import resources

import jsonschema
import pytest

from tests.infra._manifests import INFRA, ROOT, compose, interpolation_names, tool

MOEPLANE_SERVICES = {"migrate", "ray-head", "ray-worker", "api", "worker", "beat"}


def _compose_schema() -> dict:
    vendor = resources.files("check_jsonschema.builtin_schemas.vendor")
    return json.loads((vendor / "compose-spec.json").read_text())


def test_compose_file_matches_the_compose_specification():
    result = subprocess.run(
        [
            tool("check-jsonschema"),
            "--builtin-schema",
            "vendor.compose-spec",
            str(INFRA / "compose.yaml"),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_schema_check_catches_a_misspelt_key():
    broken = copy.deepcopy(compose())
    broken["services"]["api"]["healthcheck"]["intervall"] = "5s"
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(broken, _compose_schema())


def test_services_of_the_stack_with_healthchecks():
    services = compose()["services"]
    assert {"postgres", "redis", "proxy"} | MOEPLANE_SERVICES <= set(services)
    for name, service in services.items():
        if name != "migrate":  # a one-shot job: its exit status is its health
            assert service.get("healthcheck", {}).get("test"), f"{name} has no healthcheck"
    assert services["api"]["deploy"]["replicas"] == 2
    assert services["api"]["command"][:2] == ["moeplane", "api"]
    assert services["worker"]["command"][:2] == ["moeplane", "worker"]
    assert services["beat"]["command"] == ["moeplane", "beat"]
    assert "moeplane db upgrade" in " ".join(services["migrate"]["command"])
    assert services["ray-head"]["command"][:3] == ["ray", "start", "--head"]
    assert any(a.startswith("--address=ray-head:") for a in services["ray-worker"]["command"])


def test_moeplane_services_build_the_image_and_start_after_migrations():
    services = compose()["services"]
    for name in MOEPLANE_SERVICES:
        build = services[name]["build"]
        assert (INFRA / build["context"] / build["dockerfile"]).resolve() == (
            ROOT / "infra" / "docker" / "Dockerfile"
        )
    for name in ("api", "worker", "beat"):
        depends = services[name]["depends_on"]
        assert depends["migrate"]["condition"] == "service_completed_successfully", name
        assert depends["redis"]["condition"] == "service_healthy", name
    assert services["migrate"]["depends_on"]["postgres"]["condition"] == "service_healthy"


def test_state_lives_in_named_volumes():
    doc = compose()
    services, volumes = doc["services"], set(doc["volumes"])
    for service in services.values():
        for mount in service.get("volumes", []):
            source = mount.split(":", 1)[0]
            assert source in volumes, f"{source} is not a declared volume"
    assert any(m.startswith("pgdata:") for m in services["postgres"]["volumes"])
    assert any(m.startswith("redisdata:") for m in services["redis"]["volumes"])
    # datasets and checkpoints: the API writes them, the worker and every Ray node read them
    for name in ("api", "worker", "ray-head", "ray-worker", "migrate"):
        assert "storage:/var/lib/moeplane/storage" in services[name]["volumes"], name


def test_every_variable_compose_needs_is_in_the_example_env_file():
    needed = interpolation_names((INFRA / "compose.yaml").read_text())
    example = {
        line.split("=", 1)[0]
        for line in (INFRA / "compose.env.example").read_text().splitlines()
        if "=" in line and not line.startswith("#")
    }
    assert needed - example == set()
