"""The wheel only contains packages listed in pyproject (package-dir renames platform/)."""

import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_no_platform_init_shadowing_the_stdlib():
    assert not (ROOT / "platform" / "__init__.py").exists()


def test_every_subpackage_is_listed_in_pyproject():
    listed = set(
        tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"]
    )
    on_disk = {"moeplane"} | {
        "moeplane." + ".".join(init.parent.relative_to(ROOT / "platform").parts)
        for init in (ROOT / "platform").rglob("__init__.py")
    }
    assert on_disk - listed == set(), "add these to [tool.setuptools] packages"
    assert listed - on_disk == set(), "these listed packages do not exist"


def test_importing_moeplane_keeps_the_stdlib_platform_module():
    import platform

    import moeplane.api.app  # noqa: F401

    assert hasattr(platform, "python_version")
